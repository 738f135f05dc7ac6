"""`python -m deploy COMMAND`: one CLI for every job (one argparse, not one per script)."""
from __future__ import annotations

import argparse
import sys

from deploy.config import RegistryError


def cmd_check(args) -> int:
    from deploy.config import load_registry, validate_for_host

    reg = load_registry(args.registry)
    for w in validate_for_host(reg, check_paths=not args.no_paths):
        print(f"warning: {w}")
    print(f"{args.registry or 'model_paths.toml'}: {len(reg.models)} model(s) OK")
    return 0


def cmd_render(args) -> int:
    from deploy.config import load_registry
    from deploy.fleet import root_of
    from deploy.render import render, write

    reg = load_registry(args.registry)
    target = root_of(args.registry) / "supervisord.conf"
    if args.check:
        if not target.exists() or target.read_text() != render(reg):
            print("supervisord.conf is out of date with model_paths.toml. Fix: python -m deploy render", file=sys.stderr)
            return 1
        print("supervisord.conf matches model_paths.toml")
        return 0
    print("supervisord.conf " + ("updated" if write(reg, target) else "already up to date"))
    return 0


def cmd_templates(args) -> int:
    from deploy.templates import OUR_TEMPLATES, known_templates

    ours = {c.name for c in OUR_TEMPLATES}
    for name in sorted(known_templates()):
        print(f"{name}{'  (added by this project)' if name in ours else ''}")
    return 0


def cmd_reference(args) -> int:
    from deploy.config import fields_markdown

    print(fields_markdown())
    return 0


def cmd_worker(args) -> int:
    from deploy.launcher import run_worker

    return run_worker(args.name, args.registry)


def cmd_api_server(args) -> int:
    from deploy.services import run_api_server

    return run_api_server(args.registry)


def cmd_webui(args) -> int:
    from deploy.services import run_webui

    return run_webui(args.registry, args.auth_file)


def cmd_up(args) -> int:
    from deploy.fleet import up

    return up(args.registry, timeout=args.timeout)


def cmd_status(args) -> int:
    from deploy.fleet import status

    return status(args.registry)


def cmd_down(args) -> int:
    from deploy.fleet import down

    return down(args.registry)


def cmd_fetch_defaults(args) -> int:
    from deploy.default_models import FetchError, fetch_all
    from deploy.registry_edit import ensure_default_entries

    try:
        fetch_all()
    except FetchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    ensure_default_entries(args.registry)
    return 0


def cmd_add_model(args) -> int:
    from deploy.registry_edit import add_entry, entry_from_args

    add_entry(entry_from_args(args), args.registry, replace=args.replace)
    return 0


def _fastchat_logs_out_of_cwd(registry: str | None) -> None:
    """FastChat's build_logger writes files into $LOGDIR (default: the current directory)."""
    import os

    from deploy.fleet import root_of

    if "LOGDIR" not in os.environ:
        logdir = root_of(registry) / "logs" / "fastchat"
        logdir.mkdir(parents=True, exist_ok=True)
        os.environ["LOGDIR"] = str(logdir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    p.add_argument("--registry", help="model_paths.toml to use (default: $FLEET_REGISTRY or the repo's)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("check", help="validate model_paths.toml against this host")
    s.add_argument("--no-paths", action="store_true", help="skip checking that model files exist")
    s.set_defaults(fn=cmd_check)
    s = sub.add_parser("render", help="write supervisord.conf from model_paths.toml")
    s.add_argument("--check", action="store_true", help="exit 1 if supervisord.conf is out of date")
    s.set_defaults(fn=cmd_render)
    sub.add_parser("templates", help="list chat template names").set_defaults(fn=cmd_templates)
    sub.add_parser("reference", help="print the model_paths.toml field reference").set_defaults(fn=cmd_reference)
    s = sub.add_parser("worker", help="run one model worker (supervisord does this)")
    s.add_argument("name")
    s.set_defaults(fn=cmd_worker)
    sub.add_parser("api-server", help="run the OpenAI-compatible API server").set_defaults(fn=cmd_api_server)
    s = sub.add_parser("webui", help="run the Gradio web UI")
    s.add_argument("--auth-file", help="user:password pairs ('u1:p1,u2:p2'); required when bound beyond loopback")
    s.set_defaults(fn=cmd_webui)
    s = sub.add_parser("up", help="start supervisord and wait until every worker registered")
    s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(fn=cmd_up)
    sub.add_parser("status", help="programs, registered models and their cores").set_defaults(fn=cmd_status)
    sub.add_parser("down", help="stop the fleet").set_defaults(fn=cmd_down)
    sub.add_parser("fetch-defaults", help="fetch and check the offline default models").set_defaults(fn=cmd_fetch_defaults)
    s = sub.add_parser("add-model", help="add an entry to model_paths.toml (options from the entry's fields)")
    from deploy.registry_edit import add_entry_options

    add_entry_options(s)
    s.set_defaults(fn=cmd_add_model)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _fastchat_logs_out_of_cwd(args.registry)
    try:
        return args.fn(args)
    except RegistryError as e:
        print(f"ERROR:\n{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
