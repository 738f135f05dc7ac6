"""A worker's membership of the fleet: registering with the controller (with the fleet secret) and
staying registered, and its share of its host's memory pool, which the controller keeps
(deploy/control/pool.py). Without a controller (a worker app tested alone) the pool is the
worker's own, and always has room."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

import httpx

from deploy.wire import routes
from deploy.wire.client import AsyncFleetClient

log = logging.getLogger("deploy.worker.membership")
HEART_BEAT_INTERVAL = 10.0


@dataclass(frozen=True)
class Joining:
    """How a worker joins the fleet: where the controller is, its own address, the fleet secret,
    and its share of the host's memory pool (host, limit, model, budget, keep_loaded)."""
    controller_url: str
    worker_url: str
    secret: str
    pool: dict


class ControllerPool:
    """The worker's side of its host's memory pool, asked of the controller."""

    def __init__(self, client: AsyncFleetClient, joining: Joining):
        self.client, self.joining = client, joining
        self.lost = asyncio.Event()  # the controller does not know us: register again

    async def _call(self, route: str, **body) -> dict:
        answer = await self.client.pool_call(route, {"worker_name": self.joining.worker_url, **body},
                                             self.joining.secret)
        if answer.get("registered") is False:
            self.lost.set()
        return answer

    async def acquire(self, evict: bool) -> str | None:
        """None once the pool granted this model its budget; else why not (yet)."""
        try:
            answer = await self._call(routes.POOL_ACQUIRE, evict=evict)
        except (httpx.HTTPError, ValueError) as e:
            return f"the controller at {self.client.controller_url} does not answer ({type(e).__name__})"
        return None if answer.get("granted") else str(answer.get("reason") or "no room in the memory pool")

    async def loaded(self, ok: bool, seconds: float, reason: str, idle_bytes: int) -> None:
        await self._tell(routes.POOL_LOADED, ok=ok, seconds=round(seconds, 3), reason=reason, idle_bytes=idle_bytes)

    async def released(self, idle_bytes: int) -> None:
        await self._tell(routes.POOL_RELEASED, idle_bytes=idle_bytes)

    async def pin(self, pinned: bool) -> None:
        await self._tell(routes.POOL_PIN, pinned=pinned)

    async def _tell(self, route: str, **body) -> None:
        try:
            await self._call(route, **body)
        except (httpx.HTTPError, ValueError) as e:  # it learns our state when we register again
            log.warning("could not tell the controller %s (%s)", route, type(e).__name__)
            self.lost.set()


class LocalPool:
    """No controller: the worker alone, always room (tests of the worker app)."""

    async def acquire(self, evict: bool) -> str | None:
        return None

    async def loaded(self, ok: bool, seconds: float, reason: str, idle_bytes: int) -> None:
        pass

    async def released(self, idle_bytes: int) -> None:
        pass

    async def pin(self, pinned: bool) -> None:
        pass


async def stay_registered(worker, client: AsyncFleetClient, joining: Joining, pool: ControllerPool,
                          share: Callable[[], dict], on_first: Callable[[], None],
                          interval: float = HEART_BEAT_INTERVAL) -> None:
    """Register with the controller (with the fleet secret and the worker's pool share as it is
    now), then heart-beat; register again when the controller does not know us (it restarted, or
    dropped us while we could not answer). Replaces FastChat's thread, which blocks, sends no
    secret and gives up on the first error. `on_first` runs after the first registration."""
    registered, first = False, True
    async with httpx.AsyncClient(timeout=2) as own:  # join only once we answer ourselves
        for _ in range(60):
            try:
                if (await own.get(joining.worker_url + routes.FLEET_INFO)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    while True:
        try:
            if not registered or pool.lost.is_set():
                pool.lost.clear()
                await client.register_worker(joining.worker_url, worker.get_status(), joining.secret,
                                             {**joining.pool, **share()})
                log.info("registered with the controller at %s as %s", client.controller_url, joining.worker_url)
                registered = True
                if first:
                    first = False
                    on_first()
            else:
                registered = await client.heart_beat(joining.worker_url, worker.get_queue_length(), joining.secret)
        except httpx.HTTPStatusError as e:
            registered = False
            if e.response.status_code == 401:
                log.error("the controller at %s refused the fleet secret. Fix: use the same secret file on every "
                          "host (fleet_secret_file in model_paths.toml).", client.controller_url)
            else:
                log.error("the controller refused registration: %s %s", e.response.status_code, e.response.text[:200])
        except httpx.HTTPError as e:
            registered = False
            log.warning("controller at %s not reachable (%s); retrying", client.controller_url, type(e).__name__)
        try:
            await asyncio.wait_for(pool.lost.wait(), interval if registered else 1.0)
        except asyncio.TimeoutError:
            pass
