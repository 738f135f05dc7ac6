"""POST /v1/messages: Anthropic's Messages API (the `anthropic` client, Claude-style tools and
frameworks): `system`, content blocks, `max_tokens`, `stop_sequences`, streamed with Anthropic's
event types or not. It becomes the same chat request as /v1/chat/completions; errors keep
Anthropic's shape (the gate reshapes them for this route), and the key may come as `x-api-key`."""
from __future__ import annotations

import json
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from pydantic import BeforeValidator, Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.chat import answer_in_shape, read_answer
from deploy.api.protocol import Messages, ModelName, Stop, StrictModel, joined_text, sampling
from deploy.api.streaming import Notes, answer_blocks, new_id
from deploy.api.tool_fields import (MAX_TOOLS, ArgumentsSchema, CallId, Description, ToolName, named_results,
                                    tool_use)
from deploy.api.tool_format import Tool, ToolCall, ToolUse
from deploy.api.workers import Workers
from deploy.wire.fields import MaxTokens, Temperature, Text, TopK, TopP
from deploy.wire.frames import cached_tokens
from deploy.wire.generation import Sampling

router = APIRouter()


NOT_TEXT = {"image": "the models of this deployment take text only",
            "document": "the models of this deployment take text only"}


def _text(v: Any) -> Any:
    """Content as a string or text blocks, joined; images and documents refused by name."""
    return joined_text(v, ("text",), NOT_TEXT, "send text blocks")


class TextBlock(StrictModel):
    type: Literal["text"]
    text: Text


class ToolUseBlock(StrictModel):
    """An earlier tool call of the assistant."""
    type: Literal["tool_use"]
    id: CallId
    name: ToolName
    input: dict

    def call(self) -> ToolCall:
        return ToolCall(self.name, self.input, self.id)


class ToolResultBlock(StrictModel):
    """A tool's result, in a user message."""
    type: Literal["tool_result"]
    tool_use_id: CallId
    content: Annotated[str, BeforeValidator(_text)] = ""
    is_error: bool = False


BLOCKS = {"text": TextBlock, "tool_use": ToolUseBlock, "tool_result": ToolResultBlock}


def _block(v: Any) -> Any:
    kind = v.get("type") if isinstance(v, dict) else None
    if kind in NOT_TEXT:
        raise PydanticCustomError("unsupported_content", "holds a '{kind}' block: {why}. Fix: send text blocks",
                                  {"kind": kind, "why": NOT_TEXT[kind]})
    if kind not in BLOCKS:
        raise PydanticCustomError("content", "blocks must be objects with a type of text, tool_use or tool_result")
    return BLOCKS[kind].model_validate(v)


def _blocks(v: Any) -> Any:
    if isinstance(v, str):
        return [{"type": "text", "text": v}]
    if not isinstance(v, list):
        raise PydanticCustomError("content", "must be a string or an array of content blocks")
    return v


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, BeforeValidator(_block)]


class Message(StrictModel):
    role: Literal["user", "assistant"]
    content: Annotated[list[Block], BeforeValidator(_blocks)]

    @model_validator(mode="after")
    def _blocks_fit_the_role(self):
        wrong = ToolResultBlock if self.role == "assistant" else ToolUseBlock
        if any(isinstance(b, wrong) for b in self.content):
            raise PydanticCustomError("content", "tool_use blocks go in assistant messages, tool_result blocks in "
                                                 "user messages")
        return self

    def turns(self) -> list[dict]:
        """This message as chat turns: its tool results, then its text; or its text and calls."""
        text = "\n".join(b.text for b in self.content if isinstance(b, TextBlock))
        if self.role == "assistant":
            calls = [b.call() for b in self.content if isinstance(b, ToolUseBlock)]
            return [{"role": "assistant", "content": text or None, "tool_calls": calls} if calls else
                    {"role": "assistant", "content": text}]
        results = [{"role": "tool", "call_id": b.tool_use_id,
                    "content": ("Error: " if b.is_error else "") + b.content}
                   for b in self.content if isinstance(b, ToolResultBlock)]
        return results + ([{"role": "user", "content": text}] if text or not results else [])


class AnthropicTool(StrictModel):
    name: ToolName
    description: Description = ""
    input_schema: ArgumentsSchema
    type: Literal["custom"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind(cls, data):
        kind = data.get("type") if isinstance(data, dict) else None
        if kind not in (None, "custom"):  # a server tool (web_search_...): said before its missing fields
            raise PydanticCustomError("tool_type", "is a '{v}' tool, which this server does not run. Fix: send tools "
                                                   "with a name, description and input_schema", {"v": kind})
        return data


class AnthropicToolChoice(StrictModel):
    type: Literal["auto", "any", "tool", "none"]
    name: ToolName | None = None
    disable_parallel_tool_use: bool = False

    @model_validator(mode="after")
    def _name(self):
        if (self.type == "tool") != (self.name is not None):
            raise PydanticCustomError("tool_choice", "{\"type\": \"tool\"} needs the tool's 'name', and only it "
                                                     "has one")
        return self

    @property
    def choice(self) -> str:
        return {"auto": "auto", "any": "required", "none": "none"}.get(self.type) or self.name


class MessagesRequest(StrictModel):
    _tool_use: ToolUse | None = PrivateAttr(default=None)
    model: ModelName
    max_tokens: MaxTokens
    messages: Annotated[list[Message], Messages]
    system: Annotated[str, BeforeValidator(_text)] | None = None
    stop_sequences: Stop = Field(default_factory=list)
    temperature: Annotated[Temperature, Field(le=1)] | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stream: bool = False
    tools: Annotated[list[AnthropicTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: AnthropicToolChoice | None = None
    metadata: dict | None = None

    @model_validator(mode="after")
    def _starts_with_the_user(self):
        if self.messages[0].role != "user":
            raise PydanticCustomError("messages", "'messages' must start with a user message")
        if self.tools:
            choice = self.tool_choice or AnthropicToolChoice(type="auto")
            self._tool_use = tool_use([Tool(t.name, t.description, t.input_schema) for t in self.tools], choice.choice,
                                      not choice.disable_parallel_tool_use)
            named_results(self._turns())
        elif self.tool_choice is not None or any(not isinstance(b, TextBlock) for m in self.messages
                                                 for b in m.content):
            raise PydanticCustomError("tools", "'tool_choice', tool_use and tool_result blocks need 'tools'. Fix: send "
                                               "the tools the conversation uses")
        return self

    def tool_use(self) -> ToolUse | None:
        return self._tool_use

    def _turns(self) -> list[dict]:
        return [t for m in self.messages for t in m.turns()]

    def chat_messages(self) -> list[dict]:
        turns = named_results(self._turns()) if self.tools else self._turns()
        return ([{"role": "system", "content": self.system}] if self.system else []) + turns

    def sampling(self) -> Sampling:
        return sampling(max_new_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, stop=list(self.stop_sequences))


def stop_reason(frame: dict, calls=()) -> str:
    """Anthropic's stop_reason for a worker's last frame. FastChat's frames do not say whether a
    stop sequence or the model ended it, so stop_sequence stays null."""
    if calls:
        return "tool_use"
    return "max_tokens" if frame.get("finish_reason") == "length" else "end_turn"


def _usage(frame: dict) -> dict:
    """Anthropic counts prompt tokens read from a cache apart from input_tokens."""
    u = frame.get("usage") or {}
    cached = cached_tokens(u) or 0
    return {"input_tokens": int(u.get("prompt_tokens") or 0) - cached, "output_tokens": int(u.get("completion_tokens") or 0),
            "cache_read_input_tokens": cached}


def _tool_use_block(c: ToolCall, given: dict | None = None) -> dict:
    return {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments if given is None else given}


def _message(mid: str, body: MessagesRequest, content: list, frame: dict, calls=()) -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "model": body.model, "content": content,
            "stop_reason": stop_reason(frame, calls) if frame else None, "stop_sequence": None, "usage": _usage(frame)}


async def _events(workers: Workers, addr: str, params: dict, body: MessagesRequest, notes: Notes) -> AsyncIterator[str]:
    """Anthropic's event stream: a text block that opens with the first text, then one tool_use
    block per call, its input as one input_json_delta."""
    def event(kind: str, **data) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"

    mid = new_id("msg")
    yield event("message_start", message=_message(mid, body, [], {}))
    yield event("ping")
    calls, frame, opened = [], {}, False
    async for kind, x in answer_blocks(workers.stream(addr, params), body.model, body.tool_use()):
        if kind == "failed":
            yield event("error", error={"type": "api_error", "message": x.message})
            return
        if kind == "open":
            yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        elif kind == "text":
            yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": x})
        else:
            calls, frame, opened = x
    notes.completion_tokens = _usage(frame)["output_tokens"]
    if opened:
        yield event("content_block_stop", index=0)
    for k, c in enumerate(calls, start=int(opened)):
        yield event("content_block_start", index=k, content_block=_tool_use_block(c, {}))
        yield event("content_block_delta", index=k,
                    delta={"type": "input_json_delta", "partial_json": c.arguments_json})
        yield event("content_block_stop", index=k)
    yield event("message_delta", delta={"stop_reason": stop_reason(frame, calls), "stop_sequence": None},
                usage={"output_tokens": _usage(frame)["output_tokens"]})
    yield event("message_stop")


def _whole(body: MessagesRequest, frame: dict) -> dict:
    text, calls = read_answer(frame["text"], body.tool_use())
    content = ([{"type": "text", "text": text}] if text is not None else []) + [_tool_use_block(c) for c in calls]
    return _message(new_id("msg"), body, content, frame, calls)


@router.post("/v1/messages")
async def create_message(body: MessagesRequest, request: Request):
    return await answer_in_shape(
        request, body.model, body.chat_messages(), body.sampling(), body.stream,
        lambda workers, addr, params, notes: _events(workers, addr, params, body, notes),
        lambda frame: _whole(body, frame), body.tool_use())
