"""POST /v1/chat/completions (and FastChat's /api/v1/chat/completions, the same with
repetition_penalty): a conversation in the model's own template, streamed or not, n choices, in the
`openai` package's own types (ChatCompletion, ChatCompletionChunk)."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from deploy.api.conversation import prepare
from deploy.api.protocol import ChatCompletionRequest
from deploy.api.streaming import (DONE, Answer, Notes, Usage, answer_stream, closing_events, collect,
                                  logprobs_delta, new_id, notes_of, sse, sse_response)
from deploy.api.tool_format import ToolCall, ToolUse
from deploy.api.workers import Workers

router = APIRouter()


def tool_calls(calls: list[ToolCall], streamed: bool) -> list[dict]:
    """Tool calls in a chat answer's shape (a stream sends each whole, with its index)."""
    return [{**({"index": k} if streamed else {}), "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments_json}} for k, c in enumerate(calls)]


def _choice(i: int, answer: Answer, logprobs: bool) -> dict:
    message = {"role": "assistant", "content": answer.text}
    if answer.reasoning is not None:  # the trace apart: reasoning_content (vLLM, llama.cpp) and its newer name
        message["reasoning_content"] = message["reasoning"] = answer.reasoning
    if answer.calls:
        message["tool_calls"] = tool_calls(answer.calls, streamed=False)
    choice = {"index": i, "message": message, "finish_reason": answer.finish_reason}
    if logprobs:
        choice["logprobs"] = answer.frame.get("chat_logprobs") or {"content": []}
    return choice


async def chat_stream(streams, model: str, notes: Notes, include_usage: bool,
                      tools: ToolUse | None = None, opened: bool = False) -> AsyncIterator[str]:
    """`streams`: one function per choice that starts its worker frames, started in order. With
    `tools`, the answer's text is read from the generic format as it grows, and its calls sent whole.
    A trace streams first, as reasoning_content (and reasoning) deltas; `opened`: the prompt opened it."""
    head = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(i: int, delta: dict, finish: str | None = None, **more) -> str:
        return sse(ChatCompletionChunk(**head, choices=[{"index": i, "delta": delta, "finish_reason": finish, **more}]))

    finish, usage = [], Usage()
    for i, frames in enumerate(streams):
        yield chunk(i, {"role": "assistant"})
        frame, sent, reason = {}, 0, None
        async for kind, delta, frame in answer_stream(frames(), model, tools, notes, opened):
            if kind == "failed":
                yield delta.event
                yield DONE
                return
            if kind == "reasoning":
                if delta:
                    yield chunk(i, {"reasoning_content": delta, "reasoning": delta})
                continue
            if kind == "calls":
                reason = "tool_calls"
                yield chunk(i, {"tool_calls": tool_calls(delta, streamed=True)})
                continue
            logprobs, sent = logprobs_delta(frame, "chat_logprobs", sent)
            if delta or logprobs:
                yield chunk(i, {"content": delta}, **({"logprobs": logprobs} if logprobs else {}))
        usage.add(frame)
        finish.append([{"index": i, "delta": {}, "finish_reason": reason or frame.get("finish_reason") or "stop"}])
    for event in closing_events(head, finish, usage, notes, include_usage, ChatCompletionChunk):
        yield event


@router.post("/v1/chat/completions")
@router.post("/api/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    workers: Workers = request.app.state.workers
    notes = notes_of(request)
    ask = body.ask()
    prep = await prepare(workers, ask)
    if body.stream:
        streams = [lambda: workers.stream(prep.addr, prep.params)] * body.choices
        return sse_response(chat_stream(streams, body.model, notes, body.include_usage, ask.tools, prep.opens_thinking))
    # a worker that goes away raises here; the gate answers that with a 503 and Retry-After
    answers = await asyncio.gather(*(collect(workers.stream(prep.addr, prep.params), body.model, ask.tools, notes,
                                             prep.opens_thinking) for _ in range(body.choices)))
    usage = Usage()
    for a in answers:
        usage.add(a.frame)
    notes.completion_tokens = usage.completion
    completion = ChatCompletion(id=new_id("chatcmpl"), object="chat.completion", created=int(time.time()),
                                model=body.model, choices=[_choice(i, a, bool(body.logprobs))
                                                           for i, a in enumerate(answers)], usage=usage.as_dict())
    return JSONResponse(completion.model_dump(mode="json", exclude_unset=True))
