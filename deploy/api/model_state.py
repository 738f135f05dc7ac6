"""Models in and out of memory on request, in the shape of llama.cpp's router: GET /models lists
every model with its `status` (loaded, loading, unloaded; pinned or not), POST /models/load and
/models/unload load or unload one now, and /models/pin and /models/unpin keep one in memory or let
it go again (Ollama's keep_alive = -1). Behind the API keys like every route. A load that does not
fit its host's memory pool is a 409 with the pool's reason; so is unloading a model mid-answer."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from deploy.api.protocol import ModelName, StrictModel
from deploy.api.workers import Workers
from deploy.wire.client import ModelUnavailable
from deploy.wire.errors import ClientError
from deploy.wire.residency_calls import ModelState, act, model_states

router = APIRouter()
DONE = {"load": "loaded", "unload": "unloaded", "pin": "pinned", "unpin": "unpinned"}


class Status(StrictModel):
    value: Literal["loaded", "loading", "unloaded", "unloading"]
    pinned: bool = False
    failed: bool = False
    reason: str | None = None  # why its last load failed


class ModelCard(StrictModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "fastchat-fleet"
    status: Status
    memory_budget: int | None = None
    workers: int = 1


class ModelList(StrictModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelAction(StrictModel):
    model: ModelName


class ActionDone(StrictModel):
    success: bool
    model: str
    status: Status


def status_of(m: ModelState) -> Status:
    return Status(value=m.value, pinned=m.pinned, failed=bool(m.failed), reason=m.failed or None)


@router.get("/models")
async def list_models(request: Request) -> ModelList:
    states = await model_states(request.app.state.fleet)
    return ModelList(data=[ModelCard(id=m.model, status=status_of(m), memory_budget=m.budget, workers=len(m.workers))
                           for m in states])


async def _do(request: Request, body: ModelAction, action: str) -> ActionDone:
    workers: Workers = request.app.state.workers
    try:
        outcome = await act(request.app.state.fleet, body.model, action)
    except ModelUnavailable:
        raise await workers.unavailable(body.model) from None
    if not outcome.ok:
        code = "no_memory" if action == "load" else "model_busy"
        raise ClientError(409, f"'{body.model}' was not {DONE[action]}: {'; '.join(outcome.reasons)}",
                          param="model", code=code)
    now = next((m for m in await model_states(request.app.state.fleet) if m.model == body.model), None)
    return ActionDone(success=True, model=body.model, status=status_of(now) if now else Status(value="unloaded"))


@router.post("/models/load")
async def load(body: ModelAction, request: Request) -> ActionDone:
    return await _do(request, body, "load")


@router.post("/models/unload")
async def unload(body: ModelAction, request: Request) -> ActionDone:
    return await _do(request, body, "unload")


@router.post("/models/pin")
async def pin(body: ModelAction, request: Request) -> ActionDone:
    return await _do(request, body, "pin")


@router.post("/models/unpin")
async def unpin(body: ModelAction, request: Request) -> ActionDone:
    return await _do(request, body, "unpin")
