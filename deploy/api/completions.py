"""POST /v1/completions: raw prompts (each stopping where a chat turn of the model would), n
choices each, streamed or not, with log-probabilities and echo."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from deploy.api.protocol import CompletionRequest
from deploy.api.streaming import Usage, completion_stream, new_id, notes_of
from deploy.api.workers import Workers
from deploy.wire.generation import conversation_from_dict, worker_params

router = APIRouter()


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
        return StreamingResponse(completion_stream(streams, body.model, notes, body.include_usage),
                                 media_type="text/event-stream")
    answers = await asyncio.gather(*(workers.generate(addr, p) for p in params for _ in range(body.choices)))
    usage = Usage()
    for frame in answers:
        usage.add(frame)
    choices = [{"index": i, "text": f["text"], "logprobs": f.get("logprobs"),
                "finish_reason": f.get("finish_reason") or "stop"} for i, f in enumerate(answers)]
    return JSONResponse({"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                         "model": body.model, "choices": choices, "usage": usage.as_dict()})
