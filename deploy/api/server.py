"""Run the API server (deploy/api/app.py) at the address in model_paths.toml; refuse to serve it
beyond loopback without API keys."""
from __future__ import annotations

import sys

from deploy.api.app import ApiSettings, build_app
from deploy.registry.config import EXIT_CONFIG, Registry
from deploy.registry.host import is_loopback
from deploy.wire.keys import KeysError
from deploy.wire.secret import SecretError


def run_api_server(reg: Registry) -> int:
    import uvicorn

    d = reg.deployment
    if not is_loopback(d.host) and not d.api_keys_file:
        print(f"ERROR: the API would be open to anyone who can reach {d.host}. Fix: run `python -m deploy keys add` "
              f"(it sets api_keys_file in [deployment] of model_paths.toml), or bind to 127.0.0.1.", file=sys.stderr)
        return EXIT_CONFIG
    try:
        app = build_app(ApiSettings.from_registry(reg))
    except (KeysError, SecretError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_CONFIG
    uvicorn.run(app, host=d.host, port=d.api_port, log_level="info", timeout_keep_alive=5)
    return 0
