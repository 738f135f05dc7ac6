"""POST /v1/messages: Anthropic's Messages API (the `anthropic` client, Claude-style tools and
frameworks): `system`, content blocks, `max_tokens`, `stop_sequences`, streamed with Anthropic's
event types or not. It becomes the same chat request as /v1/chat/completions; errors keep
Anthropic's shape (the gate reshapes them for this route), and the key may come as `x-api-key`."""
from __future__ import annotations

import json
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.chat import answer_in_shape
from deploy.api.protocol import Messages, ModelName, Stop, StrictModel, joined_text, refused, sampling
from deploy.api.streaming import Notes, StreamFailed, new_id, text_deltas
from deploy.api.workers import Workers
from deploy.wire.fields import MaxTokens, Temperature, TopK, TopP
from deploy.wire.frames import cached_tokens
from deploy.wire.generation import Sampling

router = APIRouter()


NOT_TEXT = {"image": "the models of this deployment take text only",
            "document": "the models of this deployment take text only",
            "tool_use": "tool use is not supported by this deployment",
            "tool_result": "tool use is not supported by this deployment"}


def _blocks(v: Any) -> Any:
    """Content as a string or blocks: text blocks joined; images, documents and tools refused by name."""
    return joined_text(v, ("text",), NOT_TEXT, "send text blocks")


class Message(StrictModel):
    role: Literal["user", "assistant"]
    content: Annotated[str, BeforeValidator(_blocks)]


class MessagesRequest(StrictModel):
    model: ModelName
    max_tokens: MaxTokens
    messages: Annotated[list[Message], Messages]
    system: Annotated[str, BeforeValidator(_blocks)] | None = None
    stop_sequences: Stop = Field(default_factory=list)
    temperature: Annotated[Temperature, Field(le=1)] | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stream: bool = False
    tools: Annotated[Any, refused("'tools'", "Fix: leave them out.")] = None
    metadata: dict | None = None

    @model_validator(mode="after")
    def _starts_with_the_user(self):
        if self.messages[0].role != "user":
            raise PydanticCustomError("messages", "'messages' must start with a user message")
        return self

    def chat_messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": m.role, "content": m.content} for m in self.messages]

    def sampling(self) -> Sampling:
        return sampling(max_new_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, stop=list(self.stop_sequences))


def stop_reason(frame: dict) -> str:
    """Anthropic's stop_reason for a worker's last frame. FastChat's frames do not say whether a
    stop sequence or the model ended it, so stop_sequence stays null."""
    return "max_tokens" if frame.get("finish_reason") == "length" else "end_turn"


def _usage(frame: dict) -> dict:
    """Anthropic counts prompt tokens read from a cache apart from input_tokens."""
    u = frame.get("usage") or {}
    cached = cached_tokens(u) or 0
    return {"input_tokens": int(u.get("prompt_tokens") or 0) - cached, "output_tokens": int(u.get("completion_tokens") or 0),
            "cache_read_input_tokens": cached}


def _message(mid: str, body: MessagesRequest, text: list, frame: dict) -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "model": body.model, "content": text,
            "stop_reason": stop_reason(frame) if frame else None, "stop_sequence": None, "usage": _usage(frame)}


async def _events(workers: Workers, addr: str, params: dict, body: MessagesRequest, notes: Notes) -> AsyncIterator[str]:
    def event(kind: str, **data) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"

    mid = new_id("msg")
    yield event("message_start", message=_message(mid, body, [], {}))
    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    yield event("ping")
    frame = {}
    try:
        async for delta, frame in text_deltas(workers.stream(addr, params), body.model):
            if delta:
                yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": delta})
    except StreamFailed as f:
        err = json.loads(f.event[6:])["error"]
        yield event("error", error={"type": "api_error", "message": err["message"]})
        return
    notes.completion_tokens = _usage(frame)["output_tokens"]
    yield event("content_block_stop", index=0)
    yield event("message_delta", delta={"stop_reason": stop_reason(frame), "stop_sequence": None},
                usage={"output_tokens": _usage(frame)["output_tokens"]})
    yield event("message_stop")


@router.post("/v1/messages")
async def create_message(body: MessagesRequest, request: Request):
    return await answer_in_shape(
        request, body.model, body.chat_messages(), body.sampling(), body.stream,
        lambda workers, addr, params, notes: _events(workers, addr, params, body, notes),
        lambda frame: _message(new_id("msg"), body, [{"type": "text", "text": frame["text"]}], frame))
