"""POST /v1/chat/completions (and FastChat's /api/v1/chat/completions, the same with
repetition_penalty): a conversation in the model's own template, streamed or not, n choices."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from deploy.api.protocol import ChatCompletionRequest
from deploy.api.streaming import Usage, chat_stream, new_id, notes_of
from deploy.api.workers import Workers
from deploy.wire.generation import chat_params, conversation_from_messages

router = APIRouter()


@router.post("/v1/chat/completions")
@router.post("/api/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    workers: Workers = request.app.state.workers
    notes = notes_of(request)
    addr = await workers.route(body.model, body.needs)
    conv = conversation_from_messages(await workers.template(addr, body.model), body.openai_messages())
    params = chat_params(body.model, conv, body.sampling())
    params["max_new_tokens"] = await workers.max_new_tokens(addr, body.model, params["prompt"],
                                                            params["max_new_tokens"])
    if body.stream:
        streams = [lambda: workers.stream(addr, params)] * body.choices
        return StreamingResponse(chat_stream(streams, body.model, notes, body.include_usage),
                                 media_type="text/event-stream")
    # a worker that goes away raises here; the gate answers that with a 503 and Retry-After
    answers = await asyncio.gather(*(workers.generate(addr, params) for _ in range(body.choices)))
    choices, usage = [], Usage()
    for i, frame in enumerate(answers):
        choice = {"index": i, "message": {"role": "assistant", "content": frame["text"]},
                  "finish_reason": frame.get("finish_reason") or "stop"}
        if body.logprobs:
            choice["logprobs"] = frame.get("chat_logprobs") or {"content": []}
        choices.append(choice)
        usage.add(frame)
    return JSONResponse({"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                         "model": body.model, "choices": choices, "usage": usage.as_dict()})
