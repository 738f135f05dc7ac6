"""Bounded request bodies for every HTTP service of the fleet (API gate, workers, controller):
a body over the limit gets 413 before it is read or as soon as it grows past it, and a body
that does not arrive in time (a slow client, or a Content-Length larger than what is sent) gets
408, so no request can make a service hold a connection, or memory, for long."""
from __future__ import annotations

import asyncio

from deploy.wire.errors import ClientError

BYTES_PER_TOKEN = 16      # JSON text per token, generously: a CJK character escaped as \uXXXX is 6 bytes
BODY_OVERHEAD = 64 * 1024  # everything in a request that is not prompt text


PROMPT_LIMIT = ("enough for the longest context any model here takes. Fix: send a shorter prompt, or raise "
                "context_length in model_paths.toml")


def body_limit(context_tokens: int) -> int:
    """The largest body a request for a model of this context can need."""
    return context_tokens * BYTES_PER_TOKEN + BODY_OVERHEAD


async def send_error(send, err: ClientError) -> None:
    body = err.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(scope, receive, limit: int, timeout: float, why: str = PROMPT_LIMIT) -> tuple[bytes, list]:
    """The whole body (and the messages it came in), within `limit` bytes and `timeout` seconds;
    `why` is what the 413 says of the limit, and the fix."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise ClientError(400, "the Content-Length header is not a number. Fix: send the body's length "
                                       "in bytes.") from None
            if declared > limit:
                raise _too_large(declared, limit, why)
    chunks, size, messages = [], 0, []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            msg = await asyncio.wait_for(receive(), max(0.01, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ClientError(408, f"the request body did not arrive within {timeout:g} s (a slow client, or a "
                                   f"Content-Length larger than the body sent). Fix: send the whole body at "
                                   f"once, with a Content-Length that matches it.", code="request_timeout",
                              kind="timeout_error", headers={"Connection": "close"}) from None
        messages.append(msg)
        if msg["type"] != "http.request":
            break  # the client went away; the app will see the disconnect
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, why)
        chunks.append(chunk)
        if not msg.get("more_body"):
            break
    return b"".join(chunks), messages


def _too_large(size: int, limit: int, why: str) -> ClientError:
    return ClientError(413, f"the request body is {size} bytes or more; the limit is {limit} bytes, {why}.",
                       code="request_too_large")


def replay(messages: list, receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()
    return replayed


def with_body(scope: dict, body: bytes) -> dict:
    headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
    return {**scope, "headers": headers + [(b"content-length", str(len(body)).encode())]}


class BoundedBody:
    """ASGI: bodies over `limit` bytes get 413 (saying `why`), bodies slower than `timeout` s get 408."""

    def __init__(self, app, limit: int, timeout: float = 5.0, why: str = PROMPT_LIMIT):
        self.app, self.limit, self.timeout, self.why = app, limit, timeout, why

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        try:
            _, messages = await read_body(scope, receive, self.limit, self.timeout, self.why)
        except ClientError as e:
            return await send_error(send, e)
        await self.app(scope, replay(messages, receive), send)


