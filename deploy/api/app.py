"""The API server's app, built by one factory: our routers (deploy/api/routes.py's table) on a
FastAPI app of our own, its state on `app.state` (the fleet client, the workers' view, the
settings), behind the request gate. FastChat's OpenAI API server contributes its /v1/models
handler; chat, completions, embeddings and token checks are ours (FastChat's sent empty streams
under pydantic 2, and could not carry seeds, schemas, logprobs or clear errors)."""
from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from pydantic import ValidationError

from deploy.api.gate import ApiGate, GateSettings
from deploy.api.metrics import FleetMetrics
from deploy.api.routes import RouteKinds, route_table
from deploy.api.workers import Workers
from deploy.wire.access import HostGuard, own_host_names
from deploy.wire.bounded_body import body_limit
from deploy.wire.client import AsyncFleetClient
from deploy.wire.errors import ClientError, error_body
from deploy.wire.fields import client_error
from deploy.wire.keys import read_keys
from deploy.wire.secret import read_secret

MIN_CONTEXT = 4096  # bodies for models on other hosts, which this registry does not list


@dataclass(frozen=True)
class ApiSettings:
    controller_url: str
    gate: GateSettings
    cors_origins: tuple[str, ...] = ()
    hosts: frozenset[str] = own_host_names(["127.0.0.1"])  # what the Host header may name
    secret: str | None = None  # the fleet secret, which workers ask of every generation request

    @classmethod
    def from_registry(cls, reg) -> "ApiSettings":
        """From model_paths.toml: bodies sized for its longest context, API keys from its keys file
        (KeysError when that file is unusable), the in-flight cap from its concurrency, the fleet
        secret (SecretError when it is unusable)."""
        d = reg.deployment
        contexts = [m.context_length for m in reg.models] + [MIN_CONTEXT]
        gate = GateSettings(api_keys=read_keys(d.api_keys_path) if d.api_keys_path else frozenset(),
                            body_limit=body_limit(max(contexts)),
                            max_in_flight=16 + 4 * sum(m.concurrency for m in reg.models),
                            cors=bool(d.cors_origins))
        return cls(d.controller_url, gate, tuple(d.cors_origins), own_host_names([d.host], d.allowed_hosts),
                   read_secret(d.secret_path))


def _error_response(e: ClientError) -> Response:
    return Response(e.body(), status_code=e.status, headers=e.headers, media_type="application/json")


def build_app(settings: ApiSettings):
    """The ASGI app uvicorn serves: the Host check, the gate, then our FastAPI app."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await app.state.fleet.aclose()

    app = FastAPI(title="fastchat-fleet OpenAI-compatible API", lifespan=lifespan)
    app.state.settings = settings
    app.state.fleet = AsyncFleetClient(settings.controller_url, timeout=5, secret=settings.secret)
    app.state.workers = Workers(app.state.fleet)
    table = route_table(settings.controller_url)
    for group in table:
        app.include_router(group.router)

    @app.exception_handler(ClientError)
    async def client_error_handler(request: Request, e: ClientError):
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        return _error_response(client_error(e.errors(), skip=1))  # its locations start with 'body'

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, e: ValidationError):
        return _error_response(client_error(e))

    if settings.cors_origins:  # CORS is off unless origins are configured
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    gate = ApiGate(app, settings.gate, RouteKinds(table), FleetMetrics(settings.controller_url))
    return HostGuard(gate, settings.hosts, lambda m: error_body(m, "invalid_request_error", code="misdirected_request"),
                     origins=frozenset(settings.cors_origins))
