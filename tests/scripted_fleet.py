"""A controller and one worker in one small app on a loopback port, for fast tests of the API
server's own work: it serves the routes the API server calls (the worker's address, its template,
facts and token count) and answers every generation with the frames a test scripts, at the pace it
scripts, so the real API app, over real HTTP, meets an answer the test chose (a call cut off by
max_tokens, a slow first token) without a model. What the API sent is kept for the test to read."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastchat.conversation import get_conv_template

from deploy.api.app import ApiSettings, build_app
from deploy.api.gate import GateSettings
from deploy.registry import templates  # noqa: F401  (registers ours)
from deploy.wire import routes
from tests.harness import free_port


class ScriptedFleet:
    def __init__(self, model: str = "m", template: str = "qwen2.5", context: int = 4096,
                 features: tuple[str, ...] = ("tools", "json")):
        self.model, self.template, self.context, self.features = model, template, context, features
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scripts: list[list[tuple[float, dict]]] = []  # per answer: (seconds before the frame, the frame)
        self.sent: list[dict] = []                 # the generation requests the API made
        self.prompt_tokens = 17
        self._servers = [Served(self._app(), self.port)]
        self.api_url = ""

    def answer(self, *texts: str, finish: str = "stop", pause: float = 0.0, first_pause: float = 0.0) -> None:
        """Script the next answer: cumulative texts, one frame each, the last with `finish`. Answers
        scripted in a row are given in order; the last one is given again while no other waits."""
        frames = []
        for i, text in enumerate(texts):
            frames.append((first_pause if i == 0 else pause, {
                "text": text, "error_code": 0, "finish_reason": finish if i == len(texts) - 1 else None,
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": i + 1,
                          "total_tokens": self.prompt_tokens + i + 1}}))
        self.scripts.append(frames)

    def _app(self) -> FastAPI:
        app = FastAPI()
        m = self.model

        @app.post(routes.LIST_MODELS)
        async def list_models():
            return {"models": [m]}

        @app.post(routes.GET_WORKER_ADDRESS)
        async def address(request: Request):
            return {"address": self.url if (await request.json())["model"] == m else ""}

        @app.get(routes.FLEET_WORKERS)
        async def workers():
            return {"workers": [{"worker": self.url, "models": [m], "healthy": True, "queue_length": 0}]}

        @app.get(routes.FLEET_INFO)
        async def info():
            return {"backend": "scripted", "features": list(self.features)}

        @app.post(routes.WORKER_GET_CONV_TEMPLATE)
        async def conv():
            c = get_conv_template(self.template)
            return {"conv": {"name": c.name, "system_template": c.system_template, "system_message": c.system_message,
                             "roles": c.roles, "messages": [], "offset": 0, "sep_style": int(c.sep_style),
                             "sep": c.sep, "sep2": c.sep2, "stop_str": c.stop_str, "stop_token_ids": c.stop_token_ids}}

        @app.post(routes.MODEL_DETAILS)
        async def details():
            return {"context_length": self.context}

        @app.post(routes.COUNT_TOKEN)
        async def count():
            return {"count": self.prompt_tokens, "error_code": 0}

        @app.post(routes.WORKER_GENERATE_STREAM)
        async def generate(request: Request):
            self.sent.append(await request.json())
            script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]

            async def frames():
                for pause, frame in script:
                    await asyncio.sleep(pause)
                    yield json.dumps(frame).encode() + b"\0"
            return StreamingResponse(frames())

        return app

    def __enter__(self):
        """This fleet, and the real API server (gate, metrics and all) in front of it at api_url."""
        port = free_port()
        self._servers.append(Served(build_app(ApiSettings(self.url, GateSettings())), port))
        self.api_url = f"http://127.0.0.1:{port}"
        for s in self._servers:
            s.start()
        return self

    def __exit__(self, *exc):
        for s in self._servers:
            s.stop()


class Served:
    """An ASGI app served by uvicorn in a thread of this process, on a loopback port."""

    def __init__(self, app, port: int):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > 10:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

