"""Run the API server (FastChat's, with deploy/fastchat_compat.py applied) and the web UI
(ours, deploy/webui/, on FastChat's controller, workers, templates and monitor code),
at the addresses in model_paths.toml."""
from __future__ import annotations

import ipaddress
import sys

from deploy.config import expand_path, load_registry


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


def parse_auth(path: str) -> list[tuple[str, str]]:
    """'user:password' pairs, comma or newline separated (FastChat's --gradio-auth-path format)."""
    pairs = []
    for item in open(path, encoding="utf-8").read().replace("\n", ",").split(","):
        if item.strip():
            user, sep, pw = item.strip().partition(":")
            if not sep or not user or not pw:
                raise ValueError(f"{path}: '{item.strip()}' is not user:password")
            pairs.append((user, pw))
    if not pairs:
        raise ValueError(f"{path}: no user:password pairs")
    return pairs


def run_webui(registry: str | None = None, auth_file: str | None = None) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    from deploy.fleet import root_of
    from deploy.webui.app import create_webui
    from deploy.webui.fleet_client import FleetClient
    from deploy.webui.votes import VoteLog

    reg = load_registry(registry)
    d = reg.deployment
    auth_file = auth_file or (str(expand_path(d.webui_auth_file)) if d.webui_auth_file else None)
    if not _is_loopback(d.host) and not auth_file:
        print(f"ERROR: the web UI would be reachable by anyone on {d.host} without a login. "
              f"Fix: set webui_auth_file in [deployment] of model_paths.toml (or pass --auth-file FILE) "
              f"to a file of user:password lines, or bind to 127.0.0.1.", file=sys.stderr)
        return 78
    try:
        auth = parse_auth(auth_file) if auth_file else None
    except (OSError, ValueError) as e:
        print(f"ERROR: {e}. Fix: write one user:password per line.", file=sys.stderr)
        return 78
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from deploy.webui.offline import OfflinePage

    votes = VoteLog(root_of(registry) / d.log_dir / "votes")
    demo = create_webui(FleetClient(d.controller_url), votes).queue(default_concurrency_limit=16)
    demo.show_api = False
    app = gr.mount_gradio_app(FastAPI(title="fastchat-fleet web UI"), demo, path="", auth=auth)
    app.add_middleware(OfflinePage)
    uvicorn.run(app, host=d.host, port=d.webui_port, log_level="warning")
    return 0
