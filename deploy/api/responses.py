"""POST /v1/responses: OpenAI's Responses API, stateless (no stored responses): `input` as a string
or as items (messages with text parts), `instructions`, `max_output_tokens`, streamed with the
Responses event types or not. It becomes the same chat request as /v1/chat/completions (one
conversation in the model's own template) and its answer is given back as Responses output items."""
from __future__ import annotations

import json
import time
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.chat import answer_in_shape, read_answer
from deploy.api.protocol import FunctionCall, ModelName, StrictModel, joined_text, refused, sampling
from deploy.api.streaming import Notes, answer_blocks, new_id
from deploy.api.tool_fields import (MAX_TOOLS, ArgumentsSchema, CallId, Description, ToolName, named_results,
                                    tool_use)
from deploy.api.tool_format import Tool, ToolCall, ToolUse
from deploy.api.workers import Workers
from deploy.wire.fields import MaxTokens, Temperature, Text, TopP
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


class FunctionCallItem(StrictModel):
    """An earlier call of a tool (as this API's output gave it)."""
    type: Literal["function_call"]
    call_id: CallId
    name: ToolName
    arguments: Text

    def call(self) -> ToolCall:
        return FunctionCall(name=self.name, arguments=self.arguments).call(self.call_id)


class FunctionCallOutputItem(StrictModel):
    """A tool's result, for the call of the same call_id."""
    type: Literal["function_call_output"]
    call_id: CallId
    output: Annotated[str, BeforeValidator(_text_of)]


ITEMS = {"message": InputItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem}


def _item(v: Any) -> Any:
    kind = v.get("type") or "message" if isinstance(v, dict) else None
    if kind not in ITEMS:
        raise PydanticCustomError("unsupported_parameter", "'{v}' items are not supported by this deployment. Fix: "
                                                           "send message, function_call and function_call_output "
                                                           "items", {"v": kind})
    return ITEMS[kind].model_validate(v)


Item = Annotated[InputItem | FunctionCallItem | FunctionCallOutputItem, BeforeValidator(_item)]


class FunctionTool(StrictModel):
    type: Literal["function"]
    name: ToolName
    description: Description | None = None
    parameters: ArgumentsSchema = None
    strict: bool | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _kind(cls, v):
        if v != "function":
            raise PydanticCustomError("tool_type", "is a '{v}' tool; the models here call function tools only",
                                      {"v": v})
        return v


class NamedFunction(StrictModel):
    type: Literal["function"]
    name: ToolName


def _input(v: Any) -> Any:
    if isinstance(v, str):
        return [{"role": "user", "content": v}]
    if not isinstance(v, list) or not v:
        raise PydanticCustomError("input", "must be a string or a non-empty array of input items")
    return v


class ResponsesRequest(StrictModel):
    _tool_use: ToolUse | None = PrivateAttr(default=None)
    model: ModelName
    input: Annotated[list[Item], BeforeValidator(_input)]
    instructions: Annotated[str, Field(max_length=1 << 20)] | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool = False
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: Annotated[Any, refused("'previous_response_id' (stored responses)",
                                                 "This server keeps no responses. Fix: send the whole "
                                                 "conversation in 'input'.")] = None

    @model_validator(mode="after")
    def _a_user_message(self):
        if not any(isinstance(i, InputItem) and i.role == "user" for i in self.input):
            raise PydanticCustomError("input", "'input' has no user message. Fix: add one")
        if self.tools:
            choice = self.tool_choice.name if isinstance(self.tool_choice, NamedFunction) else self.tool_choice
            self._tool_use = tool_use([Tool(t.name, t.description or "", t.parameters) for t in self.tools],
                                      choice or "auto", self.parallel_tool_calls)
            named_results(self._turns())
        elif self.tool_choice is not None or any(not isinstance(i, InputItem) for i in self.input):
            raise PydanticCustomError("tools", "'tool_choice' and function call items need 'tools'. Fix: send the "
                                               "tools the conversation uses")
        return self

    def tool_use(self) -> ToolUse | None:
        return self._tool_use

    def _turns(self) -> list[dict]:
        out: list[dict] = []
        for i in self.input:
            if isinstance(i, FunctionCallItem):
                if out and out[-1].get("tool_calls"):  # calls side by side are one assistant turn
                    out[-1]["tool_calls"].append(i.call())
                else:
                    out.append({"role": "assistant", "content": None, "tool_calls": [i.call()]})
            elif isinstance(i, FunctionCallOutputItem):
                out.append({"role": "tool", "call_id": i.call_id, "content": i.output})
            elif i.role in ("user", "assistant"):
                out.append({"role": i.role, "content": i.content})
        return out

    def chat_messages(self) -> list[dict]:
        """The conversation for the model's template: one system prompt first, then the turns."""
        system = [self.instructions] if self.instructions else []
        system += [i.content for i in self.input if isinstance(i, InputItem) and i.role in ("system", "developer")]
        turns = named_results(self._turns()) if self.tools else self._turns()
        return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + turns

    def sampling(self) -> Sampling:
        return sampling(max_new_tokens=self.max_output_tokens, temperature=self.temperature, top_p=self.top_p)


def _call_item(c: ToolCall, status: str = "completed", arguments: str | None = None) -> dict:
    return {"type": "function_call", "id": "fc_" + c.id.removeprefix("call_"), "call_id": c.id, "name": c.name,
            "arguments": c.arguments_json if arguments is None else arguments, "status": status}


def _response(body: ResponsesRequest, rid: str, status: str, text: str | None, usage: dict | None,
              finish: str | None = None, calls: list[ToolCall] = ()) -> dict:
    """A Response object in OpenAI's shape: a message item for the text, one item per tool call."""
    output = [] if text is None else [{
        "type": "message", "id": rid.replace("resp_", "msg_"), "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    output += [_call_item(c) for c in calls]
    tools = body.tool_use()
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": body.model,
            "output": output, "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "tool_choice": body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedFunction) else
            body.tool_choice or "auto", "parallel_tool_calls": tools.parallel if tools else True,
            "text": {"format": {"type": "text"}}, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" and not calls else None,
            "metadata": {}, "usage": usage}


def _usage(frame: dict) -> dict:
    u = frame.get("usage") or {}
    i, o = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": cached_tokens(u) or 0}, "output_tokens_details": {"reasoning_tokens": 0}}


async def _events(workers: Workers, addr: str, params: dict, body: ResponsesRequest, notes: Notes) -> AsyncIterator[str]:
    """The Responses API's event stream for one answer: the message item opens with its first
    text; tool calls come as function_call items, each whole."""
    rid, seq = new_id("resp"), 0
    item = rid.replace("resp_", "msg_")

    def event(kind: str, **data) -> str:
        nonlocal seq
        seq += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **data}, ensure_ascii=False)}\n\n"

    yield event("response.created", response=_response(body, rid, "in_progress", None, None))
    yield event("response.in_progress", response=_response(body, rid, "in_progress", None, None))
    text, calls, frame, opened = "", [], {}, False
    async for kind, x in answer_blocks(workers.stream(addr, params), body.model, body.tool_use()):
        if kind == "failed":
            yield event("error", code="tool_call_invalid" if x.kind == "tool_call_invalid" else "worker_error",
                        message=x.message, param=None)
            return
        if kind == "open":
            yield event("response.output_item.added", output_index=0, item={
                "type": "message", "id": item, "status": "in_progress", "role": "assistant", "content": []})
            yield event("response.content_part.added", item_id=item, output_index=0, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []})
        elif kind == "text":
            text += x
            yield event("response.output_text.delta", item_id=item, output_index=0, content_index=0, delta=x,
                        logprobs=[])
        else:
            calls, frame, opened = x
    notes.completion_tokens = (frame.get("usage") or {}).get("completion_tokens", 0)
    if opened:
        yield event("response.output_text.done", item_id=item, output_index=0, content_index=0, text=text, logprobs=[])
        part = {"type": "output_text", "text": text, "annotations": []}
        yield event("response.content_part.done", item_id=item, output_index=0, content_index=0, part=part)
        yield event("response.output_item.done", output_index=0, item={
            "type": "message", "id": item, "status": "completed", "role": "assistant", "content": [part]})
    for k, c in enumerate(calls, start=int(opened)):
        added = _call_item(c, "in_progress", "")
        yield event("response.output_item.added", output_index=k, item=added)
        yield event("response.function_call_arguments.delta", item_id=added["id"], output_index=k,
                    delta=c.arguments_json)
        yield event("response.function_call_arguments.done", item_id=added["id"], output_index=k,
                    arguments=c.arguments_json)
        yield event("response.output_item.done", output_index=k, item=_call_item(c))
    yield event("response.completed", response=_response(body, rid, "completed", text if opened else None,
                                                         _usage(frame), frame.get("finish_reason"), calls))


def _whole(body: ResponsesRequest, frame: dict) -> dict:
    text, calls = read_answer(frame["text"], body.tool_use())
    return _response(body, new_id("resp"), "completed", text, _usage(frame), frame.get("finish_reason"), calls)


@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, request: Request):
    return await answer_in_shape(
        request, body.model, body.chat_messages(), body.sampling(), body.stream,
        lambda workers, addr, params, notes: _events(workers, addr, params, body, notes),
        lambda frame: _whole(body, frame), body.tool_use())
