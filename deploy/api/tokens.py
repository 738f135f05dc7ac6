"""POST /api/v1/token_check (FastChat's): whether each prompt and its max_tokens fit the model's
context; an unknown model is a 404, as on every route."""
from __future__ import annotations

from fastapi import APIRouter, Request

from deploy.api.protocol import TokenCheckRequest
from deploy.api.workers import Workers

router = APIRouter()


@router.post("/api/v1/token_check")
async def token_check(body: TokenCheckRequest, request: Request):
    workers: Workers = request.app.state.workers
    out = []
    for item in body.prompts:
        count, context = await workers.count_tokens(await workers.route(item.model), item.model, item.prompt)
        out.append({"fits": count + item.max_tokens <= context, "tokenCount": count, "contextLength": context})
    return {"prompts": out}
