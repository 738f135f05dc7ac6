"""The request gate: one ASGI layer in front of FastChat's API server app, in this order:

1. API keys: with keys configured, every route (the OpenAI routes, FastChat's /api/v1/*, the docs,
   /openapi.json) needs `Authorization: Bearer KEY`; a 401 comes before any body is read.
2. A bounded body: Content-Length over the limit gets 413 before a byte is read; a body that
   grows past it, 413 as soon as it does; a client that sends it too slowly or lies about its
   length, 408 after `read_timeout` (nothing holds a connection open waiting for bytes).
3. Strict checks and normalisation of the bodies FastChat reads (deploy/api/validate.py); what
   FastChat drops is kept in `current_extras` for the patched FastChat code.
4. A cap on requests in flight (429 with Retry-After beyond it), and Prometheus metrics of what
   passes (deploy/api/metrics.py), served at /metrics.
5. Every error response, FastChat's, Starlette's or a crash's, leaves as OpenAI's JSON shape with
   the status OpenAI would use (deploy/api/errors.py).

2. alone (deploy/bounded_body.py) guards the workers' and the controller's own routes.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass

from deploy.api.errors import ClientError, error_body, reshape
from deploy.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from deploy.api.validate import Extras, check_body
from deploy.bounded_body import body_limit, read_body, replay, send_error, with_body

log = logging.getLogger("deploy.api.gate")

current_extras: ContextVar[Extras] = ContextVar("fleet_request_extras", default=Extras())

@dataclass
class GateSettings:
    api_keys: frozenset[str] = frozenset()
    body_limit: int = body_limit(4096)
    read_timeout: float = 5.0
    max_in_flight: int = 64
    cors: bool = False  # let OPTIONS preflights (which carry no key) through to the CORS layer


GENERATION_PREFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/engines/",
                       "/api/v1/chat/completions")


METRICS_PATH = "/metrics"
FIRST_TEXT = re.compile(rb'"(content|text)":"[^"]')  # a stream chunk that carries text


def _usage_tokens(body: bytes) -> int:
    try:
        return int(json.loads(body)["usage"]["completion_tokens"] or 0)
    except (ValueError, KeyError, TypeError):
        return 0


class ApiGate:
    """The ASGI app uvicorn serves: the gate, then FastChat's app. With `metrics`, it records
    every generation request and serves /metrics (behind the keys, like every route)."""

    def __init__(self, app, settings: GateSettings, metrics=None):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.in_flight = 0  # generation requests being answered now

    def _authorised(self, scope) -> bool:
        keys = self.settings.api_keys
        if not keys:
            return True
        if self.settings.cors and scope["method"] == "OPTIONS":
            return True
        auth = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        return scheme.lower() == "bearer" and any(hmac.compare_digest(token, k) for k in keys)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.metrics is None or not scope["path"].startswith(GENERATION_PREFIXES):
            return await self._gated(scope, receive, send, {})
        t0, seen = time.monotonic(), {"status": 500, "ttft": None, "sse": False, "json": b""}

        async def observing(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["sse"] = b"event-stream" in dict(message.get("headers", [])).get(b"content-type", b"")
            elif message["type"] == "http.response.body" and seen["status"] < 400:
                chunk = message.get("body", b"")
                if seen["sse"] and seen["ttft"] is None and FIRST_TEXT.search(chunk):
                    seen["ttft"] = time.monotonic() - t0
                elif not seen["sse"] and len(seen["json"]) < 1 << 20:
                    seen["json"] += chunk
            await send(message)

        try:
            await self._gated(scope, receive, observing, seen)
        finally:
            extras = seen.get("extras") or Extras()
            tokens = extras.completion_tokens if seen["sse"] else _usage_tokens(seen["json"])
            self.metrics.record(extras.model, scope["path"], seen["status"], time.monotonic() - t0,
                                seen["ttft"], tokens)

    async def _gated(self, scope, receive, send, seen: dict):
        s = self.settings
        try:
            if not self._authorised(scope):
                raise ClientError(401, "missing or wrong API key. Fix: send 'Authorization: Bearer KEY' with a key "
                                       "from the api_keys_file named in model_paths.toml.",
                                  code="invalid_api_key", kind="authentication_error",
                                  headers={"WWW-Authenticate": "Bearer"})
            if self.metrics is not None and scope["path"] == METRICS_PATH and scope["method"] == "GET":
                body = await self.metrics.render()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", METRICS_CONTENT_TYPE.encode()),
                                        (b"content-length", str(len(body)).encode())]})
                return await send({"type": "http.response.body", "body": body})
            extras = Extras()
            if scope["method"] == "POST":
                raw, messages = await read_body(scope, receive, s.body_limit, s.read_timeout)
                checked = check_body(scope["path"], raw) if messages[-1]["type"] == "http.request" else None
                if checked is not None:
                    body, extras = checked
                    scope = with_body(scope, body)
                    messages = [{"type": "http.request", "body": body, "more_body": False}]
                receive = replay(messages, receive)
            generation = scope["path"].startswith(GENERATION_PREFIXES)
            if generation and self.in_flight >= s.max_in_flight:
                raise ClientError(429, f"{self.in_flight} requests are in progress, the most this server takes at once. "
                                       f"Retry in a moment.", code="too_many_requests", kind="rate_limit_error",
                                  headers={"Retry-After": "1"})
        except ClientError as e:
            seen["extras"] = Extras(model=e.model)
            return await send_error(send, e)
        seen["extras"] = extras
        token = current_extras.set(extras)
        if generation:
            self.in_flight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            current_extras.reset(token)
            if generation:
                self.in_flight -= 1

    async def _serve(self, scope, receive, send):
        """Pass successful responses through as they stream; hold an error response until it is
        complete and send it reshaped. An exception escaping FastChat (Starlette has then sent a
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
        except Exception as e:  # a worker that went away, or FastChat's bug: never the client's
            crashed = e
            if _is_unreachable(e):
                log.warning("%s %s: a worker did not answer (%s: %s)", scope["method"], scope["path"],
                            type(e).__name__, e)
            else:
                log.exception("%s %s failed", scope["method"], scope["path"])
        if "start" not in held:
            if crashed is not None:  # crashed before any response: answer for it
                await _send_shaped(send, 500, error_body(f"internal error: {type(crashed).__name__}", "server_error"),
                                   [])
            return
        status, body = reshape(held["start"]["status"], held["body"])
        if crashed is not None and _is_unreachable(crashed):
            status, body = 503, error_body(f"the model's worker did not answer ({type(crashed).__name__}); "
                                           f"retry in a few seconds.", "model_unavailable", code="worker_unreachable")
        headers = [(k, v) for k, v in held["start"].get("headers", [])
                   if k not in (b"content-length", b"content-type")]
        await _send_shaped(send, status, body, headers)


def _is_unreachable(e: BaseException) -> bool:
    """A worker that went away between routing and the request to it (aiohttp/httpx errors)."""
    import aiohttp
    import httpx

    return isinstance(e, (aiohttp.ClientConnectionError, httpx.TransportError, asyncio.TimeoutError,
                          ConnectionError))


async def _send_shaped(send, status: int, body: bytes, headers: list) -> None:
    headers = headers + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503 and not any(k == b"retry-after" for k, _ in headers):
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
