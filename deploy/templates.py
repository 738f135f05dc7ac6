"""Chat templates: the names `model_paths.toml` may use, and our additions.

FastChat ships `qwen-7b-chat`, `chatglm3` and `deepseek-chat`. Qwen2.5 and
SmolLM2 speak ChatML with their own system prompts, which FastChat 0.2.36
does not know; we register them through FastChat's public
`register_conv_template`, so the worker hands the API server and the web UI
exactly the template configured for the model.
"""
from __future__ import annotations

from fastchat.conversation import (
    Conversation,
    SeparatorStyle,
    conv_templates,
    get_conv_template,
    register_conv_template,
)

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


def conversation_for(name: str) -> Conversation:
    """A fresh copy of a configured template; refuses unknown names."""
    if name not in conv_templates:
        raise ValueError(
            f"unknown chat template '{name}'. Fix: set chat_template in model_paths.toml to one of "
            f"the names listed by `python -m deploy templates` (qwen2.5, smollm2, qwen-7b-chat, chatglm3, deepseek-chat, ...)."
        )
    return get_conv_template(name)


def conversation_from_dict(d: dict) -> Conversation:
    """Rebuild the Conversation a worker sent over HTTP (same fields as FastChat's API server uses)."""
    return Conversation(
        name=d["name"],
        system_template=d["system_template"],
        system_message=d["system_message"],
        roles=tuple(d["roles"]),
        messages=[list(m) for m in d.get("messages", [])],
        offset=d.get("offset", 0),
        sep_style=SeparatorStyle(d["sep_style"]),
        sep=d["sep"],
        sep2=d.get("sep2"),
        stop_str=d.get("stop_str"),
        stop_token_ids=d.get("stop_token_ids"),
    )
