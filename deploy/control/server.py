"""Run the controller (deploy/control/controller.py) at the address in model_paths.toml."""
from __future__ import annotations

import sys
from urllib.parse import urlsplit

from deploy.control.controller import create_controller_app
from deploy.registry.config import EXIT_CONFIG, Registry
from deploy.wire.access import HostGuard, own_host_names
from deploy.wire.secret import SecretError, read_secret


def run_controller(reg: Registry) -> int:
    import uvicorn

    d = reg.deployment
    try:
        secret = read_secret(d.secret_path)
    except SecretError as e:
        print(f"ERROR: controller not started: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    names = own_host_names([d.controller_bind, d.host, urlsplit(d.controller_url).hostname or ""], d.allowed_hosts)
    uvicorn.run(HostGuard(create_controller_app(secret), names), host=d.controller_bind, port=d.controller_port,
                log_level="warning")
    return 0
