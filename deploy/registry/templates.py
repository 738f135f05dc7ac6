"""Chat templates: the names `model_paths.toml` may use, and our additions.

FastChat ships `qwen-7b-chat`, `chatglm3` and `deepseek-chat`. Qwen2.5 and
SmolLM2 speak ChatML with their own system prompts, which FastChat 0.2.36
does not know; we register them through FastChat's public
`register_conv_template`, so the worker hands the API server and the web UI
exactly the template configured for the model.
"""
from __future__ import annotations

from fastchat.conversation import Conversation, SeparatorStyle, conv_templates, register_conv_template


def _chatml(name: str, system_message: str, stop_token_ids: list[int]) -> Conversation:
    return Conversation(
        name=name,
        system_template="<|im_start|>system\n{system_message}",
        system_message=system_message,
        roles=("<|im_start|>user", "<|im_start|>assistant"),
        sep_style=SeparatorStyle.CHATML,
        sep="<|im_end|>",
        stop_token_ids=stop_token_ids,
        stop_str="<|im_end|>",
    )


# chat_template = "auto": the template the model ships (a GGUF's tokenizer.chat_template, a folder's
# tokenizer_config.json), rendered by the worker as the peers render it (llama.cpp's jinja, transformers'
# apply_chat_template). This entry only names it: it holds no prompt format of its own, and no stop
# strings (the model's own end-of-turn tokens end its answers).
AUTO = "auto"

OUR_TEMPLATES = [
    # stop ids: <|endoftext|>, <|im_start|>, <|im_end|> in each model's vocabulary
    _chatml("qwen2.5", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", [151643, 151644, 151645]),
    _chatml("smollm2", "You are a helpful AI assistant named SmolLM, trained by Hugging Face", [0, 1, 2]),
    Conversation(name=AUTO, system_template="{system_message}", roles=("user", "assistant"),
                 sep_style=SeparatorStyle.ADD_COLON_SINGLE, sep="\n"),
]

for _conv in OUR_TEMPLATES:
    if _conv.name not in conv_templates:
        register_conv_template(_conv)


def known_templates() -> set[str]:
    return set(conv_templates)


def template_in_use(entry) -> str:
    """Which template builds an entry's prompts, in a few words for `status` and `templates`."""
    if entry.chat_template != AUTO:
        return entry.chat_template
    shipped = entry.options.shipped_template(entry)
    if shipped is None:
        return "auto (its server's)"
    if not shipped:
        return "auto: NONE SHIPPED"
    return "auto (its own" + (", thinks)" if "</think>" in shipped else ")")


# ---- prompts FastChat's separator styles cannot express exactly ---------------------------------
DEEPSEEK_BOS, DEEPSEEK_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


def _deepseek_llm_chat(system: str, messages: list) -> str:
    """DeepSeek-LLM-Chat's own chat template (its tokenizer_config.json): BOS, then the system
    message followed by a blank line, 'User: ...\\n\\n', 'Assistant: ...<EOS>', and 'Assistant:'.
    FastChat's deepseek-chat drops the blank line after a system message (and the BOS with it)."""
    out = DEEPSEEK_BOS + (system + "\n\n" if system and system != DEEPSEEK_BOS else "")
    for i, (_, text) in enumerate(messages):
        if i % 2 == 0:
            out += f"User: {text}\n\n"
        else:
            out += "Assistant:" + (f" {text}{DEEPSEEK_EOS}" if text is not None else "")
    return out


EXACT_PROMPTS = {"deepseek-chat": _deepseek_llm_chat}


def exact_prompt(conv: Conversation) -> str | None:
    """The model's own prompt for `conv` where FastChat's template is not byte-exact; else None."""
    render = EXACT_PROMPTS.get(conv.name)
    return render(conv.system_message, conv.messages[conv.offset:]) if render else None


# ---- the special tokens a model's own chat code puts first ------------------------------------
# ChatGLM3's tokenizer puts [gMASK] and sop before every input (build_inputs_with_special_tokens)
# and FastChat's chatglm3 template leaves them out; DeepSeek-LLM's chat template writes the BOS
# that its tokenizer also adds. Each backend's tokenizer adds its own share (a GGUF of ChatGLM3
# adds nothing: llama.cpp's converter writes add_bos_token = false), so the text a worker hands
# its tokenizer depends on both; text_for_tokenizer makes the tokens begin with the prefix once.
MODEL_PREFIX = {"chatglm3": "[gMASK]sop", "deepseek-chat": DEEPSEEK_BOS}


def text_for_tokenizer(prompt: str, template: str, added: str) -> str:
    """`prompt` (a chat prompt, or raw completion text) as the text to give a tokenizer that itself
    puts `added` (the text of the special tokens it adds) first, so that the tokens begin with
    the model's own prefix exactly once: neither missing nor doubled."""
    prefix = MODEL_PREFIX.get(template, "")
    body = prompt.removeprefix(prefix) if prefix else prompt
    body = body.removeprefix(added) if added else body
    return prefix.removeprefix(added) + body


# ---- how the model's own chat code tokenises ---------------------------------------------------
# Qwen-7B-Chat's make_context encodes the role, "\n" and each message's text apart
# (tokenizer.encode(content, allowed_special=set())), and ChatGLM3's build_chat_input encodes the
# role's line and each message apart, each with SentencePiece's leading "▁": tokenising their
# prompt whole gives other ids. Templates rendered whole by their model (a chat_template) are
# tokenised whole: the text between two special tokens is one piece (deploy/wire/prompt.py).
SEPARATELY_ENCODED = frozenset({"qwen-7b-chat", "chatglm3"})


# ---- tool results ------------------------------------------------------------------------------
# The turn a template's model reads tool results in, where it has one of its own: ChatGLM3's chat
# code puts them in an <|observation|> turn (and stops generating at that token). Other templates
# take them as a user turn that names the tool (deploy/api/tool_format.py).
TOOL_RESULT_ROLES = {"chatglm3": "<|observation|>"}
