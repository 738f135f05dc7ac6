"""`python -m deploy COMMAND`: one command line for every job (one argparse, not one per script).

Where the fleet is (the registry, the folder beside it, its logs, FastChat's LOGDIR) is
resolved once here, from --registry or $FLEET_REGISTRY, and passed to each command.
"""
from __future__ import annotations

import argparse
import sys

from deploy.backends import load_registry
from deploy.registry.config import EXIT_CONFIG, RegistryError
from deploy.registry.paths import FleetPaths


def cmd_check(args, paths: FleetPaths) -> int:
    from deploy.registry.config import pool_note, validate_for_host
    from deploy.registry.host import HostInfo
    from deploy.registry.sizes import fmt_size
    from deploy.worker.limits import MECHANISMS, strongest_mechanism

    reg = load_registry(paths.registry)
    host = HostInfo.current()
    for w in validate_for_host(reg, host, check_paths=not args.no_paths):
        print(f"warning: {w}")
    if note := pool_note(reg, host):
        print(f"note: {note}")
    print(f"{paths.registry}: {len(reg.models)} model(s) OK; memory pool {fmt_size(reg.deployment.pool_limit(host))}; "
          f"memory budgets are enforced by {MECHANISMS[strongest_mechanism()]} on this host")
    return 0


def cmd_render(args, paths: FleetPaths) -> int:
    from deploy.registry.render import render, write

    reg = load_registry(paths.registry)
    target = paths.supervisord_conf
    if args.check:
        if not target.exists() or target.read_text() != render(reg, paths):
            print(f"{target.name} is out of date with {paths.registry.name}. Fix: {paths.cli} render", file=sys.stderr)
            return 1
        print(f"{target.name} matches {paths.registry.name}")
        return 0
    print(f"{target.name} " + ("updated" if write(reg, paths) else "already up to date"))
    return 0


def cmd_templates(args, paths: FleetPaths) -> int:
    """The names chat_template takes, then which one each registered model uses."""
    from deploy.registry.templates import AUTO, OUR_TEMPLATES, known_templates, template_in_use

    ours = {c.name for c in OUR_TEMPLATES}
    for name in sorted(known_templates() - {AUTO}):
        print(f"{name}{'  (added by this project)' if name in ours else ''}")
    print(f"{AUTO}  (the template the model ships, rendered by llama.cpp's jinja or transformers' apply_chat_template)")
    try:
        reg = load_registry(paths.registry)
    except RegistryError:
        return 0  # the names alone: `check` says what is wrong with the file
    print(f"\nIn {paths.registry}:")
    for m in reg.models:
        print(f"  {m.name:34} {template_in_use(m)}")
    return 0


def cmd_reference(args, paths: FleetPaths) -> int:
    from deploy.backends.reference import fields_markdown

    print(fields_markdown())
    return 0


def cmd_worker(args, paths: FleetPaths) -> int:
    from deploy.worker.launcher import run_worker

    try:
        reg = load_registry(paths.registry)
    except RegistryError as e:
        print(f"ERROR: worker '{args.name}' not started:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    return run_worker(reg, args.name, paths.registry)


def cmd_controller(args, paths: FleetPaths) -> int:
    from deploy.control.server import run_controller

    return run_controller(load_registry(paths.registry))


def cmd_secret(args, paths: FleetPaths) -> int:
    from deploy.wire.secret import SecretError, create_secret, read_secret

    path = load_registry(paths.registry).deployment.secret_path
    created = create_secret(path)
    try:
        read_secret(path)
    except SecretError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(f"fleet secret {'created' if created else 'present'}: {path} (mode 600; copy it to every host of the fleet)")
    return 0


def cmd_keys(args, paths: FleetPaths) -> int:
    from deploy.backends import catalogue
    from deploy.registry.edit import set_deployment
    from deploy.registry.paths import expand_path
    from deploy.wire.keys import DEFAULT_KEYS_FILE, KeysError, add_key, read_keys

    d = load_registry(paths.registry).deployment
    if args.action == "list":
        if not d.api_keys_path:
            print("no api_keys_file in [deployment]: the API takes requests without a key (loopback only). "
                  "`python -m deploy keys add` creates one.")
            return 0
        try:
            keys = read_keys(d.api_keys_path)
        except KeysError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
        print(f"{len(keys)} key(s) in {d.api_keys_path}:")
        for k in sorted(keys):
            print(f"  {k[:12]}...{k[-4:]}")
        return 0
    path = d.api_keys_path or expand_path(DEFAULT_KEYS_FILE)
    key = add_key(path)
    if not d.api_keys_file:
        set_deployment(paths, catalogue(), api_keys_file=DEFAULT_KEYS_FILE)
        print(f"api_keys_file = \"{DEFAULT_KEYS_FILE}\" set in {paths.registry}")
    print(f"new API key (in {path}, mode 600):\n{key}\n"
          f"Restart the API server to use it: supervisorctl -c {paths.supervisord_conf} restart api_server")
    return 0


def cmd_runtimes(args, paths: FleetPaths) -> int:
    """Build the runtimes the registry's models need (none for the default models), each once."""
    from deploy.provision.runtimes import RuntimeBuildError, ensure_for, needed

    reg = load_registry(paths.registry)
    if not needed(reg):
        print("every model runs in the main runtime: no other to build")
        return 0
    try:
        ensure_for(reg)
    except RuntimeBuildError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_api_server(args, paths: FleetPaths) -> int:
    from deploy.api.server import run_api_server

    return run_api_server(load_registry(paths.registry))


def cmd_webui(args, paths: FleetPaths) -> int:
    from deploy.webui.server import run_webui
    from eval.askall.book import EvalPuzzleBook  # the composition root: the page itself imports no eval

    return run_webui(load_registry(paths.registry), paths, args.auth_file, EvalPuzzleBook())


def cmd_up(args, paths: FleetPaths) -> int:
    from deploy.ops.fleet import up

    return up(paths, timeout=args.timeout)


def cmd_status(args, paths: FleetPaths) -> int:
    from deploy.ops.fleet import status

    return status(paths)


def cmd_models(args, paths: FleetPaths) -> int:
    from deploy.ops.model_cli import show_models

    return show_models(paths)


def cmd_model_action(args, paths: FleetPaths) -> int:
    from deploy.ops.model_cli import model_action

    return model_action(paths, args.cmd, args.name)


def cmd_down(args, paths: FleetPaths) -> int:
    from deploy.ops.fleet import down

    return down(paths)


def cmd_fetch_defaults(args, paths: FleetPaths) -> int:
    from deploy.provision.default_models import FetchError, ensure_default_entries, fetch_all

    try:
        fetch_all()
    except FetchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    ensure_default_entries(paths)
    return 0


def cmd_add_model(args, paths: FleetPaths) -> int:
    from deploy.ops.entry_cli import add_entry, entry_from_args
    from deploy.registry.edit import read_data
    from deploy.registry.placement import propose_for

    if args.upstream:  # a model served elsewhere: the proxy needs little of this machine
        return add_upstream(args, paths)
    if args.cores is None:
        placed = propose_for(read_data(paths))
        args.cores = ",".join(map(str, placed.cores))
        args.threads = args.threads or placed.threads
        print(f"cores {placed.cores} ({placed.reason}); --cores chooses others")
    add_entry(entry_from_args(args), paths, replace=args.replace)
    return cmd_runtimes(args, paths)  # the runtime a model's own code needs, built when it is first added


PROXY_BUDGET = "512MiB"  # an idle proxy worker holds 0.15 GiB; the rest is room for long answers in flight


def add_upstream(args, paths: FleetPaths) -> int:
    """add-model --upstream URL --upstream-model NAME ...: check the upstream, then write the entry."""
    from deploy import backends
    from deploy.ops.entry_cli import add_entry, entry_from_args
    from deploy.provision.upstream import UpstreamProblem, check_upstream
    from deploy.registry.host import HostInfo

    if not args.upstream_model:
        print("ERROR: --upstream needs --upstream-model NAME (the model's name on that server).", file=sys.stderr)
        return 2
    args.backend, args.path = "openai", args.upstream
    args.memory_budget = args.memory_budget or PROXY_BUDGET
    args.cores = args.cores or ",".join(map(str, sorted(HostInfo.current().cores)))
    args.threads = args.threads or 1
    entry = entry_from_args(args)
    try:
        print(check_upstream(backends.parse_registry({"models": [entry]}, "add-model").models[0]))
    except (UpstreamProblem, backends.ConfigProblem) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    add_entry(entry, paths, replace=args.replace)
    return 0


def cmd_download(args, paths: FleetPaths) -> int:
    from deploy.provision.modelscope import catalog_table, download_and_register
    from deploy.ops.entry_cli import entry_overrides

    if args.list or not args.model_id:
        print(catalog_table())
        return 0 if args.list else 2
    return download_and_register(paths, args.model_id, entry_overrides(args), args.revision, args.from_folder)


def cmd_quantize(args, paths: FleetPaths) -> int:
    from deploy.provision.quantize import quantize_model
    from deploy.ops.entry_cli import entry_overrides

    return quantize_model(paths, args.source_name, args.type, entry_overrides(args))


def build_parser() -> argparse.ArgumentParser:
    from deploy.ops.entry_cli import add_entry_options

    registry_help = "model_paths.toml to use (default: $FLEET_REGISTRY or the repo's)"
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.split("\n")[0])
    p.add_argument("--registry", help=registry_help)
    common = argparse.ArgumentParser(add_help=False)  # --registry also after the command
    common.add_argument("--registry", default=argparse.SUPPRESS, help=registry_help)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name: str, fn, help: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help, parents=[common])
        s.set_defaults(fn=fn)
        return s

    command("check", cmd_check, "validate model_paths.toml against this host").add_argument(
        "--no-paths", action="store_true", help="skip checking that model files exist")
    command("render", cmd_render, "write supervisord.conf from model_paths.toml").add_argument(
        "--check", action="store_true", help="exit 1 if supervisord.conf is out of date")
    command("templates", cmd_templates, "list chat template names")
    command("reference", cmd_reference, "print the model_paths.toml field reference")
    command("worker", cmd_worker, "run one model worker (supervisord does this)").add_argument("name")
    command("controller", cmd_controller, "run the controller (FastChat's, behind the fleet secret)")
    command("secret", cmd_secret, "create the fleet secret file if it is missing, and check it")
    command("keys", cmd_keys, "API keys: `keys add` creates a key (and the keys file), `keys list` shows them "
            "masked").add_argument("action", choices=("add", "list"))
    command("api-server", cmd_api_server, "run the OpenAI-compatible API server")
    command("webui", cmd_webui, "run the Gradio web UI").add_argument(
        "--auth-file", help="user:password lines; required when bound beyond loopback")
    command("up", cmd_up, "start supervisord and wait until every worker registered").add_argument(
        "--timeout", type=float, default=600)
    command("status", cmd_status, "programs, registered models and their cores")
    command("down", cmd_down, "stop the fleet")
    command("models", cmd_models, "every model: in memory or not, pinned or not (the API's GET /models)")
    for action, what in (("load", "load a model now, if its host's memory pool has room (it may unload idle "
                                  "models for it)"),
                         ("unload", "unload a model now, unless it is answering"),
                         ("pin", "keep a model in memory: never unloaded to make room or when idle"),
                         ("unpin", "let a pinned model be unloaded again")):
        command(action, cmd_model_action, what).add_argument("name", help="the model's name")
    command("fetch-defaults", cmd_fetch_defaults, "fetch and check the offline default models")
    command("runtimes", cmd_runtimes, "build the Python runtimes the registered models need besides the main one "
                                      "(a model whose own code needs an old transformers), each once")
    s = command("add-model", cmd_add_model, "add an entry to model_paths.toml (options from the entry's fields; "
                "without --cores, the least-used cores are proposed)")
    add_entry_options(s, optional=("cores", "path", "backend", "memory_budget"))
    s.add_argument("--replace", action="store_true", help="replace an entry of the same name")
    s.add_argument("--upstream", metavar="URL", help="a model served by an OpenAI-compatible server elsewhere (vLLM, "
                   "SGLang, llama.cpp's server, Ollama, another fleet): its base URL, e.g. http://gpu-host:8000/v1; "
                   "checked (reachable, key, model listed, one token) before the entry is written; backend openai, "
                   "memory budget and cores of a proxy unless given")
    s = command("download", cmd_download, "download a model from ModelScope and add its entry "
                "(entry options default to the model's preset and the fit estimate)")
    s.add_argument("model_id", nargs="?", metavar="NAME_OR_ID",
                   help="a short name (--list shows them: qwen-7b-chat, chatglm3-6b, deepseek-llm-7b-chat, ...) "
                        "or any ModelScope id")
    s.add_argument("--list", action="store_true", help="list the short names")
    s.add_argument("--revision")
    s.add_argument("--from-folder", help="register an already downloaded folder instead of downloading")
    add_entry_options(s, all_optional=True, skip=("path", "source"))
    s = command("quantize", cmd_quantize, "convert a registered Hugging Face folder to a quantised GGUF with llama.cpp's "
                "converter and quantiser, and register it (entry options default to the source entry's)")
    s.add_argument("source_name", metavar="NAME", help="a registered entry whose path is a Hugging Face folder "
                   "(--name names the new entry; default NAME-q4_k_m)")
    s.add_argument("--type", default="Q4_K_M", help="llama.cpp quantisation type (default Q4_K_M)")
    add_entry_options(s, all_optional=True, skip=("path", "source", "backend"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = FleetPaths.resolve(args.registry)
    paths.use_fastchat_logdir()
    try:
        return args.fn(args, paths)
    except RegistryError as e:
        print(f"ERROR:\n{e}", file=sys.stderr)
        return 2
