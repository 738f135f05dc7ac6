"""Every route of the API server, in one table: which router serves it and what kind it is. The
app factory mounts exactly these routers (deploy/api/app.py), and the request gate reads the same
table for what it decides per route (deploy/api/gate.py), so no route can be served without the
gate knowing it: a generation route is counted in the metrics and held to the in-flight cap.
Every route needs the API keys, when they are set; FastChat's docs routes too."""
from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import compile_path

from deploy import fastchat_compat
from deploy.api import chat, completions, embeddings, messages, model_state, rerank, responses, tokens

GENERATION, READ = "generation", "read"
OPENAI, ANTHROPIC = "openai", "anthropic"  # the error shape a route's clients read


@dataclass(frozen=True)
class RouteGroup:
    name: str
    router: APIRouter
    kind: str  # GENERATION: metrics and the in-flight cap; READ: neither
    errors: str = OPENAI


def route_table(controller_url: str) -> list[RouteGroup]:
    models = APIRouter()
    models.routes.append(fastchat_compat.fastchat_models_route(controller_url))  # FastChat's own /v1/models
    return [
        RouteGroup("chat", chat.router, GENERATION),
        RouteGroup("completions", completions.router, GENERATION),
        RouteGroup("embeddings", embeddings.router, GENERATION),
        RouteGroup("rerank", rerank.router, GENERATION),
        RouteGroup("responses", responses.router, GENERATION),
        RouteGroup("messages", messages.router, GENERATION, errors=ANTHROPIC),
        RouteGroup("count_tokens", messages.count_router, READ, errors=ANTHROPIC),
        RouteGroup("token_check", tokens.router, READ),
        RouteGroup("models", models, READ),
        RouteGroup("model_state", model_state.router, READ),
    ]


class RouteKinds:
    """Path -> its group in the table; a path no route serves has none (the app answers it 404)."""

    def __init__(self, table: list[RouteGroup]):
        self._patterns: list[tuple[re.Pattern, RouteGroup]] = []
        for group in table:
            for route in group.router.routes:
                if isinstance(route, APIRoute):
                    self._patterns.append((compile_path(route.path)[0], group))

    def group(self, path: str) -> RouteGroup | None:
        return next((g for pattern, g in self._patterns if pattern.match(path)), None)

    def kind(self, path: str) -> str | None:
        g = self.group(path)
        return g.kind if g else None

    def errors(self, path: str) -> str:
        g = self.group(path)
        return g.errors if g else OPENAI
