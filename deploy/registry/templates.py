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
