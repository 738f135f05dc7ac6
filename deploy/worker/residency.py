"""Whether a worker's model is in memory: asleep (registered, the model not loaded), loading,
loaded, or unloading; and the rules for changing that.

A request that needs the model (generate, count tokens, embeddings) first waits until it is
loaded: the first one asks the host's memory pool (the controller) for the model's budget,
waiting up to `load_wait` while the pool makes room, and loads it; requests arriving meanwhile
wait for that one load. Every request counts as in flight from its arrival to its end, so the
pool never unloads a model that is answering, streaming, or has requests waiting. The pool asks
an idle model to unload (`unload`), and a model idle for its `idle_unload` unloads itself; either
way the process stays up and registered, and gives the memory back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from deploy.registry.host import memory_of
from deploy.wire.errors import RETRY_AFTER_S

log = logging.getLogger("deploy.worker.residency")
ASLEEP, LOADING, LOADED, UNLOADING = "asleep", "loading", "loaded", "unloading"


class NoMemory(Exception):
    """The pool had no room within `load_wait` (every loaded model busy): a 503 the client retries."""


class LoadFailed(Exception):
    """The model did not load (a broken file, over its budget): its reservation is given back."""


class Residency:
    """`load` and `unload` run in a thread (they block for seconds); `pool` is the controller's
    side: acquire(evict) -> None or the reason there is no room, loaded(ok, seconds, reason),
    released(idle_bytes)."""

    def __init__(self, load: Callable[[], None], unload: Callable[[], None], pool, load_wait: float,
                 idle_unload: float | None = None, keep_loaded: bool = False):
        self._load, self._unload, self.pool = load, unload, pool
        self.load_wait, self.idle_unload, self.keep_loaded = load_wait, idle_unload, keep_loaded
        self.state = ASLEEP
        self.in_flight = 0
        self.last_used = 0.0
        self.load_seconds: float | None = None
        self.reason = ""  # why the last load failed
        self.rss_asleep = self.idle_bytes()  # before any load: what an asleep worker holds
        self._lock = asyncio.Lock()

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and self.state == LOADED

    def idle_bytes(self) -> int:
        return memory_of()["rss"]

    async def request(self, run: Callable[[], Awaitable]):
        """Run `run` (which needs the model) as one request: in flight from now to its end."""
        self.in_flight += 1
        try:
            await self.ensure_loaded()
            return await run()
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    def enter(self) -> None:
        """A request (a stream, which ends later) starts: it is in flight until `leave`."""
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self.last_used = time.monotonic()

    async def ensure_loaded(self, evict: bool = True, wait: float | None = None) -> None:
        """Load the model unless it is loaded: ask the pool for room (letting it unload idle models
        when `evict`) for up to `wait` seconds (default `load_wait`; 0: ask once)."""
        if self.state == LOADED:
            return
        async with self._lock:
            if self.state == LOADED:
                return
            deadline = time.monotonic() + (self.load_wait if wait is None else wait)
            while (why := await self.pool.acquire(evict)) is not None:
                if time.monotonic() >= deadline:
                    raise NoMemory(f"{why} (waited {self.load_wait:g} s). Retry in {RETRY_AFTER_S} s")
                await asyncio.sleep(0.25)
            self.state, t0 = LOADING, time.monotonic()
            try:
                await asyncio.to_thread(self._load)
            except BaseException as e:  # MemoryError, a broken file, ...: give the reservation back
                self.state, self.reason = ASLEEP, f"{type(e).__name__}: {e}"[:500]
                log.error("loading failed: %s", self.reason)
                await self.pool.loaded(False, time.monotonic() - t0, self.reason, self.idle_bytes())
                raise LoadFailed(self.reason) from None
            self.load_seconds, self.reason = time.monotonic() - t0, ""
            self.state, self.last_used = LOADED, time.monotonic()
            log.info("model loaded in %.1f s", self.load_seconds)
            await self.pool.loaded(True, self.load_seconds, "", 0)

    async def unload(self, why: str) -> bool:
        """Unload if idle; False if a request is in flight (or it is not loaded)."""
        if not self.idle:
            return False
        async with self._lock:
            if not self.idle:
                return False
            self.state = UNLOADING
            try:
                await asyncio.to_thread(self._unload)
            finally:
                self.state = ASLEEP
            log.info("model unloaded (%s); resident now %d MiB", why, self.idle_bytes() >> 20)
            return True

    async def idle_loop(self, every: float = 1.0) -> None:
        """Unload after `idle_unload` seconds unused (Ollama's keep_alive), even with room to spare."""
        while self.idle_unload:
            await asyncio.sleep(every)
            if self.keep_loaded:  # pinned (now, or in its entry): never unloaded
                continue
            if self.idle and time.monotonic() - self.last_used >= self.idle_unload:
                if await self.unload(f"idle for {self.idle_unload:g} s"):
                    await self.pool.released(self.idle_bytes())
