"""Who may call a fleet service bound beyond loopback, decided by the client's address before
anything is read: clients on the same machine always; on a worker, otherwise only the
controller's host (where the API server and web UI run), so nobody on the network can bypass
the API keys by calling a worker directly."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from deploy.registry.host import is_loopback


def same_host(scope) -> bool:
    """A client on this machine: loopback, or connecting from the very address it connects to."""
    client, server = (scope.get("client") or ("",))[0], (scope.get("server") or ("",))[0]
    return is_loopback(client) or client == server


def host_address(url: str) -> str:
    """The IP address of a URL's host (a name is resolved once, at start)."""
    return socket.gethostbyname(urlsplit(url).hostname or "127.0.0.1")


class OnlyFrom:
    """ASGI: 403 for HTTP clients that are neither on this machine nor in `allowed`."""

    def __init__(self, app, allowed: set[str]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not same_host(scope) and (scope.get("client") or ("",))[0] not in self.allowed:
            body = json.dumps({"text": "this worker answers only its controller's host", "error_code": 40103}).encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
