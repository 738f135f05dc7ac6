"""FastAPI app for FastChat's worker protocol, built per worker.

FastChat's `base_model_worker` keeps one module-global `app` and `worker`.
We serve the same endpoints (the ones FastChat's controller, API server and
web UI call) from a factory that keeps the worker on `app.state`, so any
worker object, FastChat's `ModelWorker` or our llama.cpp worker, plugs in.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from deploy.backends.base import FleetWorker
from deploy.registry.host import memory_of
from deploy.wire import routes
from deploy.wire.bounded_body import BoundedBody, body_limit
from deploy.wire.client import AsyncFleetClient
from deploy.wire.errors import ClientError
from deploy.wire.frames import VALIDATION_ERROR
from deploy.wire.worker_params import CountParams, EmbedParams, GenerateParams, checked

log = logging.getLogger("deploy.worker.app")


async def _call(fn, *args):
    """Await async worker methods; run blocking ones off the event loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.to_thread(fn, *args)


HEART_BEAT_INTERVAL = 10.0


async def stay_registered(worker, client: AsyncFleetClient, worker_url: str, secret: str,
                          interval: float = HEART_BEAT_INTERVAL) -> None:
    """Register with the controller (with the fleet secret), then heart-beat; register again when
    the controller does not know us (it restarted, or dropped us while we could not answer).
    Replaces FastChat's thread, which blocks, sends no secret and gives up on the first error."""
    registered = False
    async with httpx.AsyncClient(timeout=2) as own:  # join only once we answer ourselves
        for _ in range(60):
            try:
                if (await own.get(worker_url + routes.FLEET_INFO)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    while True:
        try:
            if not registered:
                await client.register_worker(worker_url, worker.get_status(), secret)
                log.info("registered with the controller at %s as %s", client.controller_url, worker_url)
                registered = True
            else:
                registered = await client.heart_beat(worker_url, worker.get_queue_length(), secret)
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
        await asyncio.sleep(interval if registered else 1.0)


def create_worker_app(worker: FleetWorker, info: dict | None = None, on_shutdown=None, controller_url: str | None = None,
                      worker_url: str | None = None, secret: str | None = None) -> FastAPI:
    """`info` (backend, cores, budget, ...) is served at /fleet_info for reports and the web UI;
    FastChat's own clients never call it. `on_shutdown` runs when uvicorn shuts down gracefully:
    uvicorn then re-raises SIGTERM, so atexit handlers would never run. Without `controller_url`
    the app serves without joining a controller (tests of the app alone)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.semaphore = asyncio.Semaphore(worker.limit_worker_concurrency)
        task = None
        if controller_url:
            # Register only once we are serving, so no request is routed to us too early.
            client = AsyncFleetClient(controller_url, timeout=5)
            task = asyncio.create_task(stay_registered(worker, client, worker_url, secret))
        yield
        if task:
            task.cancel()
        close = getattr(worker, "close", None)
        if close:
            await _call(close)
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

    def w(request: Request):
        return request.app.state.worker

    async def params(request: Request, model=GenerateParams) -> dict:
        return checked(model, await request.body(), request.app.state.worker.context_len,
                       frozenset(request.app.state.info.get("features", ())))

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError):
        """FastChat's worker error shape, which its API server and web UI read."""
        return JSONResponse({"text": e.message, "error_code": VALIDATION_ERROR}, status_code=e.status)

    @app.post(routes.WORKER_GENERATE_STREAM)
    async def generate_stream(request: Request):
        wk = w(request)
        p = await params(request)
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

        return StreamingResponse(body())

    @app.post(routes.WORKER_GENERATE)
    async def generate(request: Request):
        wk = w(request)
        p = await params(request)
        async with wk.semaphore:
            out = await _call(wk.generate_gate, p)
        return JSONResponse(out)

    @app.post(routes.WORKER_GET_EMBEDDINGS)
    async def get_embeddings(request: Request):
        wk = w(request)
        p = await params(request, EmbedParams)
        if "embeddings" not in request.app.state.info.get("features", ()) or not hasattr(wk, "get_embeddings"):
            raise ClientError(400, f"model '{wk.model_names[0]}' serves no embeddings. Fix: ask a model that does "
                                   f"(its /fleet_info lists 'embeddings' among its features).")
        async with wk.semaphore:
            return JSONResponse(await _call(wk.get_embeddings, p))

    @app.post(routes.WORKER_GET_STATUS)
    async def get_status(request: Request):
        return w(request).get_status()

    @app.post(routes.COUNT_TOKEN)
    async def count_token(request: Request):
        return await _call(w(request).count_token, await params(request, CountParams))

    @app.post(routes.WORKER_GET_CONV_TEMPLATE)
    async def get_conv(request: Request):
        return w(request).get_conv_template()

    @app.api_route(routes.FLEET_INFO, methods=["GET", "POST"])
    async def fleet_info(request: Request):
        m = memory_of()
        return {**request.app.state.info, "rss": m["rss"], "rss_anon": m["anon"], "rss_file": m["file"]}

    @app.post(routes.MODEL_DETAILS)
    async def model_details(request: Request):
        return {"context_length": w(request).context_len}

    return app
