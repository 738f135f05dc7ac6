"""`python -m deploy models | load | unload | pin | unpin`: the API server's /models routes from a
terminal, with the deployment's API key (as ask_all sends it), so what the API refuses is refused
here with the same reason."""
from __future__ import annotations

import sys

import httpx

from deploy.api.model_state import ActionDone, ModelList
from deploy.backends import load_registry
from deploy.registry.paths import FleetPaths
from deploy.registry.sizes import fmt_size
from deploy.wire.keys import client_key


def _api(paths: FleetPaths) -> tuple[str, dict]:
    d = load_registry(paths.registry).deployment
    key = client_key(d.api_keys_path)
    return f"http://{d.host}:{d.api_port}", ({"Authorization": f"Bearer {key}"} if key else {})


def _refused(r: httpx.Response) -> str:
    try:
        return r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return r.text[:500]


def _call(paths: FleetPaths, method: str, route: str, **kw) -> httpx.Response | None:
    """The API's answer, or None once the reason it failed is printed (not answering, or refused)."""
    base, headers = _api(paths)
    try:
        r = httpx.request(method, base + route, headers=headers, **kw)
    except httpx.HTTPError as e:
        print(f"ERROR: the API server at {base} does not answer ({type(e).__name__}). Fix: python -m deploy up",
              file=sys.stderr)
        return None
    if r.status_code != 200:
        print(f"ERROR: {_refused(r)}", file=sys.stderr)
        return None
    return r


def show_models(paths: FleetPaths) -> int:
    r = _call(paths, "GET", "/models", timeout=30)
    if r is None:
        return 1
    print(f"{'model':34} {'state':10} {'pinned':7} budget")
    for m in ModelList.model_validate(r.json()).data:
        budget = fmt_size(m.memory_budget) if m.memory_budget else "-"
        failed = f"  last load failed: {m.status.reason}" if m.status.failed else ""
        print(f"{m.id:34} {m.status.value:10} {'yes' if m.status.pinned else 'no':7} {budget}{failed}")
    return 0


def model_action(paths: FleetPaths, action: str, model: str) -> int:
    r = _call(paths, "POST", f"/models/{action}", json={"model": model}, timeout=960)
    if r is None:
        return 1
    done = ActionDone.model_validate(r.json())
    print(f"{done.model}: {done.status.value}{', pinned' if done.status.pinned else ''}")
    return 0
