"""Token counts and ids: POST /api/v1/token_check (FastChat's: whether each prompt and its
max_tokens fit the model's context) and POST /tokenize (vLLM's shape: the ids the model is fed for a
chat's messages, as the model's own chat code builds them, or for a raw prompt). An unknown model is
a 404, as on every route."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from deploy.api.conversation import prepare
from deploy.api.protocol import ChatCompletionRequest, ModelName, StrictModel, TokenCheckRequest
from deploy.api.workers import Workers
from deploy.wire.fields import Boolean, Text

router = APIRouter()


@router.post("/api/v1/token_check")
async def token_check(body: TokenCheckRequest, request: Request):
    workers: Workers = request.app.state.workers
    out = []
    for item in body.prompts:
        count, context = await workers.count_tokens(await workers.route(item.model), item.model, item.prompt)
        out.append({"fits": count + item.max_tokens <= context, "tokenCount": count, "contextLength": context})
    return {"prompts": out}


class TokenizeChat(ChatCompletionRequest):
    """vLLM's TokenizeChatRequest: a chat, rendered with the generation prompt (the only way the
    templates here render one)."""
    add_generation_prompt: Literal[True] = True


class TokenizePrompt(StrictModel):
    """vLLM's TokenizeCompletionRequest: a raw prompt, tokenised as a completion's."""
    model: ModelName
    prompt: Annotated[Text, Field(max_length=1 << 22)]
    add_special_tokens: Boolean = True


class Tokenized(StrictModel):
    count: int
    max_model_len: int
    tokens: list[int]


@router.post("/tokenize")
async def tokenize(request: Request):
    """A body with `messages` is a chat, one with `prompt` a raw prompt (as vLLM tells them apart)."""
    raw = await request.json()
    chat = isinstance(raw, dict) and "messages" in raw
    body = TokenizeChat.model_validate(raw) if chat else TokenizePrompt.model_validate(raw)
    workers: Workers = request.app.state.workers
    if chat:
        prep = await prepare(workers, body.ask(), fit=False)
        addr, params = prep.addr, {"model": body.model, "prompt": prep.params["prompt"],
                                   "prompt_parts": prep.params["prompt_parts"]}
    else:
        addr, params = await workers.route(body.model), {"model": body.model, "prompt": body.prompt}
    ids, context = await workers.token_ids(addr, params)
    return Tokenized(count=len(ids), max_model_len=context, tokens=ids)
