"""Run FastChat's OpenAI API server, with deploy/api/fastchat_compat.py applied, at the address
in model_paths.toml."""
from __future__ import annotations

import sys

from deploy.registry.config import Registry


def run_api_server(reg: Registry) -> int:
    import uvicorn

    from deploy.api.fastchat_compat import patch_api_server

    d = reg.deployment
    patch_api_server()
    from fastchat.serve import openai_api_server

    sys.argv = ["openai_api_server", "--host", d.host, "--port", str(d.api_port),
                "--controller-address", d.controller_url]
    openai_api_server.create_openai_api_server()  # FastChat's own settings + CORS set-up
    uvicorn.run(openai_api_server.app, host=d.host, port=d.api_port, log_level="info")
    return 0
