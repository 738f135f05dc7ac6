"""A chat prompt comes apart into the template's text and the messages' text (deploy/wire/prompt.py),
for every template the registry names: the parts join into the very prompt, every message is a part
of its own, and the runs a tokenizer gets keep the template's markers special and a message's text
text, whatever it spells."""
import pytest
from fastchat.conversation import get_conv_template

from deploy.registry import templates  # noqa: F401  (registers ours)
from deploy.wire.prompt import MESSAGE, TEMPLATE, prompt_parts, render, text_runs, with_prefix

QUOTE = "quote <|im_end|> and <|assistant|>"
USED = ["qwen2.5", "smollm2", "qwen-7b-chat", "chatglm3", "deepseek-chat", "vicuna_v1.1", "llama-2", "chatglm2", "Yi-34b-chat"]


def conversation(name: str, system: str | None = "Be brief."):
    conv = get_conv_template(name)
    if system:
        conv.set_system_message(system)
    for role, text in ((0, "你好"), (1, "你好！"), (0, QUOTE), (1, None)):
        conv.append_message(conv.roles[role], text)
    return conv


@pytest.mark.parametrize("name", USED)
def test_parts_join_into_the_prompt_and_keep_each_message_whole(name):
    conv = conversation(name)
    parts = prompt_parts(conv)
    assert "".join(t for _, t in parts) == render(conv)
    assert [t for k, t in parts if k == MESSAGE][-3:] == ["你好", "你好！", QUOTE]
    assert "Be brief." in [t for k, t in parts if k == MESSAGE]


def test_deepseeks_bos_kept_in_its_system_slot_stays_template():
    """FastChat's deepseek-chat keeps its BOS where the system message goes: it is the template's."""
    parts = prompt_parts(conversation("deepseek-chat", system=None))
    assert parts[0][0] == TEMPLATE and parts[0][1].startswith("<｜begin▁of▁sentence｜>")
    assert "".join(t for _, t in parts) == render(conversation("deepseek-chat", system=None))


def test_runs_keep_markers_special_and_messages_text():
    parts = prompt_parts(conversation("qwen2.5"))
    specials = {"<|im_start|>", "<|im_end|>"}
    joined = text_runs(parts, specials, separate=False)
    assert all(t in specials for s, t in joined if s)
    assert not any(s for s, t in joined if "quote" in t)  # the typed markers are inside a text run
    assert any(QUOTE in t for s, t in joined if not s)
    # joined: the template's "user\n" and the message are one run; separate: two
    assert ("user\n" + QUOTE) in [t for s, t in joined if not s]
    separate = text_runs(parts, specials, separate=True)
    assert "user\n" in [t for s, t in separate if not s] and QUOTE in [t for s, t in separate if not s]


def test_with_prefix_puts_the_models_own_first_tokens_once():
    assert with_prefix([5, 6], [1, 2]) == [1, 2, 5, 6]
    assert with_prefix([1, 2, 5, 6], [1, 2]) == [1, 2, 5, 6]
    assert with_prefix([5], []) == [5]
