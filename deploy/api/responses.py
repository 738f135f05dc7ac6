"""POST /v1/responses: OpenAI's Responses API, stateless (no stored responses), in the `openai`
package's own types (Response, its output items and its stream events), so ids (resp_, msg_, fc_),
timestamps and usage keep OpenAI's shapes: `input` as a string or as items (messages with text
parts, earlier function calls and their outputs), `instructions`, `max_output_tokens`,
`text.format` (JSON output), function tools, streamed with the Responses events or not.

As vLLM and Ollama do, a `namespace` tool's functions are offered as functions (a call names its
namespace again), and what no model here runs is skipped and said in the log, as llama.cpp skips it:
hosted tools (web_search, file_search, ...), custom tools, and the reasoning items of earlier turns.
"""
from __future__ import annotations

import time
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from openai.types.responses import (Response, ResponseCompletedEvent, ResponseContentPartAddedEvent,
                                    ResponseContentPartDoneEvent, ResponseCreatedEvent, ResponseErrorEvent,
                                    ResponseFunctionCallArgumentsDeltaEvent, ResponseFunctionCallArgumentsDoneEvent,
                                    ResponseFunctionToolCall, ResponseIncompleteEvent, ResponseInProgressEvent,
                                    ResponseOutputItemAddedEvent, ResponseOutputItemDoneEvent, ResponseOutputMessage,
                                    ResponseOutputText, ResponseReasoningItem, ResponseReasoningTextDeltaEvent,
                                    ResponseReasoningTextDoneEvent, ResponseTextDeltaEvent, ResponseTextDoneEvent)
from pydantic import BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from deploy.api.conversation import AsksChat, Thinking, effort, prepare
from deploy.api.protocol import FunctionCall, ModelName, ResponseFormat, StrictModel, joined_text, refused, sampling
from deploy.api.streaming import Answer, Notes, answer_blocks, collect, new_id, notes_of, sse, sse_response
from deploy.api.tool_fields import MAX_TOOLS, ArgumentsSchema, CallId, Description, ToolName
from deploy.api.tool_format import Tool, ToolCall
from deploy.api.workers import Workers
from deploy.wire.fields import MaxTokens, Temperature, Text, TopP
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


class FunctionCallItem(StrictModel):
    """An earlier call of a tool (as this API's output gave it)."""
    type: Literal["function_call"]
    call_id: CallId
    name: ToolName
    arguments: Text
    namespace: str | None = None

    def call(self) -> ToolCall:
        return FunctionCall(name=self.name, arguments=self.arguments).call(self.call_id)


class FunctionCallOutputItem(StrictModel):
    """A tool's result, for the call of the same call_id."""
    type: Literal["function_call_output"]
    call_id: CallId
    output: Annotated[str, BeforeValidator(_text_of)]


class ReasoningItem(StrictModel):
    """An earlier turn's reasoning (clients hand it back): no model here reads it; skipped."""
    type: Literal["reasoning"]


ITEMS = {"message": InputItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem,
         "reasoning": ReasoningItem}


def _item(v: Any) -> Any:
    kind = v.get("type") or "message" if isinstance(v, dict) else None
    if kind not in ITEMS:
        raise PydanticCustomError("unsupported_parameter", "'{v}' items are not supported by this deployment. Fix: "
                                                           "send message, function_call and function_call_output "
                                                           "items", {"v": kind})
    return ITEMS[kind].model_validate(v)


Item = Annotated[InputItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem, BeforeValidator(_item)]


class FunctionTool(StrictModel):
    type: Literal["function"]
    name: ToolName
    description: Description | None = None
    parameters: ArgumentsSchema = None
    strict: bool | None = None
    namespace: str | None = Field(default=None, exclude=True)  # the namespace tool it came in, if any

    def tool(self) -> Tool:
        return Tool(self.name, self.description or "", self.parameters)


class NamespaceTool(StrictModel):
    """Functions grouped under a name (Codex CLI sends its sub-agent tools so)."""
    type: Literal["namespace"]
    name: ToolName
    description: Description = ""
    tools: list[dict] = Field(default_factory=list)


class NamedFunction(StrictModel):
    type: Literal["function"]
    name: ToolName


def _input(v: Any) -> Any:
    if isinstance(v, str):
        return [{"role": "user", "content": v}]
    if not isinstance(v, list) or not v:
        raise PydanticCustomError("input", "must be a string or a non-empty array of input items")
    return v


class TextFormat(StrictModel):
    """`text.format`: text, or JSON held to a schema (response_format of chat completions)."""
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema_: dict | None = Field(default=None, alias="schema")

    def response_format(self) -> ResponseFormat:
        return ResponseFormat(type=self.type, json_schema={"schema": self.schema_ or {}}
                              if self.type == "json_schema" else None)


class TextConfig(StrictModel):
    format: TextFormat | None = None


class ReasoningConfig(StrictModel):
    """`reasoning`: effort ("none" turns thinking off; the rest bound the trace); the summary a
    client asks for is not made (the trace itself is given)."""
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesRequest(StrictModel, AsksChat):
    model: ModelName
    input: Annotated[list[Item], BeforeValidator(_input)]
    instructions: Annotated[str, Field(max_length=1 << 20)] | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool = False
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    tools: Annotated[list[dict], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: Annotated[Any, refused("'previous_response_id' (stored responses)",
                                                 "This server keeps no responses. Fix: send the whole "
                                                 "conversation in 'input'.")] = None

    def _tools(self) -> tuple[list[FunctionTool], list[str]]:
        """(the function tools, a namespace's functions flattened into them; what is skipped)."""
        functions, skipped = [], []
        for t in self.tools or ():
            kind = t.get("type") if isinstance(t, dict) else None
            if kind == "function":
                functions.append(FunctionTool.model_validate(t))
            elif kind == "namespace":
                ns = NamespaceTool.model_validate(t)
                for f in ns.tools:
                    if isinstance(f, dict) and f.get("type") == "function":
                        functions.append(FunctionTool.model_validate({**f, "namespace": ns.name}))
                    else:
                        skipped.append(f"a {f.get('type') if isinstance(f, dict) else f!r} tool in namespace {ns.name!r}")
            elif isinstance(kind, str):
                skipped.append(f"a '{kind}' tool (only function tools run here)")
            else:
                raise PydanticCustomError("tool_type", "every tool needs a 'type' (function)")
        return functions, skipped

    def skipped(self) -> list[str]:
        return self._tools()[1] + (["reasoning items of earlier turns (no model here reads them)"]
                                   if any(isinstance(i, ReasoningItem) for i in self.input) else [])

    @field_validator("input")
    @classmethod
    def _a_user_message(cls, v):
        if not any(isinstance(i, InputItem) and i.role == "user" for i in v):
            raise PydanticCustomError("input", "'input' has no user message. Fix: add one")
        return v

    def functions(self) -> list[FunctionTool]:
        return self._tools()[0]

    def namespace_of(self, name: str) -> str | None:
        return next((t.namespace for t in self.functions() if t.name == name), None)

    # ---- what AsksChat reads
    def system_texts(self) -> list[str]:
        return [self.instructions or ""] + [i.content for i in self.input
                                            if isinstance(i, InputItem) and i.role in ("system", "developer")]

    def turns(self) -> list[dict]:
        out: list[dict] = []
        for i in self.input:
            if isinstance(i, FunctionCallItem):
                if out and out[-1].get("tool_calls"):  # calls side by side are one assistant turn
                    out[-1]["tool_calls"].append(i.call())
                else:
                    out.append({"role": "assistant", "content": None, "tool_calls": [i.call()]})
            elif isinstance(i, FunctionCallOutputItem):
                out.append({"role": "tool", "call_id": i.call_id, "content": i.output})
            elif isinstance(i, InputItem) and i.role in ("user", "assistant"):
                out.append({"role": i.role, "content": i.content})
        return out

    def tool_list(self) -> list[Tool] | None:
        return [t.tool() for t in self.functions()] or None

    def tool_choice_given(self):
        return self.tool_choice.name if isinstance(self.tool_choice, NamedFunction) else self.tool_choice

    def parallel_calls(self) -> bool | None:
        return self.parallel_tool_calls

    @property
    def needs(self) -> set[str]:
        return {"json"} if self.json_schema() is not None else set()

    def thinking(self) -> Thinking:
        return effort(self.reasoning.effort if self.reasoning else None)

    def json_schema(self) -> dict | None:
        return self.text.format.response_format().schema_for_worker() if self.text and self.text.format else None

    def sampling(self) -> Sampling:
        return sampling(max_new_tokens=self.max_output_tokens, temperature=self.temperature, top_p=self.top_p,
                        json_schema=self.json_schema())


class Shaper:
    """One response's objects, its id and creation time fixed once: OpenAI's ids, its items."""

    def __init__(self, body: ResponsesRequest):
        self.body = body
        self.id, self.created_at = new_id("resp", "_"), time.time()
        self.message_id, self.reasoning_id = new_id("msg", "_"), new_id("rs", "_")

    def reasoning(self, text: str, status: str = "completed") -> ResponseReasoningItem:
        """The trace, as a reasoning item (its text given, no summary made)."""
        return ResponseReasoningItem(type="reasoning", id=self.reasoning_id, summary=[], status=status,
                                     content=[{"type": "reasoning_text", "text": text}] if status == "completed" else [])

    def message(self, text: str, status: str = "completed") -> ResponseOutputMessage:
        content = [ResponseOutputText(type="output_text", text=text, annotations=[])] if status == "completed" else []
        return ResponseOutputMessage(type="message", id=self.message_id, status=status, role="assistant",
                                     content=content)

    def call(self, c: ToolCall, status: str = "completed", arguments: str | None = None) -> ResponseFunctionToolCall:
        ns = self.body.namespace_of(c.name)
        return ResponseFunctionToolCall(type="function_call", id="fc_" + c.id.removeprefix("call_"), call_id=c.id,
                                        name=c.name, arguments=c.arguments_json if arguments is None else arguments,
                                        status=status, **({"namespace": ns} if ns else {}))

    def response(self, answer: Answer | None) -> Response:
        """The Response: in progress (no answer yet), completed, or incomplete (max_output_tokens)."""
        b = self.body
        output = []
        if answer is not None:
            output = ([self.reasoning(answer.reasoning)] if answer.reasoning is not None else []) + \
                     ([self.message(answer.text)] if answer.text is not None else []) + \
                     [self.call(c) for c in answer.calls]
        cut = answer is not None and answer.finish_reason == "length"
        status = "in_progress" if answer is None else "incomplete" if cut else "completed"
        choice = b.tool_choice.model_dump() if isinstance(b.tool_choice, NamedFunction) else b.tool_choice or "auto"
        tools = b.tool_use()
        return Response(
            id=self.id, object="response", created_at=self.created_at, status=status, model=b.model, output=output,
            instructions=b.instructions, max_output_tokens=b.max_output_tokens, temperature=b.temperature,
            top_p=b.top_p, tools=[t.model_dump(exclude_none=True) for t in b.functions()], tool_choice=choice,
            parallel_tool_calls=tools.parallel if tools else True, text={"format": {"type": "text"}}, error=None,
            incomplete_details={"reason": "max_output_tokens"} if cut else None, metadata={},
            usage=self.usage(answer) if answer is not None else None)

    @staticmethod
    def usage(answer: Answer) -> dict:
        u = answer.usage
        return {"input_tokens": u.prompt, "output_tokens": u.completion, "total_tokens": u.prompt + u.completion,
                "input_tokens_details": {"cached_tokens": u.cached or 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": u.reasoning or 0}}


async def _events(shape: Shaper, frames: AsyncIterator[dict], notes: Notes,
                  opened: bool = False) -> AsyncIterator[str]:
    """The Responses API's event stream for one answer: a thinking model's trace first, as a
    reasoning item with its reasoning_text events; the message item opens with its first text; tool
    calls come as function_call items, each whole. `opened`: the prompt opened the trace."""
    seq = 0

    def event(cls, **data) -> str:
        nonlocal seq
        seq += 1
        kind = cls.model_fields["type"].annotation.__args__[0]
        return sse(cls(type=kind, sequence_number=seq, **data), event=kind)

    item, body = shape.message_id, shape.body
    yield event(ResponseCreatedEvent, response=shape.response(None))
    yield event(ResponseInProgressEvent, response=shape.response(None))
    text, answer, text_opened, trace, thinking = "", None, False, None, opened
    at = 0  # the message's output index: after the reasoning item, if there is one

    def close_trace():
        yield event(ResponseReasoningTextDoneEvent, item_id=shape.reasoning_id, output_index=0, content_index=0,
                    text=trace)
        yield event(ResponseOutputItemDoneEvent, output_index=0, item=shape.reasoning(trace))

    if thinking:  # the prompt opened the trace: it comes first, even if empty
        trace, at = "", 1
        yield event(ResponseOutputItemAddedEvent, output_index=0, item=shape.reasoning("", "in_progress"))
    async for kind, x, text_opened in answer_blocks(frames, body.model, body.tool_use(), notes, opened):
        if kind == "failed":
            yield event(ResponseErrorEvent, code="tool_call_invalid" if x.kind == "tool_call_invalid" else
                        "worker_error", message=x.message, param=None)
            return
        if kind == "reasoning":
            if trace is None:
                trace, at = "", 1
                yield event(ResponseOutputItemAddedEvent, output_index=0, item=shape.reasoning("", "in_progress"))
            trace += x
            yield event(ResponseReasoningTextDeltaEvent, item_id=shape.reasoning_id, output_index=0, content_index=0,
                        delta=x)
            continue
        if trace is not None and thinking is not None:  # the trace ends where the answer begins
            for e in close_trace():
                yield e
            thinking = None
        if kind == "open":
            yield event(ResponseOutputItemAddedEvent, output_index=at, item=shape.message("", "in_progress"))
            yield event(ResponseContentPartAddedEvent, item_id=item, output_index=at, content_index=0,
                        part=ResponseOutputText(type="output_text", text="", annotations=[]))
        elif kind == "text":
            text += x
            yield event(ResponseTextDeltaEvent, item_id=item, output_index=at, content_index=0, delta=x, logprobs=[])
        else:
            answer = x
    if trace is not None and thinking is not None:  # cut off inside the trace: reasoning only
        for e in close_trace():
            yield e
    notes.completion_tokens = answer.usage.completion
    opened = text_opened
    if opened:
        part = ResponseOutputText(type="output_text", text=text, annotations=[])
        yield event(ResponseTextDoneEvent, item_id=item, output_index=at, content_index=0, text=text, logprobs=[])
        yield event(ResponseContentPartDoneEvent, item_id=item, output_index=at, content_index=0, part=part)
        yield event(ResponseOutputItemDoneEvent, output_index=at, item=shape.message(text))
    for k, c in enumerate(answer.calls, start=at + int(opened)):
        added = shape.call(c, "in_progress", "")
        yield event(ResponseOutputItemAddedEvent, output_index=k, item=added)
        yield event(ResponseFunctionCallArgumentsDeltaEvent, item_id=added.id, output_index=k, delta=c.arguments_json)
        yield event(ResponseFunctionCallArgumentsDoneEvent, item_id=added.id, output_index=k,
                    arguments=c.arguments_json)
        yield event(ResponseOutputItemDoneEvent, output_index=k, item=shape.call(c))
    final = shape.response(answer)
    yield event(ResponseIncompleteEvent if final.status == "incomplete" else ResponseCompletedEvent, response=final)


@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, request: Request):
    workers: Workers = request.app.state.workers
    notes = notes_of(request)
    ask = body.ask()
    prep = await prepare(workers, ask)
    shape = Shaper(body)
    frames = workers.stream(prep.addr, prep.params)
    if body.stream:
        return sse_response(_events(shape, frames, notes, prep.opens_thinking))
    answer = await collect(frames, body.model, ask.tools, notes, prep.opens_thinking)
    notes.completion_tokens = answer.usage.completion
    return JSONResponse(shape.response(answer).model_dump(mode="json", exclude_unset=True))
