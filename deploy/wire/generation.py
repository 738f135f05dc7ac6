"""Worker requests built one way for every door (the API's chat and completion routes, the web
UI): a conversation from the worker's own template, the prompt in the model's own format, its stop
strings and stop token ids, and the sampling settings, with the keys FastChat's workers read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploy.registry.templates import TOOL_RESULT_ROLES
from deploy.wire.prompt import prompt_parts, render


@dataclass
class Sampling:
    """What a request asks of generation; the defaults are FastChat's API server's."""
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None       # top alternatives per token (0: only the chosen token's)
    json_schema: dict | None = None   # response_format: the answer must match it
    grammar: str | None = None        # llama.cpp's GBNF: the answer must match it
    echo: bool = False


def conversation_from_dict(d: dict):
    """The Conversation a worker sent (/worker_get_conv_template)."""
    from fastchat.conversation import Conversation, SeparatorStyle

    return Conversation(
        name=d["name"], system_template=d["system_template"], system_message=d["system_message"],
        roles=tuple(d["roles"]), messages=[list(m) for m in d.get("messages", [])], offset=d.get("offset", 0),
        sep_style=SeparatorStyle(d["sep_style"]), sep=d["sep"], sep2=d.get("sep2"), stop_str=d.get("stop_str"),
        stop_token_ids=d.get("stop_token_ids"),
    )


def conversation_from_messages(conv_dict: dict, messages: list[dict]):
    """The worker's conversation with OpenAI-style messages ({role, content} with text content,
    system first) appended, and the empty assistant turn at the end. A "tool" turn (tool results)
    goes in the template's own tool-result role (deploy/api/tool_format.py writes the others')."""
    conv = conversation_from_dict(conv_dict)
    roles = {"user": conv.roles[0], "assistant": conv.roles[1], "tool": TOOL_RESULT_ROLES.get(conv.name)}
    for m in messages:
        if m["role"] == "system":
            conv.set_system_message(m["content"])
        else:
            conv.append_message(roles[m["role"]], m["content"])
    conv.append_message(conv.roles[1], None)
    return conv


def messages_of(conv) -> list[dict]:
    """A conversation as OpenAI-style messages (a system message first, if it has one), up to its
    last, empty, assistant turn: what a model's own template renders (chat_template = "auto")."""
    out = [{"role": "system", "content": conv.system_message}] if conv.system_message else []
    for i, (_, text) in enumerate(conv.messages[conv.offset:]):
        if text is not None:
            out.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return out


def worker_params(model: str, prompt: str, conv, s: Sampling) -> dict[str, Any]:
    """A worker request for `prompt`, with the stop strings and stop token ids of `conv`, the
    worker's conversation template (a completion's raw prompt stops where a chat turn would)."""
    stops = set(s.stop)
    if conv.stop_str:
        stops.update([conv.stop_str] if isinstance(conv.stop_str, str) else conv.stop_str)
    params = {"model": model, "prompt": prompt, "temperature": s.temperature, "logprobs": s.logprobs,
              "top_p": s.top_p, "top_k": s.top_k, "presence_penalty": s.presence_penalty,
              "frequency_penalty": s.frequency_penalty, "max_new_tokens": s.max_new_tokens, "echo": s.echo,
              "stop_token_ids": conv.stop_token_ids, "stop": sorted(stops)}
    for name in ("seed", "json_schema", "grammar", "repetition_penalty"):
        if getattr(s, name) is not None:
            params[name] = getattr(s, name)
    return params


def chat_params(model: str, conv, s: Sampling) -> dict[str, Any]:
    """A worker request for `conv`, whose last message is the empty assistant turn: its prompt, and
    the prompt's parts, so the worker tokenises the messages' text as text (deploy/wire/prompt.py)."""
    return {**worker_params(model, render(conv), conv, s), "prompt_parts": prompt_parts(conv)}
