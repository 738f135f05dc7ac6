"""Bring the fleet up under supervisord and wait until every worker registered; status; down.

`supervisord -c supervisord.conf` is all it takes to start; this wrapper adds what a person
wants to see: which models are answering, on which cores, and the URLs, or, for a model that
failed, the reason from its log.
"""
from __future__ import annotations

import os
import time

import httpx

from deploy.backends import load_registry
from deploy.ops.supervisor import Program, is_running, programs, start_supervisord, supervisorctl
from deploy.registry.config import Registry, check_host, pool_note
from deploy.registry.host import HostInfo, describe_cores
from deploy.registry.paths import MAIN_RUNTIME, FleetPaths, runtime_python
from deploy.registry.render import render, write
from deploy.registry.sizes import fmt_size
from deploy.registry.templates import template_in_use
from deploy.wire.client import FleetClient

FAILED_STATES = ("FATAL", "EXITED", "STOPPED")


def _log_tail(paths: FleetPaths, program: str, n: int = 6) -> str:
    p = paths.program_log(program)
    if not p.exists():
        return ""
    lines = [line for line in p.read_text(errors="replace").splitlines() if line.strip()]
    err = [i for i, line in enumerate(lines) if line.startswith("ERROR")]
    return "\n".join(lines[err[-1]:][:n] if err else lines[-n:])


def _answers(url: str) -> bool:
    """Up and serving (401: up, with API keys)."""
    try:
        return httpx.get(url, timeout=3).status_code in (200, 401)
    except httpx.HTTPError:
        return False


def _start(paths: FleetPaths, reg: Registry) -> None:
    host = HostInfo.current()
    errors, warnings = check_host(reg, host)
    for w in warnings:
        print(f"warning: {w}")
    if note := pool_note(reg, host):
        print(f"note: {note}")
    for e in errors:
        print(f"problem (that model will not start): {e}")
    conf = paths.supervisord_conf
    if not conf.exists() or conf.read_text() != render(reg, paths):
        write(reg, paths)
        print(f"{conf.name} re-rendered from {paths.registry.name}")
    paths.logs.mkdir(parents=True, exist_ok=True)
    if is_running(paths):
        supervisorctl(paths, "update")
        supervisorctl(paths, "start", "all")
        print("supervisord was already running: updated and started all programs")
    else:
        start_supervisord(paths)
        print("supervisord started")


def _wait_for_workers(paths: FleetPaths, client: FleetClient, names: list[str], deadline: float) -> dict[str, str]:
    """Print progress as it changes; return the models whose worker failed to start."""
    t0 = time.monotonic()
    failed: dict[str, str] = {}
    last = None

    def poll(got: set[str]) -> bool:
        nonlocal last
        progs = programs(paths)
        for m in names:
            p = progs.get(f"worker-{m}")
            if m not in got and p and p.state in FAILED_STATES:
                failed[m] = p.state
        waiting = [m for m in names if m not in got and m not in failed]
        line = f"registered {len(got & set(names))}/{len(names)}" + (f", waiting for {', '.join(waiting)}" if waiting else "")
        if line != last:
            print(f"[{time.monotonic() - t0:5.0f}s] {line}", flush=True)
            last = line
        return not waiting

    client.wait_registered(names, timeout=max(0.0, deadline - time.monotonic()), every=1, on_poll=poll)
    poll(client.registered())
    return failed


def up(paths: FleetPaths, timeout: float = 600) -> int:
    reg = load_registry(paths.registry)
    _start(paths, reg)
    d = reg.deployment
    client = FleetClient(d.controller_url)
    deadline = time.monotonic() + timeout
    names = [m.name for m in reg.models]
    failed = _wait_for_workers(paths, client, names, deadline)
    services = [("API server", f"http://{d.host}:{d.api_port}/v1/models"),
                ("web UI", f"http://{d.host}:{d.webui_port}/")] if d.role == "all" else []
    for what, url in services:
        while not _answers(url) and time.monotonic() < deadline:
            time.sleep(1)
        if not _answers(url):
            print(f"problem: the {what} does not answer at {url}; see {paths.logs}/ for its log")
    print()
    status(paths, reg)
    for m, state in failed.items():
        print(f"\n{m}: worker {state}. From {paths.program_log(f'worker-{m}')}:\n{_log_tail(paths, f'worker-{m}')}")
    if d.role == "all":
        print(f"\nOpenAI API: http://{d.host}:{d.api_port}/v1   (try: curl http://{d.host}:{d.api_port}/v1/models)")
        print(f"Web UI:     http://{d.host}:{d.webui_port}")
    else:
        print(f"\nWorkers registered with the controller at {d.controller_url}; their models are served by "
              f"the main host's API and web UI.")
    print(f"Stop with:  {paths.cli} down   (or: supervisorctl -c {paths.supervisord_conf} shutdown)")
    return 0 if set(names) <= client.registered() else 1


def _actual_cores(p: Program | None) -> str:
    if p and p.pid:
        try:
            return describe_cores(os.sched_getaffinity(p.pid))
        except OSError:
            pass
    return "-"


def _health(w: dict | None) -> str:
    if w is None:
        return "unregistered"
    return "up" if w["healthy"] else "DOWN"


def _row(*cells) -> str:
    """model, host, backend, template, process, health, model state, cores, actual, RSS / budget, queue,
    heartbeat"""
    widths = (34, 21, 12, 22, 9, 12, 8, 9, 7, 36, 5)
    return " ".join(f"{c!s:{w}}" for c, w in zip(cells, widths)) + (f" {cells[11]}" if len(cells) > 11 else "")


def _model_state(w: dict | None, info: dict) -> str:
    """loaded / asleep / loading: whether the model is in memory now (the pool's view)."""
    return (w or {}).get("state") or info.get("state") or "-"


def _upstream_line(name: str, info: dict) -> str | None:
    """A model served elsewhere: its upstream, whether it answers and how fast (never its key)."""
    if not info.get("upstream"):
        return None
    state = (f"answers in {info['upstream_latency_ms']} ms" if info.get("upstream_ok") else
             f"DOWN: {info.get('upstream_problem') or 'not checked yet'}")
    route = {"chat": ", via its chat route"}.get(info.get("upstream_route"), "")
    return f"{name}: upstream {info['upstream']} (model {info.get('upstream_model')}{route}) {state}"


def _pool_lines(client: FleetClient, workers: list[dict]) -> list[str]:
    """Each host's memory pool, and why a model failed to load (if one did)."""
    lines = [f"memory pool {p['host']}: {fmt_size(p['used'])} used of {fmt_size(p['limit'])} (memory_limit); "
             f"{sum(m['state'] != 'asleep' for m in p['members'])} of {len(p['members'])} model(s) in memory"
             for p in client.pools()]
    lines += [f"{','.join(w['models'])}: failed to load: {w['load_error']}" for w in workers if w.get("load_error")]
    return lines


def _memory(info: dict, budget: int | None) -> str:
    """RSS against the budget; a large mapped-file share (llama.cpp with mmap) is shown apart, as it
    is page cache the kernel can reclaim, not the worker's own memory."""
    used = fmt_size(info["rss"]) if info.get("rss") else "-"
    if info.get("rss_file", 0) > 256 * 1024**2:
        used += f" ({fmt_size(info['rss_file'])} file)"
    return f"{used} / {fmt_size(budget)}" if budget else used


def _worker_cells(w: dict | None) -> tuple:
    return (w["queue_length"], f"{w['heartbeat_age_s']} s") if w else ("-", "-")


def status(paths: FleetPaths, reg: Registry | None = None) -> int:
    """Per worker: model, host, backend, the template that builds its prompts, supervisord state,
    health, whether the model is in memory (loaded / asleep / loading), cores configured and actual, live RSS against its budget, queue and
    last heartbeat; then workers registered from other hosts, the runtimes other than the main one
    and their models, and each host's memory pool."""
    reg = reg or load_registry(paths.registry)
    client = FleetClient(reg.deployment.controller_url)
    workers = client.workers()
    by_address = {w["worker"]: w for w in workers}
    progs = programs(paths)
    print(_row("model", "host", "backend", "template", "process", "health", "state", "cores", "actual", "RSS / budget",
               "queue", "heartbeat"))
    shown, upstreams = set(), []
    for m in reg.models:
        p, w = progs.get(f"worker-{m.name}"), by_address.get(f"http://{reg.deployment.host}:{m.port}")
        info = client.worker_info(w["worker"]) if w else {}
        shown.add(w["worker"] if w else None)
        host = w["worker"].split("//")[-1] if w else f"{reg.deployment.host}:{m.port}"
        print(_row(m.name, host, m.backend, template_in_use(m), p.state if p else "absent", _health(w),
                   _model_state(w, info), describe_cores(m.cores), _actual_cores(p), _memory(info, m.memory_budget),
                   *_worker_cells(w)))
        upstreams.append(_upstream_line(m.name, info))
    for w in workers:  # registered from elsewhere (another host), not in this model_paths.toml
        if w["worker"] in shown:
            continue
        info = client.worker_info(w["worker"])
        print(_row(",".join(w["models"]), w["worker"].split("//")[-1], info.get("backend", "?"),
                   info.get("chat_template", "?"), "remote",
                   _health(w), _model_state(w, info), describe_cores(info.get("cores", [])) if info else "?", "",
                   _memory(info, info.get("memory_budget")), *_worker_cells(w)))
    for name in ("controller", "api_server", "webui") if reg.deployment.role == "all" else ():
        p = progs.get(name)
        print(_row(name, "", "", "", p.state if p else "absent").rstrip())
    for line in [u for u in upstreams if u] + _runtime_lines(reg) + _pool_lines(client, workers):
        print(line)
    return 0


def _runtime_lines(reg: Registry) -> list[str]:
    """The models whose workers run in a runtime other than the main one (their own code needs it)."""
    by_runtime: dict[str, list[str]] = {}
    for m in reg.models:
        by_runtime.setdefault(m.options.runtime_of(m), []).append(m.name)
    return [f"runtime {name} ({runtime_python(name).parent.parent}): {', '.join(models)}"
            for name, models in by_runtime.items() if name != MAIN_RUNTIME]


def down(paths: FleetPaths) -> int:
    if not is_running(paths):
        print(f"supervisord is not running for {paths.supervisord_conf}: nothing to stop")
        return 0
    r = supervisorctl(paths, "shutdown")
    print(r.stdout.strip() or r.stderr.strip())
    return 0 if r.returncode == 0 else 1
