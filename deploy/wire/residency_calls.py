"""Load, unload and pin models on request (the API's /models routes, `python -m deploy load`, the
web page's picker): each model's state from the controller, and the request sent to every worker
that serves the model, which asks its host's memory pool as any load does. A load that does not fit
comes back with the pool's reason; an unload of a model that is answering, with why not."""
from __future__ import annotations

from dataclasses import dataclass, field

from deploy.wire import routes
from deploy.wire.client import AsyncFleetClient, ModelUnavailable

# llama.cpp's router names a model's state loaded, loading or unloaded; a worker's own words are
# loaded, loading, asleep (registered, its model not in memory) and unloading.
STATE_NAMES = {"loaded": "loaded", "loading": "loading", "asleep": "unloaded", "unloading": "unloading"}
ACTIONS = {"load": (routes.WORKER_LOAD, {}), "unload": (routes.WORKER_RELEASE, {}),
           "pin": (routes.WORKER_PIN, {"pinned": True}), "unpin": (routes.WORKER_PIN, {"pinned": False})}


@dataclass
class WorkerState:
    worker: str
    state: str          # loaded, loading, unloaded, unloading (or unknown: a worker not in a pool)
    pinned: bool = False
    healthy: bool = True
    reason: str = ""    # why its last load failed


@dataclass
class ModelState:
    model: str
    workers: list[WorkerState] = field(default_factory=list)
    budget: int | None = None

    @property
    def value(self) -> str:
        """Loaded if any of its workers has it in memory, else loading if one is reading it."""
        states = {w.state for w in self.workers}
        return next((s for s in ("loaded", "loading", "unloading") if s in states), "unloaded")

    @property
    def pinned(self) -> bool:
        return bool(self.workers) and all(w.pinned for w in self.workers)

    @property
    def failed(self) -> str:
        return next((w.reason for w in self.workers if w.reason), "")


async def model_states(client: AsyncFleetClient) -> list[ModelState]:
    """Every model registered with the controller, in name order, with its workers' states."""
    out: dict[str, ModelState] = {}
    for w in await client.workers():
        for name in w["models"]:
            m = out.setdefault(name, ModelState(name, budget=w.get("budget")))
            m.workers.append(WorkerState(w["worker"], STATE_NAMES.get(w.get("state") or "", "unknown"),
                                         bool(w.get("pinned")), bool(w.get("healthy")), w.get("load_error") or ""))
    return [out[k] for k in sorted(out)]


@dataclass
class Outcome:
    """What the workers of a model said to a request: ok when one did it; else their reasons."""
    model: str
    action: str
    ok: bool
    reasons: list[str]


async def act(client: AsyncFleetClient, model: str, action: str) -> Outcome:
    """Send `action` (load, unload, pin, unpin) to every healthy worker serving `model`; raises
    ModelUnavailable when none does."""
    route, body = ACTIONS[action]
    workers = [w["worker"] for w in await client.workers() if model in w["models"] and w.get("healthy")]
    if not workers:
        raise ModelUnavailable(f"no worker serves model '{model}'")
    answers = []
    for addr in workers:
        try:
            answers.append(await client.worker_post(addr, route, body, timeout=900))
        except Exception as e:  # a worker gone meanwhile: its reason, the others still asked
            answers.append({"ok": False, "reason": f"its worker at {addr} did not answer ({type(e).__name__})"})
    done = [a for a in answers if a.get("ok")]
    ok = bool(done) if action == "load" else len(done) == len(answers)
    return Outcome(model, action, ok, [a.get("reason") or "" for a in answers if not a.get("ok")])
