"""FastAPI app for FastChat's worker protocol, built per worker.

FastChat's `base_model_worker` keeps one module-global `app` and `worker`.
We serve the same endpoints (the ones FastChat's controller, API server and
web UI call) from a factory that keeps the worker on `app.state`, so any
worker object, FastChat's `ModelWorker` or our llama.cpp worker, plugs in.
"""
from __future__ import annotations

import asyncio
import inspect
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from deploy import fleet_client as routes


async def _call(fn, *args):
    """Await async worker methods; run blocking ones off the event loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await asyncio.to_thread(fn, *args)


def create_worker_app(worker, info: dict | None = None, on_shutdown=None, register: bool = True) -> FastAPI:
    """`info` (backend, cores, budget, ...) is served at /fleet_info for reports and the web UI;
    FastChat's own clients never call it. `on_shutdown` runs when uvicorn shuts down gracefully:
    uvicorn then re-raises SIGTERM, so atexit handlers would never run. `register=False` serves
    without joining a controller (tests of the app alone)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.semaphore = asyncio.Semaphore(worker.limit_worker_concurrency)
        if register:
            # Register only once we are serving, so no request is routed to us too early.
            await asyncio.to_thread(worker.init_heart_beat)
        yield
        close = getattr(worker, "close", None)
        if close:
            await _call(close)
        if on_shutdown:
            on_shutdown()

    app = FastAPI(lifespan=lifespan, title=f"FastChat worker: {', '.join(worker.model_names)}")
    app.state.worker = worker
    app.state.info = info or {}

    def w(request: Request):
        return request.app.state.worker

    @app.post(routes.WORKER_GENERATE_STREAM)
    async def generate_stream(request: Request):
        wk = w(request)
        params = await request.json()
        await wk.semaphore.acquire()

        async def body():
            try:
                gen = wk.generate_stream_gate(params)
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
        params = await request.json()
        async with wk.semaphore:
            out = await _call(wk.generate_gate, params)
        return JSONResponse(out)

    @app.post(routes.WORKER_GET_STATUS)
    async def get_status(request: Request):
        return w(request).get_status()

    @app.post(routes.COUNT_TOKEN)
    async def count_token(request: Request):
        return await _call(w(request).count_token, await request.json())

    @app.post(routes.WORKER_GET_CONV_TEMPLATE)
    async def get_conv(request: Request):
        return w(request).get_conv_template()

    @app.api_route(routes.FLEET_INFO, methods=["GET", "POST"])
    async def fleet_info(request: Request):
        return request.app.state.info

    @app.post(routes.MODEL_DETAILS)
    async def model_details(request: Request):
        return {"context_length": w(request).context_len}

    return app
