"""POST /v1/responses: OpenAI's Responses API, stateless (no stored responses): `input` as a string
or as items (messages with text parts), `instructions`, `max_output_tokens`, streamed with the
Responses event types or not. It becomes the same chat request as /v1/chat/completions (one
conversation in the model's own template) and its answer is given back as Responses output items."""
from __future__ import annotations

import json
import time
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.chat import answer_in_shape
from deploy.api.protocol import ModelName, StrictModel, joined_text, refused, sampling
from deploy.api.streaming import Notes, StreamFailed, new_id, text_deltas
from deploy.api.workers import Workers
from deploy.wire.fields import MaxTokens, Temperature, TopP
from deploy.wire.frames import cached_tokens
from deploy.wire.generation import Sampling

router = APIRouter()
TEXT_PARTS = ("input_text", "output_text", "text")


NOT_TEXT = {kind: "the models of this deployment take text only" for kind in ("input_image", "input_file",
                                                                                "input_audio")}


def _text_of(content: Any) -> str:
    return joined_text(content, TEXT_PARTS, NOT_TEXT, "send input_text parts")


class InputItem(StrictModel):
    """A message of the conversation (the Responses API's `message` items, `type` optional)."""
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Annotated[str, BeforeValidator(_text_of)]

    @field_validator("type", mode="before")
    @classmethod
    def _kind(cls, v):
        if v not in (None, "message"):
            raise PydanticCustomError("unsupported_parameter", "'{v}' items are not supported by this deployment. "
                                                               "Fix: send message items", {"v": v})
        return v or "message"


def _input(v: Any) -> Any:
    if isinstance(v, str):
        return [{"role": "user", "content": v}]
    if not isinstance(v, list) or not v:
        raise PydanticCustomError("input", "must be a string or a non-empty array of input items")
    return v


class ResponsesRequest(StrictModel):
    model: ModelName
    input: Annotated[list[InputItem], BeforeValidator(_input)]
    instructions: Annotated[str, Field(max_length=1 << 20)] | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool = False
    tools: Annotated[Any, refused("'tools' on /v1/responses", "Fix: leave them out.")] = None
    previous_response_id: Annotated[Any, refused("'previous_response_id' (stored responses)",
                                                 "This server keeps no responses. Fix: send the whole "
                                                 "conversation in 'input'.")] = None

    @model_validator(mode="after")
    def _a_user_message(self):
        if not any(i.role == "user" for i in self.input):
            raise PydanticCustomError("input", "'input' has no user message. Fix: add one")
        return self

    def chat_messages(self) -> list[dict]:
        """The conversation for the model's template: one system prompt first, then the turns."""
        system = [self.instructions] if self.instructions else []
        system += [i.content for i in self.input if i.role in ("system", "developer")]
        turns = [{"role": i.role, "content": i.content} for i in self.input if i.role in ("user", "assistant")]
        return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + turns

    def sampling(self) -> Sampling:
        return sampling(max_new_tokens=self.max_output_tokens, temperature=self.temperature, top_p=self.top_p)


def _response(body: ResponsesRequest, rid: str, status: str, text: str | None, usage: dict | None,
              finish: str | None = None) -> dict:
    """A Response object in OpenAI's shape."""
    output = [] if text is None else [{
        "type": "message", "id": rid.replace("resp_", "msg_"), "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": body.model,
            "output": output, "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": False, "text": {"format": {"type": "text"}}, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
            "metadata": {}, "usage": usage}


def _usage(frame: dict) -> dict:
    u = frame.get("usage") or {}
    i, o = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": cached_tokens(u) or 0}, "output_tokens_details": {"reasoning_tokens": 0}}


async def _events(workers: Workers, addr: str, params: dict, body: ResponsesRequest, notes: Notes) -> AsyncIterator[str]:
    """The Responses API's event stream for one answer."""
    rid, seq = new_id("resp"), 0
    item = rid.replace("resp_", "msg_")

    def event(kind: str, **data) -> str:
        nonlocal seq
        seq += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **data}, ensure_ascii=False)}\n\n"

    yield event("response.created", response=_response(body, rid, "in_progress", None, None))
    yield event("response.in_progress", response=_response(body, rid, "in_progress", None, None))
    yield event("response.output_item.added", output_index=0, item={
        "type": "message", "id": item, "status": "in_progress", "role": "assistant", "content": []})
    yield event("response.content_part.added", item_id=item, output_index=0, content_index=0,
                part={"type": "output_text", "text": "", "annotations": []})
    text, frame = "", {}
    try:
        async for delta, frame in text_deltas(workers.stream(addr, params), body.model):
            if delta:
                text += delta
                yield event("response.output_text.delta", item_id=item, output_index=0, content_index=0, delta=delta,
                            logprobs=[])
    except StreamFailed as f:
        err = json.loads(f.event[6:])["error"]
        yield event("error", code=str(err.get("code")), message=err["message"], param=None)
        return
    notes.completion_tokens = (frame.get("usage") or {}).get("completion_tokens", 0)
    yield event("response.output_text.done", item_id=item, output_index=0, content_index=0, text=text, logprobs=[])
    part = {"type": "output_text", "text": text, "annotations": []}
    yield event("response.content_part.done", item_id=item, output_index=0, content_index=0, part=part)
    yield event("response.output_item.done", output_index=0, item={
        "type": "message", "id": item, "status": "completed", "role": "assistant", "content": [part]})
    yield event("response.completed", response=_response(body, rid, "completed", text, _usage(frame),
                                                         frame.get("finish_reason")))


@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, request: Request):
    return await answer_in_shape(
        request, body.model, body.chat_messages(), body.sampling(), body.stream,
        lambda workers, addr, params, notes: _events(workers, addr, params, body, notes),
        lambda frame: _response(body, new_id("resp"), "completed", frame["text"], _usage(frame),
                                frame.get("finish_reason")))
