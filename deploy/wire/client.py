"""The one client of FastChat's controller and worker protocol, with a blocking face (`FleetClient`:
the CLI, threads, tests, benchmarks) and an async face (`AsyncFleetClient`: the API server, the web
UI, the workers' registration), both generated from one definition of each call.

Each call is written once, as a generator over the protocol (`_Calls`): it yields the HTTP
requests it needs (`Http`) or pauses (`Sleep`), receives their responses, and returns its result;
failures are raised into it where it yielded, so each call says once how an error reads. A driver
runs that generator over httpx's blocking or async client. Streams of frames are the one part
written twice (a generator cannot yield frames to both faces), and share their request and
their frame decoder.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Generator, Iterator

import httpx

from deploy.wire import routes
from deploy.wire.frames import UNAVAILABLE, VALIDATION_ERROR, FrameDecoder
from deploy.wire.generation import conversation_from_dict


class ModelUnavailable(Exception):
    """The controller cannot be reached, or no worker serves the model now."""


@dataclass(frozen=True)
class Http:
    """One request a call needs."""
    method: str
    url: str
    json: Any = None
    headers: dict | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Call = Generator["Http | Sleep", Any, Any]
# Our services (uvicorn) close an idle keep-alive connection after 5 s; a client that kept it as
# long could send on a connection the server is closing (a ReadError). Ours drops it first.
LIMITS = httpx.Limits(keepalive_expiry=2.0)
_ERRORS = (httpx.HTTPError, ValueError, KeyError, TypeError)


def _unreachable(controller: str, e: Exception) -> ModelUnavailable:
    return ModelUnavailable(f"cannot reach the controller at {controller} ({type(e).__name__})")


def _ok(r: httpx.Response) -> Any:
    r.raise_for_status()
    return r.json()


class _Calls:
    """Every call of the protocol, once, independent of the transport. A call that uses another
    delegates to it as `yield from _Calls.other(self, ...)` (on the faces, `self.other` is the
    generated method, which runs the call instead of yielding its steps)."""

    controller_url: str
    secret: str | None  # the fleet secret: workers answer generation only with it

    def _fleet(self) -> dict | None:
        return {routes.SECRET_HEADER: self.secret} if self.secret else None

    def list_models(self) -> Call:
        """Registered models whose workers answer (the controller checks them every second);
        raises ModelUnavailable if the controller does not answer."""
        try:
            return sorted(_ok((yield Http("POST", self.controller_url + routes.LIST_MODELS)))["models"])
        except _ERRORS as e:
            raise _unreachable(self.controller_url, e) from None

    def registered(self) -> Call:
        """Registered models, or none when the controller is down (for polling loops)."""
        try:
            return set((yield from _Calls.list_models(self)))
        except ModelUnavailable:
            return set()

    def worker_address(self, model: str) -> Call:
        try:
            body = _ok((yield Http("POST", self.controller_url + routes.GET_WORKER_ADDRESS, {"model": model})))
        except _ERRORS as e:
            raise _unreachable(self.controller_url, e) from None
        addr = body.get("address") if isinstance(body, dict) else None
        if not addr:
            raise ModelUnavailable(f"'{model}' has no registered worker now (it may have stopped)")
        return addr

    def worker_info(self, addr: str, timeout: float | None = None) -> Call:
        """/fleet_info of one of our workers; {} for a worker that is not ours or does not answer."""
        try:
            info = (yield Http("GET", addr + routes.FLEET_INFO, timeout=timeout)).json()
        except _ERRORS:
            return {}
        return info if isinstance(info, dict) else {}

    def workers(self) -> Call:
        """Our controller's view of every worker: models, queue, heartbeat age, health."""
        try:
            return _ok((yield Http("GET", self.controller_url + routes.FLEET_WORKERS)))["workers"]
        except _ERRORS:
            return []

    def conv_template(self, addr: str, model: str, timeout: float | None = None) -> Call:
        """The worker's conversation template, as a dict, with the entry's thinking default under
        "thinking" (None from a worker that has none)."""
        try:
            answer = _ok((yield Http("POST", addr + routes.WORKER_GET_CONV_TEMPLATE, {"model": model},
                                     timeout=timeout)))
            return {**answer["conv"], "thinking": answer.get("thinking")}
        except _ERRORS as e:
            raise ModelUnavailable(f"the worker of '{model}' does not answer ({type(e).__name__})") from None

    def conversation(self, model: str) -> Call:
        """A fresh Conversation in the model's own template."""
        addr = yield from _Calls.worker_address(self, model)
        return conversation_from_dict((yield from _Calls.conv_template(self, addr, model)))

    def worker_post(self, addr: str, route: str, body: dict, timeout: float | None = None) -> Call:
        """A worker route's JSON answer (generate, count_token, model_details, embeddings); errors
        (a worker gone, a 4xx with its reason) are raised as httpx errors for the caller to map."""
        return _ok((yield Http("POST", addr + route, body, headers=self._fleet(), timeout=timeout)))

    def register_worker(self, worker_url: str, status: dict, secret: str, pool: dict | None = None) -> Call:
        """Join the controller (raises httpx.HTTPStatusError on 401/400, httpx errors if it is down);
        `pool`: the worker's share of its host's memory pool (deploy/control/pool.py)."""
        body = {"worker_name": worker_url, "check_heart_beat": True, "worker_status": status, "multimodal": False}
        if pool is not None:
            body["pool"] = pool
        r = yield Http("POST", self.controller_url + routes.REGISTER_WORKER, body,
                       headers={routes.SECRET_HEADER: secret})
        r.raise_for_status()

    def pool_call(self, route: str, body: dict, secret: str, timeout: float = 120) -> Call:
        """A worker's request to its memory pool (acquire, loaded, released): the controller's answer."""
        return _ok((yield Http("POST", self.controller_url + route, body, headers={routes.SECRET_HEADER: secret},
                               timeout=timeout)))

    def pools(self) -> Call:
        """Every host's memory pool: limit, bytes used, members and their states."""
        try:
            return _ok((yield Http("GET", self.controller_url + routes.FLEET_POOLS)))["pools"]
        except _ERRORS:
            return []

    def heart_beat(self, worker_url: str, queue_length: int, secret: str) -> Call:
        """False when the controller does not know this worker (it must register again)."""
        r = yield Http("POST", self.controller_url + routes.RECEIVE_HEART_BEAT,
                       {"worker_name": worker_url, "queue_length": queue_length},
                       headers={routes.SECRET_HEADER: secret})
        return bool(_ok(r).get("exist"))

    def wait_registered(self, names, timeout: float, every: float = 0.5,
                        on_poll: Callable[[set[str]], bool] | None = None) -> Call:
        """Poll until every name is registered or `timeout` passes; returns the registered set.
        `on_poll(registered)` may return True to stop early (e.g. a process died)."""
        t0 = time.monotonic()
        while True:
            got = yield from _Calls.registered(self)
            if set(names) <= got or time.monotonic() - t0 >= timeout or (on_poll and on_poll(got)):
                return got
            yield Sleep(every)


def _refusal(status: int, body: bytes) -> dict:
    """A worker that refused a stream (its 4xx, or its 503: no memory for its model now) as one
    error frame, which every reader of the stream handles already."""
    try:
        frame = json.loads(body)
    except ValueError:
        frame = None
    if isinstance(frame, dict) and frame.get("error_code"):
        return frame
    return {"text": f"the worker answered HTTP {status}: {body[:300].decode(errors='replace')}",
            "error_code": UNAVAILABLE if status == 503 else VALIDATION_ERROR}


def _stream_request(addr: str, params: dict, timeout: float, headers: dict | None) -> dict:
    return {"method": "POST", "url": addr + routes.WORKER_GENERATE_STREAM, "json": params, "headers": headers,
            "timeout": httpx.Timeout(timeout, connect=5)}


class _Stepper:
    """Walks a call: its current request or pause (`op`), and what it returned once it is done."""

    def __init__(self, gen: Call):
        self.gen, self.op, self.value = gen, next(gen), None

    def done_after(self, result: Any, error: Exception | None) -> bool:
        """Hand the call the outcome of `op` (a failure is raised into it, where it yielded)."""
        try:
            self.op = self.gen.throw(error) if error is not None else self.gen.send(result)
            return False
        except StopIteration as done:
            self.value = done.value
            return True


def _blocking(call: Callable[..., Call]):
    def run(self, *args, **kwargs):
        steps = _Stepper(call(self, *args, **kwargs))
        while not steps.done_after(*self._attempt(steps.op)):
            pass
        return steps.value
    run.__name__, run.__doc__ = call.__name__, call.__doc__
    return run


def _async(call: Callable[..., Call]):
    async def run(self, *args, **kwargs):
        steps = _Stepper(call(self, *args, **kwargs))
        while not steps.done_after(*(await self._attempt(steps.op))):
            pass
        return steps.value
    run.__name__, run.__doc__ = call.__name__, call.__doc__
    return run


CALLS = [name for name, fn in vars(_Calls).items() if callable(fn) and not name.startswith("_")]


class FleetClient:
    """Blocking face: every call of `_Calls` returns its result."""

    def __init__(self, controller_url: str, timeout: float = 5, secret: str | None = None):
        self.controller_url = controller_url.rstrip("/")
        self.timeout, self.secret = timeout, secret
        self.http = httpx.Client(timeout=timeout, limits=LIMITS)

    def close(self) -> None:
        self.http.close()

    def _attempt(self, op: Http | Sleep) -> tuple[httpx.Response | None, Exception | None]:
        try:
            if isinstance(op, Sleep):
                return time.sleep(op.seconds), None
            return self.http.request(op.method, op.url, json=op.json, headers=op.headers,
                                     timeout=op.timeout or self.timeout), None
        except Exception as e:
            return None, e

    def stream(self, addr: str, params: dict, timeout: float = 600) -> Iterator[dict]:
        """The worker's frames (cumulative text, error_code, usage, finish_reason) as they come."""
        dec = FrameDecoder()
        with self.http.stream(**_stream_request(addr, params, timeout, self._fleet())) as r:
            if r.status_code != 200:
                yield _refusal(r.status_code, r.read())
                return
            for chunk in r.iter_raw():
                yield from dec.feed(chunk)


class AsyncFleetClient:
    """Async face: every call of `_Calls` is a coroutine."""

    def __init__(self, controller_url: str, timeout: float = 5, secret: str | None = None):
        self.controller_url = controller_url.rstrip("/")
        self.timeout, self.secret = timeout, secret
        self.http = httpx.AsyncClient(timeout=timeout, limits=LIMITS)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _attempt(self, op: Http | Sleep) -> tuple[httpx.Response | None, Exception | None]:
        try:
            if isinstance(op, Sleep):
                return await asyncio.sleep(op.seconds), None
            return await self.http.request(op.method, op.url, json=op.json, headers=op.headers,
                                           timeout=op.timeout or self.timeout), None
        except Exception as e:
            return None, e

    async def stream(self, addr: str, params: dict, timeout: float = 600) -> AsyncIterator[dict]:
        dec = FrameDecoder()
        async with self.http.stream(**_stream_request(addr, params, timeout, self._fleet())) as r:
            if r.status_code != 200:
                yield _refusal(r.status_code, await r.aread())
                return
            async for chunk in r.aiter_raw():
                for f in dec.feed(chunk):
                    yield f


for _name in CALLS:
    setattr(FleetClient, _name, _blocking(getattr(_Calls, _name)))
    setattr(AsyncFleetClient, _name, _async(getattr(_Calls, _name)))
for _face in (FleetClient, AsyncFleetClient):
    _face._fleet = _Calls._fleet
