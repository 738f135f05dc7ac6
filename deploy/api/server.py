"""Run FastChat's OpenAI API server behind the request gate (deploy/api/gate.py), with
deploy/api/fastchat_compat.py applied, at the address in model_paths.toml."""
from __future__ import annotations

import json
import sys

from deploy.registry.config import Registry
from deploy.registry.host import is_loopback

EXIT_CONFIG = 78
MIN_CONTEXT = 4096  # bodies for models on other hosts, which this registry does not list


def gate_settings(reg: Registry):
    """The gate's limits, from the registry: bodies sized for its longest context, API keys
    from its keys file (KeysError when that file is unusable)."""
    from deploy.api.gate import GateSettings
    from deploy.bounded_body import body_limit
    from deploy.api.keys import read_keys

    d = reg.deployment
    contexts = [m.context_length for m in reg.models] + [MIN_CONTEXT]
    return GateSettings(
        api_keys=read_keys(d.api_keys_path) if d.api_keys_path else frozenset(),
        body_limit=body_limit(max(contexts)),
        max_in_flight=16 + 4 * sum(m.concurrency for m in reg.models),
        cors=bool(d.cors_origins),
    )


def create_api_app(reg: Registry):
    """FastChat's app, patched, behind the gate. FastChat builds its app at import time and
    reads its settings from argv: both happen here, once per process."""
    from deploy.api.fastchat_compat import patch_api_server
    from deploy.api.gate import ApiGate
    from deploy.api.metrics import FleetMetrics

    d = reg.deployment
    settings = gate_settings(reg)
    patch_api_server()
    from fastchat.serve import openai_api_server

    sys.argv = ["openai_api_server", "--host", d.host, "--port", str(d.api_port),
                "--controller-address", d.controller_url, "--allowed-origins", json.dumps(d.cors_origins)]
    openai_api_server.create_openai_api_server()  # FastChat's own settings + CORS (none by default)
    return ApiGate(openai_api_server.app, settings, FleetMetrics(d.controller_url))


def run_api_server(reg: Registry) -> int:
    import uvicorn

    from deploy.api.keys import KeysError

    d = reg.deployment
    if not is_loopback(d.host) and not d.api_keys_file:
        print(f"ERROR: the API would be open to anyone who can reach {d.host}. Fix: run `python -m deploy keys add` "
              f"(it sets api_keys_file in [deployment] of model_paths.toml), or bind to 127.0.0.1.", file=sys.stderr)
        return EXIT_CONFIG
    try:
        app = create_api_app(reg)
    except KeysError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_CONFIG
    uvicorn.run(app, host=d.host, port=d.api_port, log_level="info", timeout_keep_alive=5)
    return 0
