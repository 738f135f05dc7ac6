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


# ---- the Host header: only our own names --------------------------------------------------------
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = ("0.0.0.0", "::", "")


def interface_addresses() -> set[str]:
    """Every IP address of this machine's interfaces (what a client may reach a wildcard bind at)."""
    import psutil

    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.add(a.address.split("%")[0].lower())
    return out


def own_host_names(binds: list[str], extra: list[str] = ()) -> frozenset[str]:
    """The names a request to one of our services may carry in its Host header: loopback always,
    the addresses the service binds (every interface address, the machine's name and the
    configured ones for a wildcard bind), and `extra` ([deployment] allowed_hosts)."""
    names = set(LOOPBACK_NAMES) | {b.lower().strip("[]") for b in binds if b not in WILDCARDS}
    if any(b in WILDCARDS for b in binds):
        names |= interface_addresses() | {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names | {e.lower().strip("[]") for e in extra})


def host_of(header: str) -> str:
    """The host part of a Host header: 'a.b:8000' -> 'a.b', '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def own_origin(origin: str, hosts: frozenset[str], port: int | None) -> bool:
    """An Origin header naming this very service: http(s), one of its own host names, its port."""
    try:
        u = urlsplit(origin)
        return u.scheme in ("http", "https") and (u.hostname or "") in hosts and \
            (u.port or (443 if u.scheme == "https" else 80)) == port
    except ValueError:
        return False


class HostGuard:
    """ASGI: what a web page must not reach, refused before it is routed.

    - A Host header naming none of our own hosts: 421. With no keys on loopback, a web page the user
      opens could otherwise point a name of its own at 127.0.0.1 (DNS rebinding) and use our services
      as same-origin: read the models' answers, register a worker, vote.
    - An Origin header that is not the service's own (nor one of `origins`, the configured
      cors_origins): 403. Browsers send Origin with every cross-origin request, including the simple
      ones that need no preflight (a form, a text/plain POST) and a sandboxed frame's ("null"): a page
      of another site, or of another port on this machine, cannot make the service act or answer it.
      Clients that are not browsers send no Origin and are not affected.

    `body(message)` shapes the answer as the service's clients expect."""

    def __init__(self, app, allowed: frozenset[str], body=None, origins: frozenset[str] = frozenset()):
        self.app, self.allowed, self.origins = app, allowed, frozenset(o.rstrip("/").lower() for o in origins)
        self.body = body or (lambda m: json.dumps({"error": m}).encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            header = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin", b"").decode("latin-1").strip().rstrip("/").lower()
            if host_of(header) not in self.allowed:
                return await self._refuse(scope, send, 421, (
                    f"the Host header names '{host_of(header)[:100]}', which is not this server. Fix: call it by its "
                    f"own address (e.g. 127.0.0.1), or add the name to allowed_hosts in [deployment] of "
                    f"model_paths.toml"))
            port = (scope.get("server") or (None, None))[1]
            if origin and origin not in self.origins and not own_origin(origin, self.allowed, port):
                return await self._refuse(scope, send, 403, (
                    f"a web page of another origin ('{origin[:100]}') may not use this server. Fix: open the "
                    f"fleet's own pages, or (the API) add that origin to cors_origins in [deployment] of "
                    f"model_paths.toml"))
        await self.app(scope, receive, send)

    async def _refuse(self, scope, send, status: int, msg: str):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = self.body(msg)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
