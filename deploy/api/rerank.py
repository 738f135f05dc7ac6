"""POST /v1/rerank (and /rerank): documents ordered by relevance to a query, in the shape
llama.cpp's server (and Jina, Cohere) use. The chat models here have no reranking head (llama.cpp's
own rerank needs a model trained with one), so relevance is the cosine of the model's own
embeddings of the query and of each document (mean-pooled, L2-normed: a dot product)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import Field

from deploy.api.embeddings import embed
from deploy.api.protocol import EmbeddingsRequest, ModelName, StrictModel
from deploy.wire.fields import Boolean, Integer, Text

router = APIRouter()
MAX_DOCUMENTS = 255  # with the query, what one embeddings request takes


class RerankRequest(StrictModel):
    model: ModelName
    query: Annotated[Text, Field(min_length=1)]
    documents: Annotated[list[Text], Field(min_length=1, max_length=MAX_DOCUMENTS)]
    top_n: Annotated[Integer, Field(ge=1)] | None = None
    return_documents: Boolean = False


@router.post("/v1/rerank")
@router.post("/rerank")
async def rerank(body: RerankRequest, request: Request):
    out = await embed(EmbeddingsRequest(model=body.model, input=[body.query, *body.documents]),
                      request.app.state.workers)
    vectors = [d["embedding"] for d in sorted(out["data"], key=lambda d: d["index"])]
    query, docs = vectors[0], vectors[1:]
    scores = [sum(a * b for a, b in zip(query, d)) for d in docs]
    ranked = sorted(range(len(docs)), key=lambda i: -scores[i])[:body.top_n or len(docs)]
    results = [{"index": i, "relevance_score": scores[i],
                **({"document": {"text": body.documents[i]}} if body.return_documents else {})} for i in ranked]
    return {"model": body.model, "object": "list", "results": results, "usage": out["usage"]}
