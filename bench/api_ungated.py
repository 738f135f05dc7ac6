"""The API server's app without the request gate, for bench.py to measure what the gate costs side
by side in one run. Never part of a deployment: `python -m bench.api_ungated PORT` (registry from
$FLEET_REGISTRY), on loopback only."""
from __future__ import annotations

import sys

import uvicorn

from deploy.api.app import ApiSettings, build_app
from deploy.backends import load_registry


def main() -> int:
    port = int(sys.argv[1])
    gated = build_app(ApiSettings.from_registry(load_registry()))
    uvicorn.run(gated.app, host="127.0.0.1", port=port, log_level="warning")  # the app behind the gate
    return 0


if __name__ == "__main__":
    sys.exit(main())
