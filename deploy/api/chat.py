"""POST /v1/chat/completions (and FastChat's /api/v1/chat/completions, the same with
repetition_penalty): a conversation in the model's own template, streamed or not, n choices."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from deploy.api.protocol import ChatCompletionRequest
from deploy.api.streaming import Usage, chat_stream, chat_tool_calls, new_id, notes_of
from deploy.api.tool_format import BadToolCall, ToolCall, ToolUse
from deploy.api.workers import Workers
from deploy.wire.errors import ClientError
from deploy.wire.generation import Sampling, chat_params, conversation_from_messages

router = APIRouter()


async def prepare_chat(workers: Workers, model: str, messages: list[dict], sampling: Sampling,
                       needs: set[str], tools: ToolUse | None = None) -> tuple[str, dict]:
    """(worker address, worker params) for a conversation (system first, then user and assistant
    turns as text; with `tools`, their calls and results too) in the model's own template, its
    answer held to what the context leaves. The chat, Responses and Anthropic Messages routes all
    come through here."""
    addr = await workers.route(model, needs | ({"tools"} if tools else set()))
    template = await workers.template(addr, model)
    if tools:
        messages = tools.conversation(messages, template)
        sampling.json_schema = tools.schema()
    conv = conversation_from_messages(template, messages)
    params = chat_params(model, conv, sampling)
    params["messages"] = messages  # for an upstream reached through its own chat route (backend = "openai")
    params["max_new_tokens"] = await workers.max_new_tokens(addr, model, params["prompt"], params["max_new_tokens"])
    return addr, params


async def answer_in_shape(request: Request, model: str, messages: list[dict], sampling: Sampling, stream: bool,
                          events: Callable, whole: Callable[[dict], dict], tools: ToolUse | None = None):
    """One chat turn for a route of another API (Responses, Anthropic Messages): its stream as
    `events(workers, addr, params, notes)` gives it, or its whole answer shaped by `whole(frame)`."""
    workers: Workers = request.app.state.workers
    addr, params = await prepare_chat(workers, model, messages, sampling, set(), tools)
    if stream:
        return StreamingResponse(events(workers, addr, params, notes_of(request)), media_type="text/event-stream")
    return JSONResponse(whole(await workers.generate(addr, params)))


def read_answer(text: str, tools: ToolUse | None) -> tuple[str | None, list[ToolCall]]:
    """A whole answer's text and tool calls; a call the grammar should have ruled out is a 502."""
    if tools is None:
        return text, []
    try:
        return tools.read(text)
    except BadToolCall as e:
        raise ClientError(502, f"{e}. Retry, or simplify the tool's schema.", code="tool_call_invalid",
                          kind="server_error") from None


@router.post("/v1/chat/completions")
@router.post("/api/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    workers: Workers = request.app.state.workers
    notes = notes_of(request)
    tools = body.tool_use()
    addr, params = await prepare_chat(workers, body.model, body.openai_messages(), body.sampling(), body.needs, tools)
    if body.stream:
        streams = [lambda: workers.stream(addr, params)] * body.choices
        return StreamingResponse(chat_stream(streams, body.model, notes, body.include_usage, tools),
                                 media_type="text/event-stream")
    # a worker that goes away raises here; the gate answers that with a 503 and Retry-After
    answers = await asyncio.gather(*(workers.generate(addr, params) for _ in range(body.choices)))
    choices, usage = [], Usage()
    for i, frame in enumerate(answers):
        content, calls = read_answer(frame["text"], tools)
        message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = chat_tool_calls(calls, streamed=False)
        choice = {"index": i, "message": message,
                  "finish_reason": "tool_calls" if calls else frame.get("finish_reason") or "stop"}
        if body.logprobs:
            choice["logprobs"] = frame.get("chat_logprobs") or {"content": []}
        choices.append(choice)
        usage.add(frame)
    return JSONResponse({"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                         "model": body.model, "choices": choices, "usage": usage.as_dict()})
