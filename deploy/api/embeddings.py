"""POST /v1/embeddings (and /v1/engines/{model}/embeddings, where the path names the model)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from deploy.api.protocol import EmbeddingsRequest
from deploy.api.workers import Workers

router = APIRouter()
BATCH = 4  # inputs per worker call, as FastChat's API server sends them


async def embed(body: EmbeddingsRequest, workers: Workers) -> dict:
    """The embeddings of every input, as /v1/embeddings answers (float vectors unless base64 is asked)."""
    addr = await workers.route(body.model, body.needs)
    data, tokens = [], 0
    for start in range(0, len(body.input), BATCH):
        out = await workers.embed(addr, {"model": body.model, "input": body.input[start:start + BATCH],
                                         "encoding_format": body.encoding_format})
        data += [{"object": "embedding", "embedding": e, "index": start + i} for i, e in enumerate(out["embedding"])]
        tokens += out["token_num"]
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingsRequest, request: Request):
    return await embed(body, request.app.state.workers)


@router.post("/v1/engines/{model_name}/embeddings")
async def create_engine_embeddings(model_name: str, request: Request):
    raw = await request.json()
    if isinstance(raw, dict):
        raw.setdefault("model", model_name)
    return await embed(EmbeddingsRequest.model_validate(raw), request.app.state.workers)
