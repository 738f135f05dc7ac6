"""The prompts our workers get for the seed models are byte for byte what each model's own chat code
builds, for a two-turn conversation with a system prompt, through both doors (the API server and
the web UI, which share deploy/wire/generation.py's chat_params). The references are transcribed from the models' published code:
Qwen-7B-Chat's qwen_generation_utils.make_context, ChatGLM3-6B's tokenization_chatglm
build_chat_input, and DeepSeek-LLM-7B-Chat's chat template (tokenizer_config.json, rendered here
with Jinja as transformers' apply_chat_template does)."""
import pytest
from fastchat.conversation import get_conv_template

from deploy.registry import templates  # noqa: F401  (registers ours)
from deploy.wire.generation import Sampling, chat_params

SYSTEM = "你是一个简洁的助手。"
TURNS = [("明明明明明白白白喜欢他，谁喜欢谁？", "白白喜欢明明。"), ("为什么？", None)]


def qwen_make_context(system: str, history: list, query: str) -> str:
    """make_context(..., chat_format="chatml") raw_text, from Qwen-7B-Chat's qwen_generation_utils.py."""
    im_start, im_end = "<|im_start|>", "<|im_end|>"
    raw_text = ""
    for turn_query, turn_response in reversed(history):
        raw_text = f"\n{im_start}user\n{turn_query}{im_end}\n{im_start}assistant\n{turn_response}{im_end}" + raw_text
    raw_text = f"{im_start}system\n{system}{im_end}" + raw_text
    raw_text += f"\n{im_start}user\n{query}{im_end}\n{im_start}assistant\n"
    return raw_text


def chatglm3_build_chat_input(system: str, history: list, query: str) -> str:
    """build_chat_input's token sequence as text, from ChatGLM3-6B's tokenization_chatglm.py:
    [gMASK] sop (prefix tokens), then per message <|role|> + encode(f"{metadata}\\n") + encode(content),
    then <|assistant|>."""
    out = "[gMASK]sop"
    msgs = [("system", system)] + [m for q, a in history for m in (("user", q), ("assistant", a))] + [("user", query)]
    for role, content in msgs:
        out += f"<|{role}|>" + "\n" + content
    return out + "<|assistant|>"


DEEPSEEK_CHAT_TEMPLATE = (  # deepseek-ai/deepseek-llm-7b-chat tokenizer_config.json "chat_template"
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ 'Assistant:' }}{% endif %}")


def deepseek_apply_chat_template(messages: list[dict]) -> str:
    import jinja2

    return jinja2.Environment().from_string(DEEPSEEK_CHAT_TEMPLATE).render(
        messages=messages, bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>",
        add_generation_prompt=True)


def openai_messages(system: str | None) -> list[dict]:
    out = [{"role": "system", "content": system}] if system else []
    for q, a in TURNS:
        out.append({"role": "user", "content": q})
        if a is not None:
            out.append({"role": "assistant", "content": a})
    return out


def web_ui_prompt(template: str, system: str | None) -> str:
    """What the web UI sends: chat_params on the worker's conversation."""
    conv = get_conv_template(template)
    if system:
        conv.set_system_message(system)
    for q, a in TURNS:
        conv.append_message(conv.roles[0], q)
        conv.append_message(conv.roles[1], a)
    return chat_params("m", conv, Sampling())["prompt"]


def api_prompt(monkeypatch, template: str, system: str | None) -> str:
    """What the API server sends: the request's messages on the worker's conversation template."""
    from fastapi.encoders import jsonable_encoder

    from deploy.api.protocol import ChatCompletionRequest
    from deploy.wire.generation import conversation_from_messages

    conv_dict = jsonable_encoder(get_conv_template(template))  # what the worker serves
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": openai_messages(system)})
    return chat_params("m", conversation_from_messages(conv_dict, req.ask().messages()), req.sampling())["prompt"]


def test_qwen_7b_chat_is_make_context(monkeypatch):
    ref = qwen_make_context(SYSTEM, [TURNS[0]], TURNS[1][0])
    assert web_ui_prompt("qwen-7b-chat", SYSTEM) == ref
    assert api_prompt(monkeypatch, "qwen-7b-chat", SYSTEM) == ref
    # no system message: Qwen's chat() default
    assert web_ui_prompt("qwen-7b-chat", None) == qwen_make_context("You are a helpful assistant.", [TURNS[0]],
                                                                    TURNS[1][0])
    conv = get_conv_template("qwen-7b-chat")  # stops: <|endoftext|>, and chat()'s stop words <|im_end|>, <|im_start|>
    assert set(conv.stop_token_ids) == {151643, 151645, 151644}


def test_chatglm3_is_build_chat_input(monkeypatch):
    ref = chatglm3_build_chat_input(SYSTEM, [TURNS[0]], TURNS[1][0])
    # [gMASK] and sop are the tokenizer's prefix tokens (build_inputs_with_special_tokens): the
    # template builds the rest, byte for byte; each worker adds the prefix where its tokenizer does
    # not (tests/test_seed_tokens.py)
    assert ref.startswith("[gMASK]sop")
    assert web_ui_prompt("chatglm3", SYSTEM) == ref.removeprefix("[gMASK]sop")
    assert api_prompt(monkeypatch, "chatglm3", SYSTEM) == ref.removeprefix("[gMASK]sop")
    conv = get_conv_template("chatglm3")  # chat(): eos, <|user|>, <|observation|>
    assert set(conv.stop_token_ids) == {2, 64795, 64797}


@pytest.mark.parametrize("system", [SYSTEM, None])
def test_deepseek_llm_chat_is_its_chat_template(monkeypatch, system):
    ref = deepseek_apply_chat_template(openai_messages(system))
    assert web_ui_prompt("deepseek-chat", system) == ref
    assert api_prompt(monkeypatch, "deepseek-chat", system) == ref
    assert get_conv_template("deepseek-chat").stop_str == "<｜end▁of▁sentence｜>"  # its eos_token


def test_fastchats_own_deepseek_template_was_not_exact():
    """Why deploy/registry/templates.py renders DeepSeek itself: FastChat drops the BOS and the
    blank line after a system message. If this starts failing, FastChat fixed it."""
    conv = get_conv_template("deepseek-chat")
    conv.set_system_message(SYSTEM)
    conv.append_message(conv.roles[0], "hi")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() != deepseek_apply_chat_template([{"role": "system", "content": SYSTEM},
                                                              {"role": "user", "content": "hi"}])
