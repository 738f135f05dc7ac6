"""Run FastChat's own API server and web UI with our compat shims applied.

Both are FastChat's code as shipped; we only feed them the addresses from
model_paths.toml and apply deploy/fastchat_compat.py first.
"""
from __future__ import annotations

import ipaddress
import runpy
import sys

from deploy.config import load_registry


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_api_server(registry: str | None = None) -> int:
    import uvicorn

    from deploy.fastchat_compat import patch_api_server

    d = load_registry(registry).deployment
    patch_api_server()
    from fastchat.serve import openai_api_server

    sys.argv = ["openai_api_server", "--host", d.host, "--port", str(d.api_port),
                "--controller-address", d.controller_url]
    openai_api_server.create_openai_api_server()  # FastChat's own settings + CORS set-up
    uvicorn.run(openai_api_server.app, host=d.host, port=d.api_port, log_level="info")
    return 0


def run_webui(registry: str | None = None, auth_file: str | None = None) -> int:
    from deploy.fastchat_compat import patch_webui_templates

    d = load_registry(registry).deployment
    if not _is_loopback(d.host) and not auth_file:
        print(f"ERROR: the web UI would be reachable by anyone on {d.host} without a login. "
              f"Fix: pass --auth-file FILE with 'user:password' pairs, or bind to 127.0.0.1.", file=sys.stderr)
        return 78
    patch_webui_templates(d.controller_url)
    sys.argv = ["gradio_web_server_multi", "--host", d.host, "--port", str(d.webui_port),
                "--controller-url", d.controller_url, "--model-list-mode", "reload"]
    if auth_file:
        sys.argv += ["--gradio-auth-path", auth_file]
    runpy.run_module("fastchat.serve.gradio_web_server_multi", run_name="__main__", alter_sys=True)
    return 0
