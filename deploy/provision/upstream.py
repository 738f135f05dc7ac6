"""Adding a model served elsewhere (backend = "openai"): before the entry is written, the upstream
is checked the way the worker will use it: it answers, takes the key, lists the model, and gives a
one-token completion (through /v1/chat/completions where it has no /v1/completions). Each failure names the fix."""
from __future__ import annotations

import httpx

from deploy.backends.upstream_worker import read_key
from deploy.registry.config import ModelEntry


class UpstreamProblem(Exception):
    pass


def listed_models(body: dict) -> list[str]:
    """Model names from /v1/models, in OpenAI's shape ({"data": [{"id"}]}) or Ollama's ({"models": [{"name"}]})."""
    names = [m.get("id") for m in body.get("data") or []]
    names += [m.get("model") or m.get("name") for m in body.get("models") or []]
    return sorted({n for n in names if n})


def check_upstream(entry: ModelEntry) -> str:
    """Raise UpstreamProblem naming what is wrong; return a line saying what answered."""
    base, model = entry.path.rstrip("/"), entry.options.upstream_model
    key = read_key(entry)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(base + "/models", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        raise UpstreamProblem(f"cannot reach {base}/models ({type(e).__name__}). Fix: check the URL (the server's "
                              f"base URL, usually ending in /v1) and that the server runs.") from None
    if r.status_code in (401, 403):
        raise UpstreamProblem(f"{base} refused the key (HTTP {r.status_code}). Fix: put the server's API key in a "
                              f"file (chmod 600) and pass --upstream-key-file FILE.")
    if r.status_code != 200:
        raise UpstreamProblem(f"{base}/models answered HTTP {r.status_code}. Fix: give the OpenAI-compatible base URL, "
                              f"e.g. http://gpu-host:8000/v1.")
    try:
        names = listed_models(r.json())
    except ValueError:
        raise UpstreamProblem(f"{base}/models did not answer JSON. Fix: give the OpenAI-compatible base URL.") from None
    if model not in names:
        raise UpstreamProblem(f"{base} serves {', '.join(names) or 'no model'}, not '{model}'. Fix: pass "
                              f"--upstream-model with one of those names.")
    route = entry.options.upstream_route
    if route != "chat":
        r = httpx.post(base + "/completions", headers=headers, timeout=120,
                       json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
        if r.status_code == 200:
            return f"{base} answers, lists '{model}' and completed a token (prompts in this entry's chat template)"
        if not (route == "auto" and r.status_code in (404, 405)):
            raise UpstreamProblem(f"a one-token completion of '{model}' at {base}/completions failed (HTTP "
                                  f"{r.status_code}: {r.text[:200]}). Fix: check the model runs on that server.")
    r = httpx.post(base + "/chat/completions", headers=headers, timeout=120,
                   json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1,
                         "temperature": 0})
    if r.status_code != 200:
        raise UpstreamProblem(f"a one-token chat completion of '{model}' at {base}/chat/completions failed (HTTP "
                              f"{r.status_code}: {r.text[:200]}). Fix: check the model runs on that server.")
    return (f"{base} answers, lists '{model}' and completed a token through its chat route (prompts in the "
            f"upstream's own chat template)")
