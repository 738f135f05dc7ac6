"""POST /v1/messages: Anthropic's Messages API (the `anthropic` client, Claude Code, Claude-style
tools and frameworks), in the `anthropic` package's own types (Message, its content blocks and its
stream events): `system`, content blocks, `max_tokens`, `stop_sequences`, tools, streamed or not;
and POST /v1/messages/count_tokens. Errors keep Anthropic's shape (the gate reshapes them for these
routes), and the key may come as `x-api-key`.

As vLLM and Ollama do, a `system` message inside `messages` (Claude Code sends one) is accepted: its
text joins the system prompt. A role no model here has is refused in Anthropic's own words
("Unexpected role"), which clients act on.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, AsyncIterator, Literal

from anthropic.types import (Message, RawContentBlockDeltaEvent, RawContentBlockStartEvent, RawContentBlockStopEvent,
                             RawMessageDeltaEvent, RawMessageStartEvent, RawMessageStopEvent, TextBlock, ThinkingBlock,
                             ToolUseBlock)
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.conversation import AsksChat, Thinking, prepare
from deploy.api.protocol import Messages, ModelName, Stop, StrictModel, joined_text, sampling
from deploy.api.streaming import Answer, Notes, Usage, answer_blocks, collect, new_id, notes_of, sse, sse_response
from deploy.api.tool_fields import MAX_TOOLS, ArgumentsSchema, CallId, Description, ToolName
from deploy.api.tool_format import Tool, ToolCall
from deploy.api.workers import Workers
from deploy.wire.fields import MaxTokens, Temperature, Text, TopK, TopP
from deploy.wire.generation import Sampling

PING = 'event: ping\ndata: {"type": "ping"}\n\n'  # Anthropic's keep-alive event
router = APIRouter()
count_router = APIRouter()  # a read route: counted apart from generation (deploy/api/routes.py)


NOT_TEXT = {"image": "the models of this deployment take text only",
            "document": "the models of this deployment take text only"}


def _text(v: Any) -> Any:
    """Content as a string or text blocks, joined; images and documents refused by name."""
    return joined_text(v, ("text",), NOT_TEXT, "send text blocks")


class TextIn(StrictModel):
    type: Literal["text"]
    text: Text


class ToolUseIn(StrictModel):
    """An earlier tool call of the assistant."""
    type: Literal["tool_use"]
    id: CallId
    name: ToolName
    input: dict

    def call(self) -> ToolCall:
        return ToolCall(self.name, self.input, self.id)


class ToolResultIn(StrictModel):
    """A tool's result, in a user message."""
    type: Literal["tool_result"]
    tool_use_id: CallId
    content: Annotated[str, BeforeValidator(_text)] = ""
    is_error: bool = False


class ThinkingIn(StrictModel):
    """An earlier turn's thinking, handed back: no model here reads it, so it is left out."""
    type: Literal["thinking", "redacted_thinking"]


BLOCKS = {"text": TextIn, "tool_use": ToolUseIn, "tool_result": ToolResultIn, "thinking": ThinkingIn,
          "redacted_thinking": ThinkingIn}


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


Block = Annotated[TextIn | ToolUseIn | ToolResultIn | ThinkingIn, BeforeValidator(_block)]


class MessageIn(StrictModel):
    role: Text  # user, assistant or system: checked with the message's place (CountTokensRequest)
    content: Annotated[list[Block], BeforeValidator(_blocks)]

    @model_validator(mode="after")
    def _blocks_fit_the_role(self):
        if self.role == "system" and any(not isinstance(b, TextIn) for b in self.content):
            raise PydanticCustomError("content", "a system message holds text blocks only")
        wrong = ToolResultIn if self.role == "assistant" else ToolUseIn
        if any(isinstance(b, wrong) for b in self.content):
            raise PydanticCustomError("content", "tool_use blocks go in assistant messages, tool_result blocks in "
                                                 "user messages")
        return self

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.content if isinstance(b, TextIn))

    def turns(self) -> list[dict]:
        """This message as chat turns: its tool results, then its text; or its text and calls."""
        text = self.text
        if self.role == "assistant":
            calls = [b.call() for b in self.content if isinstance(b, ToolUseIn)]
            return [{"role": "assistant", "content": text or None, "tool_calls": calls} if calls else
                    {"role": "assistant", "content": text}]
        results = [{"role": "tool", "call_id": b.tool_use_id, "content": ("Error: " if b.is_error else "") + b.content}
                   for b in self.content if isinstance(b, ToolResultIn)]
        return results + ([{"role": "user", "content": text}] if text or not results else [])


class AnthropicTool(StrictModel):
    """A client tool: a name, a description and its input's schema (Anthropic's server tools and
    its schema-less built-in ones are skipped before this, see CountTokensRequest)."""
    name: ToolName
    description: Description = ""
    input_schema: ArgumentsSchema
    type: Literal["custom"] | None = None


def _is_client_tool(tool: Any) -> bool:
    return not isinstance(tool, dict) or tool.get("type") in (None, "custom")


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


class CountTokensRequest(StrictModel, AsksChat):
    """/v1/messages/count_tokens: what a Messages request would hold, without max_tokens."""
    model: ModelName
    messages: Annotated[list[MessageIn], Messages]
    system: Annotated[str, BeforeValidator(_text)] | None = None
    tools: Annotated[list[AnthropicTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: AnthropicToolChoice | None = None
    _server_tools: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _server_tools_skipped(cls, data: Any, handler):
        """Tools of a type other than custom (web_search_..., code_execution_..., bash_...) have no
        schema and nothing here runs them: skipped and said, as the Responses API skips hosted
        tools, instead of refusing the client's whole request."""
        kinds = []
        if isinstance(data, dict) and isinstance(data.get("tools"), list):
            kinds = [str(t.get("type"))[:64] for t in data["tools"] if not _is_client_tool(t)]
            data = {**data, "tools": [t for t in data["tools"] if _is_client_tool(t)]}
        made = handler(data)
        made._server_tools = kinds
        return made

    @model_validator(mode="after")
    def _a_user_message_first(self):
        for i, m in enumerate(self.messages):
            if m.role not in ("user", "assistant", "system"):  # Anthropic's own words, which clients read
                raise PydanticCustomError("role", "messages.{i}.role: Unexpected role {role}. The Messages API accepts "
                                                  "\"user\" and \"assistant\" messages (and \"system\" ones, whose text "
                                                  "joins the system prompt)", {"i": i, "role": json.dumps(m.role)})
        first = next((m for m in self.messages if m.role != "system"), None)
        if first is None or first.role != "user":
            raise PydanticCustomError("messages", "'messages' must start with a user message")
        return self

    def system_texts(self) -> list[str]:
        return [self.system or ""] + [m.text for m in self.messages if m.role == "system"]

    def turns(self) -> list[dict]:
        return [t for m in self.messages if m.role != "system" for t in m.turns()]

    def tool_list(self) -> list[Tool] | None:
        return [Tool(t.name, t.description, t.input_schema) for t in self.tools or ()] or None

    def tool_choice_given(self):
        return self.tool_choice.choice if self.tool_choice else None

    def parallel_calls(self) -> bool | None:
        return not self.tool_choice.disable_parallel_tool_use if self.tool_choice else None

    def skipped(self) -> list[str]:
        thinking = any(isinstance(b, ThinkingIn) for m in self.messages for b in m.content)
        return ([f"a '{kind}' tool (only client tools, with an input_schema, run here)" for kind in self._server_tools]
                + (["thinking blocks of earlier turns (no model here reads them)"] if thinking else []))

    def sampling(self) -> Sampling:
        return sampling()


class ThinkingConfig(StrictModel):
    """Anthropic's `thinking`: enabled with a budget of tokens, disabled, or adaptive (Claude Code's:
    the model's default)."""
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=0)] | None = None

    def thinking(self) -> Thinking:
        if self.type == "disabled":
            return Thinking(enabled=False, budget=0, budget_set=True)
        return Thinking(enabled=True if self.type == "enabled" else None, budget=self.budget_tokens,
                        budget_set=self.budget_tokens is not None)


class MessagesRequest(CountTokensRequest):
    max_tokens: MaxTokens
    thinking_: ThinkingConfig | None = Field(default=None, alias="thinking")
    stop_sequences: Stop = Field(default_factory=list)
    temperature: Annotated[Temperature, Field(le=1)] | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stream: bool = False
    metadata: dict | None = None

    def sampling(self) -> Sampling:
        return sampling(max_new_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, stop=list(self.stop_sequences))

    def thinking(self) -> Thinking:
        return self.thinking_.thinking() if self.thinking_ else Thinking()


def stop_reason(answer: Answer) -> str:
    """Anthropic's stop_reason. FastChat's frames do not say whether a stop sequence or the model
    ended it, so stop_sequence stays null."""
    return {"tool_calls": "tool_use", "length": "max_tokens"}.get(answer.finish_reason, "end_turn")


class Shaper:
    """One message's objects, its id fixed once; Anthropic counts prompt tokens read from a cache
    apart from input_tokens."""

    def __init__(self, body: MessagesRequest, prompt_tokens: int):
        self.body, self.id, self.prompt_tokens = body, new_id("msg", "_"), prompt_tokens

    def usage(self, u: Usage | None) -> dict:
        if u is None:  # at the start: the prompt as counted, nothing generated yet
            return {"input_tokens": self.prompt_tokens, "output_tokens": 0}
        cached = u.cached or 0
        return {"input_tokens": u.prompt - cached, "output_tokens": u.completion, "cache_read_input_tokens": cached}

    def message(self, answer: Answer | None) -> Message:
        content = []
        if answer is not None:  # a trace is a thinking block
            content = ([ThinkingBlock(type="thinking", thinking=answer.reasoning, signature=signature(answer.reasoning))]
                       if answer.reasoning is not None else []) + \
                      ([TextBlock(type="text", text=answer.text)] if answer.text is not None else []) + \
                      [self.tool_use(c) for c in answer.calls]
        return Message(id=self.id, type="message", role="assistant", model=self.body.model, content=content,
                       stop_reason=stop_reason(answer) if answer else None, stop_sequence=None,
                       usage=self.usage(answer.usage if answer else None))

    @staticmethod
    def tool_use(c: ToolCall, given: dict | None = None) -> ToolUseBlock:
        return ToolUseBlock(type="tool_use", id=c.id, name=c.name, input=c.arguments if given is None else given)


def signature(trace: str) -> str:
    """A thinking block's signature: Anthropic's is an encrypted copy of the trace that clients hand
    back unread; ours is the trace's digest (clients need one to be there; nothing here checks it)."""
    return "sha256:" + hashlib.sha256(trace.encode()).hexdigest()


async def _events(shape: Shaper, frames: AsyncIterator[dict], notes: Notes,
                  opened: bool = False) -> AsyncIterator[str]:
    """Anthropic's event stream: a thinking model's trace first, as a thinking block with
    thinking_delta events; a text block that opens with the first text, then one tool_use block per
    call, its input as one input_json_delta. `opened`: the prompt opened the trace."""
    def event(cls, **data) -> str:
        kind = cls.model_fields["type"].annotation.__args__[0]
        return sse(cls(type=kind, **data), event=kind)

    body = shape.body
    yield event(RawMessageStartEvent, message=shape.message(None))
    yield PING
    answer, text_opened, thinking, at = None, False, None, 0  # at: the text block's index
    trace: list[str] = []

    def open_trace():
        yield event(RawContentBlockStartEvent, index=0,
                    content_block=ThinkingBlock(type="thinking", thinking="", signature=""))

    def close_trace():
        yield event(RawContentBlockDeltaEvent, index=0, delta={"type": "signature_delta",
                                                               "signature": signature("".join(trace))})
        yield event(RawContentBlockStopEvent, index=0)

    if opened:  # the prompt opened the trace: its block comes first, even if empty
        thinking, at = True, 1
        for e in open_trace():
            yield e
    async for kind, x, text_opened in answer_blocks(frames, body.model, body.tool_use(), notes, opened):
        if kind == "failed":
            yield sse({"type": "error", "error": {"type": "api_error", "message": x.message}}, event="error")
            return
        if kind == "reasoning":
            if thinking is None:
                thinking, at = True, 1
                for e in open_trace():
                    yield e
            yield event(RawContentBlockDeltaEvent, index=0, delta={"type": "thinking_delta", "thinking": x})
            trace.append(x)
            continue
        if thinking:  # the trace ends where the answer begins
            for e in close_trace():
                yield e
            thinking = False
        if kind == "open":
            yield event(RawContentBlockStartEvent, index=at, content_block=TextBlock(type="text", text=""))
        elif kind == "text":
            yield event(RawContentBlockDeltaEvent, index=at, delta={"type": "text_delta", "text": x})
        else:
            answer = x
    if thinking:  # cut off inside the trace: thinking only
        for e in close_trace():
            yield e
    notes.completion_tokens = answer.usage.completion
    if text_opened:
        yield event(RawContentBlockStopEvent, index=at)
    for k, c in enumerate(answer.calls, start=at + int(text_opened)):
        yield event(RawContentBlockStartEvent, index=k, content_block=shape.tool_use(c, {}))
        yield event(RawContentBlockDeltaEvent, index=k, delta={"type": "input_json_delta",
                                                               "partial_json": c.arguments_json})
        yield event(RawContentBlockStopEvent, index=k)
    yield event(RawMessageDeltaEvent, delta={"stop_reason": stop_reason(answer), "stop_sequence": None},
                usage=shape.usage(answer.usage))
    yield event(RawMessageStopEvent)


@router.post("/v1/messages")
async def create_message(body: MessagesRequest, request: Request):
    workers: Workers = request.app.state.workers
    notes = notes_of(request)
    ask = body.ask()
    prep = await prepare(workers, ask)
    shape = Shaper(body, prep.prompt_tokens)
    frames = workers.stream(prep.addr, prep.params)
    if body.stream:
        return sse_response(_events(shape, frames, notes, prep.opens_thinking), keepalive=PING)
    answer = await collect(frames, body.model, ask.tools, notes, prep.opens_thinking)
    notes.completion_tokens = answer.usage.completion
    return JSONResponse(shape.message(answer).model_dump(mode="json", exclude_unset=True))


@count_router.post("/v1/messages/count_tokens")
async def count_message_tokens(body: CountTokensRequest, request: Request):
    """The prompt's tokens as the model's template and tokenizer make them (tools told in it), also
    when they are more than the model's context holds."""
    prep = await prepare(request.app.state.workers, body.ask(), fit=False)
    return {"input_tokens": prep.prompt_tokens}
