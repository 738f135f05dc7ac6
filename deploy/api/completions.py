"""POST /v1/completions: raw prompts (each stopping where a chat turn of the model would), n
choices each, streamed or not, with log-probabilities and echo, in the `openai` package's
Completion type."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from openai.types import Completion, CompletionChoice

from deploy.api.protocol import CompletionRequest
from deploy.api.streaming import (DONE, Notes, StreamFailed, Usage, closing_events, logprobs_delta, new_id, notes_of,
                                  sse, sse_response, text_deltas)
from deploy.api.workers import Workers
from deploy.wire.generation import conversation_from_dict, worker_params

router = APIRouter()


class StreamedChoice(CompletionChoice):
    """A streamed chunk's choice: OpenAI streams finish_reason null until the last chunk, which the
    `openai` package's CompletionChoice (a whole completion's) does not allow."""
    finish_reason: CompletionChoice.model_fields["finish_reason"].annotation | None = None


class CompletionChunk(Completion):
    """One chunk of a streamed completion: OpenAI's Completion object, its choices as they stream."""
    choices: list[StreamedChoice]


async def completion_stream(streams, model: str, notes: Notes, include_usage: bool) -> AsyncIterator[str]:
    """`streams`: (choice index, a function that starts that choice's worker frames), in order."""
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model}
    finish, usage = [], Usage()
    for i, frames in streams:
        frame, sent = {}, 0
        try:
            async for delta, frame in text_deltas(frames(), model, notes):
                logprobs, sent = logprobs_delta(frame, "logprobs", sent)
                if delta or logprobs:
                    yield sse(CompletionChunk(**head, choices=[{"index": i, "text": delta, "logprobs": logprobs,
                                                                "finish_reason": None}]))
        except StreamFailed as f:
            yield f.failed.event
            yield DONE
            return
        usage.add(frame)
        finish.append([{"index": i, "text": "", "logprobs": None, "finish_reason": frame.get("finish_reason") or "stop"}])
    for event in closing_events(head, finish, usage, notes, include_usage, CompletionChunk):
        yield event


async def last_frame(frames: AsyncIterator[dict], model: str, notes: Notes) -> dict:
    """A whole completion from its stream (its first token timed as a streamed one's)."""
    frame = {}
    try:
        async for _, frame in text_deltas(frames, model, notes):
            pass
    except StreamFailed as f:
        raise f.failed.client_error() from None
    return frame


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request):
    workers: Workers = request.app.state.workers
    notes = notes_of(request)
    addr = await workers.route(body.model, body.needs)
    sampling = body.sampling()
    for text in body.prompt:  # every prompt gets what the longest leaves of the context (as FastChat)
        sampling.max_new_tokens = await workers.max_new_tokens(addr, body.model, text, sampling.max_new_tokens)
    conv = conversation_from_dict(await workers.template(addr, body.model))
    params = [worker_params(body.model, text, conv, sampling) for text in body.prompt]
    if body.stream:
        streams = [(i, lambda p=p: workers.stream(addr, p)) for p in params for i in range(body.choices)]
        return sse_response(completion_stream(streams, body.model, notes, body.include_usage))
    answers = await asyncio.gather(*(last_frame(workers.stream(addr, p), body.model, notes)
                                     for p in params for _ in range(body.choices)))
    usage = Usage()
    for frame in answers:
        usage.add(frame)
    notes.completion_tokens = usage.completion
    choices = [{"index": i, "text": f["text"], "logprobs": f.get("logprobs"),
                "finish_reason": f.get("finish_reason") or "stop"} for i, f in enumerate(answers)]
    return JSONResponse(Completion(id=new_id("cmpl"), object="text_completion", created=int(time.time()),
                                   model=body.model, choices=choices, usage=usage.as_dict())
                        .model_dump(mode="json", exclude_unset=True))
