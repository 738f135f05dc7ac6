"""FastAPI app for FastChat's worker protocol, built per worker.

FastChat's `base_model_worker` keeps one module-global `app` and `worker`. We serve the same
endpoints (the ones FastChat's controller, API server and web UI call) from a factory that keeps
the worker on `app.state`, so any worker object, FastChat's `ModelWorker` or our llama.cpp
worker, plugs in. The worker is built asleep; a request that needs the model waits while it loads
within the host's memory pool (deploy/worker/residency.py), and the pool may ask an idle worker to
unload (`/fleet_unload`, with the fleet secret). A worker of a fleet answers what costs compute
(generation, embeddings, token counts) only to the fleet: requests carrying the fleet secret, as its
API server and web UI send them; a web page of any origin, or anyone else on the machine, cannot make
it generate.
"""
from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from deploy.backends.base import FleetWorker
from deploy.registry.host import memory_of
from deploy.wire import routes
from deploy.wire.bounded_body import BoundedBody, body_limit
from deploy.wire.client import AsyncFleetClient
from deploy.wire.errors import ClientError, unavailable
from deploy.wire.frames import UNAVAILABLE, VALIDATION_ERROR
from deploy.wire.strict_json import parse_object
from deploy.wire.worker_params import CountParams, EmbedParams, GenerateParams, RenderParams, checked
from deploy.worker.membership import ControllerPool, Joining, LocalPool, stay_registered
from deploy.worker.residency import ASLEEP, LOADED, LoadFailed, NoMemory, Residency

log = logging.getLogger("deploy.worker.app")


async def _call(fn, *args):
    """Await async worker methods; run blocking ones off the event loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.to_thread(fn, *args)


def create_worker_app(worker: FleetWorker, info: dict | None = None, on_shutdown=None,
                      joining: Joining | None = None, load_wait: float = 60.0, idle_unload: float | None = None,
                      keep_loaded: bool = False) -> FastAPI:
    """`info` (backend, cores, budget, ...) is served at /fleet_info for reports and the web UI;
    FastChat's own clients never call it. `on_shutdown` runs when uvicorn shuts down gracefully:
    uvicorn then re-raises SIGTERM, so atexit handlers would never run. Without `joining` the app
    serves without a controller, its model loaded at start (tests of the app alone)."""
    client = AsyncFleetClient(joining.controller_url, timeout=5) if joining else None
    pool = ControllerPool(client, joining) if joining else LocalPool()
    residency = Residency(worker.load, worker.unload, pool, load_wait, idle_unload, keep_loaded)

    async def preload() -> None:
        """Load at start while the pool has room; a model kept loaded waits for room."""
        while True:
            try:
                await residency.ensure_loaded(evict=keep_loaded, wait=0)
                return
            except NoMemory:
                if not keep_loaded:
                    log.info("not loaded at start: the memory pool is full; the first request loads it")
                    return
            except LoadFailed:
                return
            await asyncio.sleep(2)

    def share() -> dict:
        """This worker's pool state now, sent with every registration (a pin set since start too)."""
        loaded = residency.state == LOADED
        return {"state": "loaded" if loaded else "asleep", "idle_bytes": 0 if loaded else residency.idle_bytes(),
                "keep_loaded": residency.keep_loaded}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.semaphore = asyncio.Semaphore(worker.limit_worker_concurrency)
        tasks = [asyncio.create_task(residency.idle_loop())]
        if joining:  # register only once we are serving, so no request is routed to us too early
            tasks.append(asyncio.create_task(stay_registered(
                worker, client, joining, pool, share, lambda: tasks.append(asyncio.create_task(preload())))))
        else:
            tasks.append(asyncio.create_task(preload()))
        yield
        for t in tasks:
            t.cancel()
        close = getattr(worker, "close", None)
        if close:
            await _call(close)
        if client:
            await client.aclose()
        if on_shutdown:
            on_shutdown()

    app = FastAPI(lifespan=lifespan, title=f"FastChat worker: {', '.join(worker.model_names)}")
    # Its routes are reachable on loopback by anyone: the same body bound as the API gate's, so no
    # request makes the worker tokenise (and allocate for) more than its context can hold.
    app.add_middleware(BoundedBody, limit=body_limit(worker.context_len),
                       why=f"enough for this model's context of {worker.context_len} tokens. Fix: send a shorter "
                           f"prompt")
    app.state.worker = worker
    app.state.info = info or {}
    app.state.residency = residency

    def w(request: Request):
        return request.app.state.worker

    def fleet_only(request: Request) -> None:
        """401 unless the request carries the fleet secret (a worker serving without a fleet, as in
        tests of the app alone, has none to ask for)."""
        given = request.headers.get(routes.SECRET_HEADER, "")
        if joining and not hmac.compare_digest(given.encode(), joining.secret.encode()):
            raise ClientError(401, "this route serves the fleet only: send the fleet secret in the "
                                   f"{routes.SECRET_HEADER} header (the API server and the web UI do). Fix: ask the "
                                   "fleet's API server instead")

    async def params(request: Request, model=GenerateParams) -> dict:
        fleet_only(request)
        return checked(model, await request.body(), request.app.state.worker.context_len,
                       frozenset(request.app.state.info.get("features", ())))

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError):
        """FastChat's worker error shape, which its API server and web UI read."""
        code = UNAVAILABLE if e.status == 503 else 40101 if e.status == 401 else VALIDATION_ERROR
        return JSONResponse({"text": e.message, "error_code": code}, status_code=e.status, headers=e.headers)

    async def in_memory() -> None:
        """Wait until the model is loaded (a request in flight from here: the caller leaves)."""
        residency.enter()
        try:
            await residency.ensure_loaded()
        except (NoMemory, LoadFailed) as e:
            residency.leave()
            what = "could not get memory" if isinstance(e, NoMemory) else "failed to load"
            raise unavailable(f"model '{worker.model_names[0]}' {what}: {e}",
                              "no_memory" if isinstance(e, NoMemory) else "load_failed") from None

    async def with_model(fn, *args):
        await in_memory()
        try:
            return await _call(fn, *args)
        finally:
            residency.leave()

    @app.post(routes.WORKER_GENERATE_STREAM)
    async def generate_stream(request: Request):
        wk = w(request)
        p = await params(request)
        await in_memory()
        await wk.semaphore.acquire()

        async def body():
            try:
                gen = wk.generate_stream_gate(p)
                if inspect.isasyncgen(gen):
                    async for chunk in gen:
                        yield chunk
                else:  # FastChat's transformers worker: a blocking generator
                    it = iter(gen)
                    sentinel = object()
                    while (chunk := await asyncio.to_thread(next, it, sentinel)) is not sentinel:
                        yield chunk
            finally:
                wk.semaphore.release()
                residency.leave()

        return StreamingResponse(body())

    @app.post(routes.WORKER_GENERATE)
    async def generate(request: Request):
        wk = w(request)
        p = await params(request)
        async with wk.semaphore:
            return JSONResponse(await with_model(wk.generate_gate, p))

    @app.post(routes.WORKER_GET_EMBEDDINGS)
    async def get_embeddings(request: Request):
        wk = w(request)
        p = await params(request, EmbedParams)
        if "embeddings" not in request.app.state.info.get("features", ()) or not hasattr(wk, "get_embeddings"):
            raise ClientError(400, f"model '{wk.model_names[0]}' serves no embeddings. Fix: ask a model that does "
                                   f"(its /fleet_info lists 'embeddings' among its features).")
        async with wk.semaphore:
            return JSONResponse(await with_model(wk.get_embeddings, p))

    @app.post(routes.WORKER_GET_STATUS)
    async def get_status(request: Request):
        """The controller's health check. A worker that cannot serve now (an upstream that does not
        answer) says why with a 503, and the controller takes it out of routing until it can."""
        wk = w(request)
        problem = getattr(wk, "health_problem", lambda: None)()
        if problem:
            return JSONResponse({"text": problem, "error_code": UNAVAILABLE}, status_code=503)
        return wk.get_status()

    @app.post(routes.COUNT_TOKEN)
    async def count_token(request: Request):
        return await with_model(w(request).count_token, await params(request, CountParams))

    @app.post(routes.WORKER_RENDER)
    async def render(request: Request):
        """The prompt of the model's own template for a conversation (chat_template = "auto")."""
        wk = w(request)
        p = await params(request, RenderParams)
        if not hasattr(wk, "render"):
            raise ClientError(400, f"model '{wk.model_names[0]}' renders no template of its own here. Fix: give its "
                                   f"entry a chat_template name (python -m deploy templates)")
        try:
            return {**await with_model(wk.render, [m for m in p["messages"]], p.get("chat_template_kwargs") or {}),
                    "error_code": 0}
        except ValueError as e:
            raise ClientError(400, str(e)) from None

    @app.post(routes.WORKER_TOKENIZE)
    async def tokenize(request: Request):
        """The ids the model is fed for a prompt (a chat prompt's parts, or a raw prompt)."""
        wk = w(request)
        if not hasattr(wk, "prompt_ids"):
            raise ClientError(400, f"model '{wk.model_names[0]}' is served by another server, whose token ids this "
                                   f"fleet does not see. Fix: ask its own server's tokenizer.")
        return {"tokens": await with_model(wk.prompt_ids, await params(request, CountParams)), "error_code": 0}

    @app.post(routes.WORKER_GET_CONV_TEMPLATE)
    async def get_conv(request: Request):
        """FastChat's answer, and beside it the entry's thinking default (the API applies it)."""
        return {**w(request).get_conv_template(), "thinking": request.app.state.info.get("thinking")}

    @app.api_route(routes.FLEET_INFO, methods=["GET", "POST"])
    async def fleet_info(request: Request):
        m = memory_of()
        live = getattr(w(request), "live_info", dict)()  # what a backend reports of itself now
        return {**request.app.state.info, **live, "rss": m["rss"], "rss_anon": m["anon"], "rss_file": m["file"],
                "state": residency.state, "pinned": residency.keep_loaded, "in_flight": residency.in_flight,
                "load_seconds": residency.load_seconds,
                "load_error": residency.reason, "rss_asleep": residency.rss_asleep,
                "idle_s": round(time.monotonic() - residency.last_used, 1) if residency.last_used else None}

    def residency_state() -> dict:
        return {"state": residency.state, "pinned": residency.keep_loaded, "in_flight": residency.in_flight,
                "load_error": residency.reason}

    @app.post(routes.WORKER_UNLOAD)
    async def fleet_unload(request: Request):
        """The pool asks this worker to give its memory back; only if idle, only with the fleet secret."""
        given = request.headers.get(routes.SECRET_HEADER, "")
        if not joining or not hmac.compare_digest(given.encode(), joining.secret.encode()):
            return JSONResponse({"text": "this route needs the fleet secret", "error_code": 40101}, status_code=401)
        unloaded = await residency.unload("the memory pool needs the room")
        return {"unloaded": unloaded, "idle_bytes": residency.idle_bytes(), "state": residency.state}

    @app.post(routes.WORKER_LOAD)
    async def fleet_load(request: Request):
        """Load now (a user asked), if the pool has room at once (it may unload idle models for it);
        else the pool's reason."""
        fleet_only(request)
        try:
            await residency.ensure_loaded(evict=True, wait=0)
        except (NoMemory, LoadFailed) as e:
            return {"ok": False, "reason": str(e), **residency_state()}
        return {"ok": True, "reason": "", **residency_state()}

    @app.post(routes.WORKER_RELEASE)
    async def fleet_release(request: Request):
        """Unload now (a user asked), unless it is pinned or answering: then why not."""
        fleet_only(request)
        if residency.state == ASLEEP:
            return {"ok": True, "reason": "", **residency_state()}
        if residency.keep_loaded:
            return {"ok": False, "reason": "it is pinned (kept in memory); unpin it first", **residency_state()}
        if not await residency.unload("asked to"):
            busy = residency.in_flight
            return {"ok": False, "reason": f"it is answering {busy} request(s); unload it once they end" if busy else
                    f"it is {residency.state}; try again in a moment", **residency_state()}
        await pool.released(residency.idle_bytes())
        return {"ok": True, "reason": "", **residency_state()}

    @app.post(routes.WORKER_PIN)
    async def fleet_pin(request: Request):
        """{"pinned": bool}: never unloaded (to make room, or when idle) while pinned."""
        fleet_only(request)
        pinned = parse_object(await request.body()).get("pinned")
        if not isinstance(pinned, bool):
            raise ClientError(400, "'pinned' must be true or false")
        residency.keep_loaded = pinned
        await pool.pin(pinned)
        return {"ok": True, "reason": "", **residency_state()}

    @app.post(routes.MODEL_DETAILS)
    async def model_details(request: Request):
        return {"context_length": w(request).context_len}

    return app
