"""The controller's memory-pool routes (deploy/control/pool.py decides; these talk to the workers).

A worker asks `/pool/acquire` before it loads: granted when its budget fits its host's pool, else
the pool unloads idle models, least recently used first (each asked at that moment whether it is
idle and when it was last used, then asked to unload; a busy one says no and keeps its model),
until it fits or nothing more can go. One pool's decisions happen one at a time. `/pool/loaded`
and `/pool/released` keep the counts true; `/fleet_pools` shows them. The routes that change a
pool need the fleet secret (deploy/wire/routes.py: CONTROL_ROUTES).
"""
from __future__ import annotations

import asyncio
import logging

from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from deploy.control.pool import ASLEEP, LOADED, LOADING, Member, Pool, Pools
from deploy.wire import routes
from deploy.wire.fields import Boolean, Integer, Real, Text

log = logging.getLogger("deploy.control.pool")
router = APIRouter()
UNLOAD_TIMEOUT = 60.0
MAX_LOAD_RECORDS = 1000


class PoolBoard:
    """The pools with a lock each, and how to reach their workers (on app.state.pools)."""

    def __init__(self, secret: str):
        self.pools = Pools()
        self.secret = secret
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, host: str) -> asyncio.Lock:
        return self._locks.setdefault(host, asyncio.Lock())

    async def make_room(self, http: httpx.AsyncClient, pool: Pool, asking: Member) -> None:
        """Unload idle models, least recently used first, until `asking` fits or none is left."""
        candidates = pool.candidates(asking)
        infos = await asyncio.gather(*(_info(http, m.worker) for m in candidates))
        idle = sorted(((info.get("idle_s", 0), m) for m, info in zip(candidates, infos)
                       if info.get("state") == LOADED and info.get("in_flight", 1) == 0),
                      key=lambda pair: -pair[0])
        for _, victim in idle:
            if pool.room_for(asking) <= 0:
                return
            try:
                r = await http.post(victim.worker + routes.WORKER_UNLOAD, headers={routes.SECRET_HEADER: self.secret},
                                    timeout=UNLOAD_TIMEOUT)
                answer = r.json() if r.status_code == 200 else {}
            except (httpx.HTTPError, ValueError) as e:
                log.warning("%s did not unload (%s)", victim.worker, type(e).__name__)
                continue
            if answer.get("unloaded"):
                victim.set_state(ASLEEP)
                victim.idle_bytes = int(answer.get("idle_bytes") or victim.idle_bytes)
                pool.evictions[victim.model] = pool.evictions.get(victim.model, 0) + 1
                log.info("unloaded %s to make room for %s", victim.model, asking.model)


WorkerName = Annotated[Text, Field(pattern=r"^https?://", max_length=512)]
Bytes = Annotated[Integer, Field(ge=0, le=1 << 50)]


class PoolShare(BaseModel):
    """What a worker tells the controller of its memory when it registers."""
    model_config = ConfigDict(extra="forbid")
    host: Annotated[Text, Field(min_length=1, max_length=256)]
    limit: Annotated[Integer, Field(gt=0, le=1 << 50)]
    model: Annotated[Text, Field(min_length=1, max_length=256)]
    budget: Annotated[Integer, Field(gt=0, le=1 << 50)]
    idle_bytes: Bytes = 0
    keep_loaded: Boolean = False
    state: Literal["asleep", "loading", "loaded"] = ASLEEP

    def member(self, worker: str) -> Member:
        return Member(worker, self.model, self.budget, self.idle_bytes, self.keep_loaded,
                      LOADED if self.state == LOADED else ASLEEP)


class PoolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker_name: WorkerName
    evict: Boolean = True                      # acquire: may unload idle models
    ok: Boolean = False                        # loaded: did it load?
    seconds: Annotated[Real, Field(ge=0, le=86400)] = 0.0
    reason: Annotated[Text, Field(max_length=2000)] = ""
    idle_bytes: Bytes = 0
    pinned: Boolean = False                    # pin: never unloaded to make room


async def _info(http: httpx.AsyncClient, worker: str) -> dict:
    try:
        return (await http.get(worker + routes.FLEET_INFO, timeout=2)).json()
    except (httpx.HTTPError, ValueError):
        return {}


def _member(request: Request, body: PoolRequest) -> tuple[Pool, Member] | None:
    return request.app.state.pools.pools.of(body.worker_name.rstrip("/"))


def _unknown() -> dict:
    return {"granted": False, "reason": "this worker is not registered with a memory pool; it registers again",
            "registered": False}


@router.post(routes.POOL_ACQUIRE)
async def acquire(body: PoolRequest, request: Request):
    """{"worker_name", "evict"} -> {"granted": bool, "reason"}"""
    board: PoolBoard = request.app.state.pools
    found = _member(request, body)
    if found is None:
        return _unknown()
    pool, m = found
    async with board.lock(pool.host):
        if m.state in (LOADING, LOADED):
            return {"granted": True, "reason": ""}
        if pool.room_for(m) > 0 and body.evict:
            await board.make_room(request.app.state.http, pool, m)
        if pool.room_for(m) > 0:
            return {"granted": False, "reason": pool.full_message(m)}
        m.set_state(LOADING)
        return {"granted": True, "reason": ""}


@router.post(routes.POOL_LOADED)
async def loaded(body: PoolRequest, request: Request):
    """{"worker_name", "ok", "seconds", "reason", "idle_bytes"}: the load is over; a failed one
    gives its reservation back and its reason shows in status."""
    found = _member(request, body)
    if found is None:
        return _unknown()
    pool, m = found
    if body.ok:
        m.set_state(LOADED)
        pool.load_seconds = (pool.load_seconds + [body.seconds])[-MAX_LOAD_RECORDS:]
    else:
        m.set_state(ASLEEP, body.reason)
        m.idle_bytes = body.idle_bytes or m.idle_bytes
    return {"ok": True}


@router.post(routes.POOL_RELEASED)
async def released(body: PoolRequest, request: Request):
    """{"worker_name", "idle_bytes"}: the worker unloaded by itself (idle_unload)."""
    found = _member(request, body)
    if found is None:
        return _unknown()
    _, m = found
    m.set_state(ASLEEP)
    m.idle_bytes = body.idle_bytes or m.idle_bytes
    return {"ok": True}


@router.post(routes.POOL_PIN)
async def pin(body: PoolRequest, request: Request):
    """{"worker_name", "pinned"}: a pinned model is never unloaded to make room (keep_loaded, set now)."""
    found = _member(request, body)
    if found is None:
        return _unknown()
    found[1].keep_loaded = body.pinned
    return {"ok": True}


@router.get(routes.FLEET_POOLS)
async def fleet_pools(request: Request):
    return {"pools": [p.describe() for p in request.app.state.pools.pools.pools.values()]}
