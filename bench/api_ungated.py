"""FastChat's API server with our FastChat patches but without the request gate, for bench.py to
measure what the gate costs side by side in one run. Never part of a deployment:
`python -m bench.api_ungated PORT` (registry from $FLEET_REGISTRY), on loopback only."""
from __future__ import annotations

import sys

import uvicorn

from deploy.api.gate import current_extras
from deploy.api.server import create_api_app
from deploy.api.validate import Extras
from deploy.registry.config import load_registry


def main() -> int:
    port = int(sys.argv[1])
    gated = create_api_app(load_registry())
    # bench.py counts tokens from the stream's usage, which the gate turns on for
    # stream_options.include_usage; without the gate, every request inherits this context
    current_extras.set(Extras(include_usage=True))
    uvicorn.run(gated.app, host="127.0.0.1", port=port, log_level="warning")  # the app behind the gate
    return 0


if __name__ == "__main__":
    sys.exit(main())
