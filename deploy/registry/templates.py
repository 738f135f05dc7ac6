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


OUR_TEMPLATES = [
    # stop ids: <|endoftext|>, <|im_start|>, <|im_end|> in each model's vocabulary
    _chatml("qwen2.5", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", [151643, 151644, 151645]),
    _chatml("smollm2", "You are a helpful AI assistant named SmolLM, trained by Hugging Face", [0, 1, 2]),
]

for _conv in OUR_TEMPLATES:
    if _conv.name not in conv_templates:
        register_conv_template(_conv)


def known_templates() -> set[str]:
    return set(conv_templates)


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
