"""The control plane: FastChat's controller, made safe to run on a shared machine or network.

FastChat's controller trusts whoever posts to it: any local process (or any web page, with a
`text/plain` POST that needs no preflight) can register a server of its own under an existing
model name and receive users' prompts; one slow or lying registration freezes it, because it
checks workers with blocking HTTP calls inside its async handlers; a dead worker stays in
routing until its heartbeat expires (about two minutes).

Here, built by a factory around a subclass of FastChat's `Controller` (its routing is kept):
- registration, heartbeats and refresh require the fleet secret in a header (401 otherwise, and
  nothing is registered); their fields are validated (400 naming the field);
- worker checks run off the event loop with httpx, 2 s at most, all workers at once;
- a health loop checks every worker every second: one whose process is gone leaves routing at
  once, one that answers too slowly twice in a row within about 4 s; it comes back when it
  answers again (or re-registers, as our workers do when restarted);
- read-only routes (list_models, get_worker_address, ...) stay open: FastChat's API server and
  the web UI use them.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from deploy import fastchat_compat
from deploy.control.pool_routes import PoolBoard, PoolShare
from deploy.control.pool_routes import router as pool_router
from deploy.wire import routes
from deploy.wire.access import same_host
from deploy.wire.bounded_body import BoundedBody

log = logging.getLogger("deploy.control")
SECRET_HEADER = routes.SECRET_HEADER
STATUS_TIMEOUT = 2.0        # seconds a worker has to answer a status check
CHECK_INTERVAL = 1.0        # seconds between health checks
FORGET_AFTER = 120.0        # an unhealthy worker is forgotten after this long (it re-registers when back)


class BadRequest(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(f"field '{field}': {problem}")


def _fastchat_controller_class():
    from fastchat.serve.controller import Controller

    return Controller


@dataclass
class Unhealthy:
    info: object
    since: float
    reason: str


class FleetController(_fastchat_controller_class()):
    """FastChat's routing (shortest queue), without its blocking checks and its stale entries."""

    def __init__(self):  # FastChat's __init__ starts a thread that sleeps forever: not needed here
        fastchat_compat.init_controller(self)
        self.unhealthy: dict[str, Unhealthy] = {}
        self.misses: dict[str, int] = {}  # failed checks in a row, per worker

    def register_worker(self, worker_name, check_heart_beat, worker_status, multimodal):
        self.unhealthy.pop(worker_name, None)
        return super().register_worker(worker_name, check_heart_beat, worker_status, multimodal)

    def get_worker_status(self, worker_name):  # the blocking upstream check must never run here
        raise RuntimeError("status checks are async in FleetController (check_status)")

    def check_failed(self, name: str, reason: str, process_gone: bool) -> None:
        """A refused connection (the process is gone) leaves routing at once; a slow or bad answer
        only when the next check fails too (a worker busy on shared cores may answer late once)."""
        self.misses[name] = self.misses.get(name, 0) + 1
        if process_gone or self.misses[name] >= 2:
            self.mark_unhealthy(name, reason)

    def mark_unhealthy(self, name: str, reason: str) -> None:
        info = self.worker_info.pop(name, None)
        if info is not None:
            log.warning("worker %s left routing: %s", name, reason)
            self.unhealthy[name] = Unhealthy(info, time.time(), reason)

    def mark_healthy(self, name: str, status: dict) -> None:
        self.misses.pop(name, None)
        bad = self.unhealthy.pop(name, None)
        if bad is not None:
            log.info("worker %s answers again: back in routing", name)
            self.worker_info[name] = bad.info
        if name in self.worker_info:
            self.worker_info[name].queue_length = status["queue_length"]

    def forget_old(self, now: float) -> list[str]:
        """Forget workers unhealthy for FORGET_AFTER; returns their names."""
        gone = [n for n, u in self.unhealthy.items() if now - u.since > FORGET_AFTER]
        for name in gone:
            del self.unhealthy[name]
            self.misses.pop(name, None)
        return gone


# ---- validation -------------------------------------------------------------------------------------
def _number(v, field: str, positive: bool = False, integer: bool = False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadRequest(field, f"must be a finite number, got {v!r}")
    if integer and int(v) != v:
        raise BadRequest(field, f"must be an integer, got {v!r}")
    if positive and v <= 0:
        raise BadRequest(field, f"must be positive, got {v!r}")
    if not positive and v < 0:
        raise BadRequest(field, f"must not be negative, got {v!r}")
    return int(v) if integer else v


def _worker_name(v) -> str:
    if not isinstance(v, str) or not v.startswith(("http://", "https://")) or len(v) > 512:
        raise BadRequest("worker_name", "must be the worker's http(s) address")
    return v.rstrip("/")


def validate_status(s, field: str = "worker_status") -> dict:
    if not isinstance(s, dict):
        raise BadRequest(field, "must be an object with model_names, speed and queue_length")
    names = s.get("model_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise BadRequest(f"{field}.model_names", "must be a non-empty list of model names")
    return {"model_names": names, "speed": _number(s.get("speed"), f"{field}.speed", positive=True),
            "queue_length": _number(s.get("queue_length"), f"{field}.queue_length", integer=True)}


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("(body)", "is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("(body)", "must be a JSON object")
    return body


# ---- the app ------------------------------------------------------------------------------------------
CONTROL_BODY_LIMIT = 64 * 1024  # a registration is well under 1 KiB


def create_controller_app(secret: str, check_interval: float = CHECK_INTERVAL,
                          status_timeout: float = STATUS_TIMEOUT) -> FastAPI:
    controller = FleetController()
    board = PoolBoard(secret)

    async def check_status(http: httpx.AsyncClient, name: str) -> dict | None:
        try:
            r = await http.post(name + routes.WORKER_GET_STATUS, timeout=status_timeout)
            r.raise_for_status()
            return validate_status(r.json(), "status")
        except (httpx.HTTPError, ValueError, BadRequest) as e:
            gone = isinstance(e, httpx.ConnectError)
            if gone:  # its process (and the memory it held) is gone: the pool has that room again
                board.pools.leave(name)
            elif board.pools.loading(name):  # busy reading its model: silent, not dead
                return None
            controller.check_failed(name, f"{type(e).__name__}: {e}"[:200], gone)
            return None

    async def check_all(http: httpx.AsyncClient) -> None:
        names = list(controller.worker_info) + list(controller.unhealthy)
        results = await asyncio.gather(*(check_status(http, n) for n in names))
        for name, status in zip(names, results):
            if status is not None:
                controller.mark_healthy(name, status)
        for name in controller.forget_old(time.time()):
            board.pools.leave(name)

    async def health_loop(http: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(check_interval)
            try:
                await check_all(http)
            except Exception:  # never let the loop die
                log.exception("health check failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with httpx.AsyncClient() as http:
            app.state.http = http
            task = asyncio.create_task(health_loop(http))
            yield
            task.cancel()

    app = FastAPI(title="fastchat-fleet controller", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.controller = controller
    app.state.pools = board
    app.include_router(pool_router)
    app.add_middleware(BoundedBody, limit=CONTROL_BODY_LIMIT,  # inside the guard: no body is read before it
                       why="far more than a registration or heartbeat needs. Fix: send only the worker "
                           "protocol's fields")

    def authorised(request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "")
        return hmac.compare_digest(given.encode(), secret.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """The secret is checked before anything is read: always for the routes that change the
        routing, and for every route when the client is on another machine (a controller bound
        beyond loopback for worker hosts must not tell the network where its workers are)."""
        mutating = request.url.path in routes.CONTROL_ROUTES
        if (mutating or not same_host(request.scope)) and not authorised(request):
            return JSONResponse({"error": f"this route needs the fleet secret in the {SECRET_HEADER} header"},
                                status_code=401)
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        return JSONResponse({"error": f"field '{'.'.join(map(str, first['loc'][1:])) or '(body)'}': {first['msg']}"},
                            status_code=400)

    @app.post(routes.REGISTER_WORKER)
    async def register_worker(request: Request):
        data = await _json_body(request)
        name = _worker_name(data.get("worker_name"))
        status = validate_status(data.get("worker_status"))
        multimodal = bool(data.get("multimodal", False))
        share = None
        if data.get("pool") is not None:
            try:
                share = PoolShare.model_validate(data["pool"])
            except ValidationError as e:
                first = e.errors()[0]
                raise BadRequest("pool." + ".".join(map(str, first["loc"])), first["msg"]) from None
        controller.register_worker(name, bool(data.get("check_heart_beat", True)), status, multimodal)
        if share is not None:
            board.pools.join(share.host, share.limit, share.member(name))
        return {"registered": name, "models": status["model_names"]}

    @app.post(routes.RECEIVE_HEART_BEAT)
    async def receive_heart_beat(request: Request):
        data = await _json_body(request)
        name = _worker_name(data.get("worker_name"))
        queue = _number(data.get("queue_length"), "queue_length", integer=True)
        return {"exist": controller.receive_heart_beat(name, queue)}

    @app.post(routes.REFRESH_ALL_WORKERS)
    async def refresh_all_workers(request: Request):
        await check_all(request.app.state.http)
        return {"models": sorted(controller.list_models())}

    @app.post(routes.LIST_MODELS)
    async def list_models():
        return {"models": sorted(controller.list_models())}

    @app.post(routes.LIST_MULTIMODAL_MODELS)
    async def list_multimodal_models():
        return {"models": sorted(controller.list_multimodal_models())}

    @app.post(routes.LIST_LANGUAGE_MODELS)
    async def list_language_models():
        return {"models": sorted(controller.list_language_models())}

    @app.post(routes.GET_WORKER_ADDRESS)
    async def get_worker_address(request: Request):
        data = await _json_body(request)
        model = data.get("model")
        if not isinstance(model, str):
            raise BadRequest("model", "must be a model name")
        return {"address": controller.get_worker_address(model)}

    @app.post(routes.WORKER_GET_STATUS)
    async def worker_get_status():
        """The controller as one worker (FastChat's hierarchical mode), from the last checks."""
        infos = list(controller.worker_info.values())
        return {"model_names": sorted({n for i in infos for n in i.model_names}),
                "speed": sum(i.speed for i in infos), "queue_length": sum(i.queue_length for i in infos)}

    @app.get(routes.TEST_CONNECTION)
    async def test_connection():
        return "success"

    @app.get(routes.FLEET_WORKERS)
    async def fleet_workers():
        """Every worker: its models, queue, last heartbeat, health, and whether its model is in
        memory (for `deploy status`)."""
        now = time.time()

        def row(name: str, info, healthy: bool, reason: str) -> dict:
            found = board.pools.of(name)
            return {"worker": name, "models": info.model_names, "queue_length": info.queue_length,
                    "heartbeat_age_s": round(now - info.last_heart_beat, 1), "healthy": healthy, "reason": reason,
                    "state": found[1].state if found else None, "load_error": found[1].reason if found else "",
                    "pinned": found[1].keep_loaded if found else False, "budget": found[1].budget if found else None}
        out = [row(n, i, True, "") for n, i in controller.worker_info.items()]
        out += [row(n, u.info, False, u.reason) for n, u in controller.unhealthy.items()]
        return {"workers": out}

    return app
