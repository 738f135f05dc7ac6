"""Run the web UI (deploy/webui/app.py) at the address in model_paths.toml; refuse to serve it
beyond loopback without a login."""
from __future__ import annotations

import os
import sys

from deploy.registry.config import EXIT_CONFIG, Registry
from deploy.registry.host import is_loopback
from deploy.registry.paths import FleetPaths, expand_path
from deploy.webui.puzzles_tab import PuzzleBook
from deploy.wire.access import HostGuard, own_host_names
from deploy.wire.secret import SecretError, read_secret


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


def run_webui(reg: Registry, paths: FleetPaths, auth_file: str | None = None, puzzles: PuzzleBook | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    d = reg.deployment
    auth_file = auth_file or (str(expand_path(d.webui_auth_file)) if d.webui_auth_file else None)
    if not is_loopback(d.host) and not auth_file:
        print(f"ERROR: the web UI would be reachable by anyone on {d.host} without a login. "
              f"Fix: set webui_auth_file in [deployment] of model_paths.toml (or pass --auth-file FILE) "
              f"to a file of user:password lines, or bind to 127.0.0.1.", file=sys.stderr)
        return EXIT_CONFIG
    try:
        auth = parse_auth(auth_file) if auth_file else None
    except (OSError, ValueError) as e:
        print(f"ERROR: {e}. Fix: write one user:password per line.", file=sys.stderr)
        return EXIT_CONFIG
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from deploy.webui.app import create_webui, page_style
    from deploy.webui.offline import OfflinePage
    from deploy.webui.votes import VoteLog
    from deploy.wire.client import AsyncFleetClient

    try:
        secret = read_secret(d.secret_path)
    except SecretError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_CONFIG
    demo = create_webui(AsyncFleetClient(d.controller_url, secret=secret), VoteLog(paths.votes),
                        puzzles=puzzles).queue(default_concurrency_limit=16)
    # no footer links (the API page, settings) and no run history kept in the browser
    app = gr.mount_gradio_app(FastAPI(title="fastchat-fleet web UI"), demo, path="", auth=auth, footer_links=[],
                              run_history=False, ssr_mode=False, **page_style())
    app.add_middleware(OfflinePage)
    app.add_middleware(HostGuard, allowed=own_host_names([d.host], d.allowed_hosts),  # outermost: before routing
                       origins=frozenset(d.cors_origins))
    uvicorn.run(app, host=d.host, port=d.webui_port, log_level="warning")
    return 0
