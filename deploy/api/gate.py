"""The request gate: one ASGI layer in front of the API app, deciding for every route from the one
route table (deploy/api/routes.py), in this order:

1. API keys: with keys configured, every route (the OpenAI routes, FastChat's /api/v1/*, the docs,
   /openapi.json) needs `Authorization: Bearer KEY`; a 401 comes before any body is read.
2. A bounded body: Content-Length over the limit gets 413 before a byte is read; a body that
   grows past it, 413 as soon as it does; a client that sends it too slowly or lies about its
   length, 408 after `read_timeout` (nothing holds a connection open waiting for bytes).
3. Strict JSON (deploy/wire/strict_json.py) for every body; each route's request model then
   checks its fields (deploy/api/protocol.py).
4. A cap on generation requests in flight (429 with Retry-After beyond it), and Prometheus
   metrics of every generation request (deploy/api/metrics.py), served at /metrics.
5. Every error response, ours, Starlette's or a crash's, leaves as OpenAI's JSON shape with the
   status OpenAI would use (deploy/wire/errors.py); a worker that went away is a 503.

Per-request notes for the metrics (the model, the tokens generated, when the first of them came:
deploy/api/streaming.py) travel in the ASGI scope's state, which the route handlers see as
`request.state.notes`.

2. alone (deploy/wire/bounded_body.py) guards the workers' and the controller's own routes.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass

import httpx

from deploy.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from deploy.api.routes import ANTHROPIC, GENERATION, RouteKinds
from deploy.api.streaming import Notes
from deploy.wire.bounded_body import body_limit, read_body, replay, send_error
from deploy.wire.client import ModelUnavailable
from deploy.wire.errors import RETRY_AFTER_S, ClientError, as_anthropic, error_body, reshape
from deploy.wire.strict_json import parse_object

log = logging.getLogger("deploy.api.gate")


@dataclass(frozen=True)
class GateSettings:
    api_keys: frozenset[str] = frozenset()
    body_limit: int = body_limit(4096)
    read_timeout: float = 5.0
    max_in_flight: int = 64
    cors: bool = False  # let OPTIONS preflights (which carry no key) through to the CORS layer


METRICS_PATH = "/metrics"

def _model_of(body, path: str) -> str:
    """The model a request names, for the metrics, before its route has checked it."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return body["model"][:256]
    parts = path.split("/")
    return parts[3] if path.startswith("/v1/engines/") and len(parts) > 3 else ""


class ApiGate:
    """The ASGI app uvicorn serves: the gate, then the API app. With `metrics`, it records every
    generation request and serves /metrics (behind the keys, like every route)."""

    def __init__(self, app, settings: GateSettings, kinds: RouteKinds, metrics=None):
        self.app, self.settings, self.kinds, self.metrics = app, settings, kinds, metrics
        self.in_flight = 0  # generation requests being answered now

    def _authorised(self, scope) -> bool:
        keys = self.settings.api_keys
        if not keys:
            return True
        if self.settings.cors and scope["method"] == "OPTIONS":
            return True
        headers = dict(scope.get("headers", []))
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        token = token or headers.get(b"x-api-key", b"").decode("latin-1").strip()  # Anthropic's clients send this
        return bool(token) and any(hmac.compare_digest(token, k) for k in keys)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        notes = Notes()
        scope.setdefault("state", {})["notes"] = notes
        generation = self.kinds.kind(scope["path"]) == GENERATION
        if self.kinds.errors(scope["path"]) == ANTHROPIC:
            send = _anthropic_errors(send)
        if self.metrics is None or not generation:
            return await self._gated(scope, receive, send, generation)
        t0, seen = time.monotonic(), {"status": 500}

        async def observing(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self._gated(scope, receive, observing, generation)
        finally:
            ttft = None if notes.first_token_at is None else notes.first_token_at - t0
            self.metrics.record(notes.model, scope["path"], seen["status"], time.monotonic() - t0, ttft,
                                notes.completion_tokens)

    async def _gated(self, scope, receive, send, generation: bool):
        s = self.settings
        try:
            if not self._authorised(scope):
                raise ClientError(401, "missing or wrong API key. Fix: send 'Authorization: Bearer KEY' (or "
                                       "'x-api-key: KEY') with a key from the api_keys_file named in "
                                       "model_paths.toml.",
                                  code="invalid_api_key", kind="authentication_error",
                                  headers={"WWW-Authenticate": "Bearer"})
            if self.metrics is not None and scope["path"] == METRICS_PATH and scope["method"] == "GET":
                body = await self.metrics.render()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", METRICS_CONTENT_TYPE.encode()),
                                        (b"content-length", str(len(body)).encode())]})
                return await send({"type": "http.response.body", "body": body})
            if scope["method"] == "POST":
                raw, messages = await read_body(scope, receive, s.body_limit, s.read_timeout)
                if raw and messages[-1]["type"] == "http.request":
                    scope["state"]["notes"].model = _model_of(parse_object(raw), scope["path"])
                receive = replay(messages, receive)
            if generation and self.in_flight >= s.max_in_flight:
                raise ClientError(429, f"{self.in_flight} requests are in progress, the most this server takes at once. "
                                       f"Retry in a moment.", code="too_many_requests", kind="rate_limit_error",
                                  headers={"Retry-After": "1"})
        except ClientError as e:
            return await send_error(send, e)
        if generation:
            self.in_flight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            if generation:
                self.in_flight -= 1

    async def _serve(self, scope, receive, send):
        """Pass successful responses through as they stream; hold an error response until it is
        complete and send it reshaped. An exception escaping the app (Starlette has then sent a
        plain-text 500) is logged and answered in the same JSON shape: a 503 with Retry-After when
        a worker did not answer (the one place that mapping is made), else a 500."""
        held: dict = {}

        async def shaping_send(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.update(start=message, body=b"")
                return
            if message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                return
            await send(message)

        crashed = None
        try:
            await self.app(scope, receive, shaping_send)
        except Exception as e:  # a worker that went away, or our bug: never the client's
            crashed = e
            if _is_unreachable(e):
                log.warning("%s %s: a worker did not answer (%s: %s)", scope["method"], scope["path"],
                            type(e).__name__, e)
            else:
                log.exception("%s %s failed", scope["method"], scope["path"])
        if "start" not in held:
            if crashed is not None:  # crashed before any response: answer for it
                status, body = 500, error_body(f"internal error: {type(crashed).__name__}", "server_error")
                if _is_unreachable(crashed):
                    status, body = _unreachable(crashed)
                await _send_shaped(send, status, body, [])
            return
        status, body = reshape(held["start"]["status"], held["body"])
        if crashed is not None and _is_unreachable(crashed):
            status, body = _unreachable(crashed)
        headers = [(k, v) for k, v in held["start"].get("headers", [])
                   if k not in (b"content-length", b"content-type")]
        await _send_shaped(send, status, body, headers)


def _anthropic_errors(send):
    """`send`, with every error response (complete, as the gate sends them) in Anthropic's shape."""
    status = {"code": 200}

    async def shaped(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
            if status["code"] >= 400:
                status["start"] = message
                return
        elif message["type"] == "http.response.body" and status["code"] >= 400:
            body = as_anthropic(status["code"], message.get("body", b""))
            headers = [(k, v) for k, v in status["start"].get("headers", []) if k != b"content-length"]
            await send({**status["start"], "headers": headers + [(b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        await send(message)
    return shaped


def _unreachable(e: BaseException) -> tuple[int, bytes]:
    return 503, error_body(f"the model's worker did not answer ({type(e).__name__}); retry in a few seconds.",
                           "model_unavailable", code="worker_unreachable")


def _is_unreachable(e: BaseException) -> bool:
    """A worker that went away between routing and the request to it."""
    return isinstance(e, (httpx.TransportError, asyncio.TimeoutError, ConnectionError, ModelUnavailable))


async def _send_shaped(send, status: int, body: bytes, headers: list) -> None:
    headers = headers + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503 and not any(k == b"retry-after" for k, _ in headers):
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
