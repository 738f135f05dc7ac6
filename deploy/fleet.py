"""Bring the fleet up under supervisord and wait until every worker registered.

`supervisord -c supervisord.conf` is all it takes to start; this wrapper adds
what a person wants to see: which models are answering, on which cores, and
the URLs, or, for a model that failed, the reason from its log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from deploy.config import DEFAULT_REGISTRY, Registry, check_host, load_registry
from deploy.host import HostInfo, describe_cores
from deploy.render import render, write
from deploy.sizes import fmt_size

BIN = Path(sys.executable).parent


def root_of(registry: str | None) -> Path:
    """supervisord.conf and logs/ live beside the registry they were rendered from."""
    return Path(registry or os.environ.get("FLEET_REGISTRY") or DEFAULT_REGISTRY).resolve().parent


@dataclass
class Program:
    name: str
    state: str
    pid: int | None


def supervisorctl(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "supervisorctl"), "-c", str(root / "supervisord.conf"), *args],
                          capture_output=True, text=True, cwd=root)


def programs(root: Path) -> dict[str, Program]:
    out = {}
    for line in supervisorctl(root, "status").stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] not in {"RUNNING", "STARTING", "BACKOFF", "FATAL", "EXITED", "STOPPED",
                                              "STOPPING", "UNKNOWN"}:
            continue
        pid = None
        if "pid" in parts:
            pid = int(parts[parts.index("pid") + 1].rstrip(","))
        elif parts[1] == "STARTING":  # alive, within startsecs: status does not print its pid
            r = supervisorctl(root, "pid", parts[0])
            pid = int(r.stdout.strip()) if r.stdout.strip().isdigit() and int(r.stdout.strip()) > 0 else None
        out[parts[0].split(":")[-1]] = Program(parts[0], parts[1], pid)
    return out


def registered(reg: Registry) -> set[str]:
    try:
        r = requests.post(reg.deployment.controller_url + "/list_models", timeout=3)
        return set(r.json()["models"])
    except (requests.RequestException, ValueError, KeyError):
        return set()


def _log_tail(root: Path, reg: Registry, program: str, n: int = 6) -> str:
    p = root / reg.deployment.log_dir / f"{program}.log"
    if not p.exists():
        return ""
    lines = [l for l in p.read_text(errors="replace").splitlines() if l.strip()]
    err = [i for i, l in enumerate(lines) if l.startswith("ERROR")]
    return "\n".join(lines[err[-1]:][:n] if err else lines[-n:])


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def up(registry: str | None = None, timeout: float = 600) -> int:
    reg = load_registry(registry)
    root = root_of(registry)
    conf = root / "supervisord.conf"
    errors, warnings = check_host(reg, HostInfo.current())
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"problem (that model will not start): {e}")
    if not conf.exists() or conf.read_text() != render(reg):
        write(reg, conf)
        print("supervisord.conf re-rendered from model_paths.toml")
    (root / reg.deployment.log_dir).mkdir(exist_ok=True)

    if supervisorctl(root, "pid").returncode == 0:
        supervisorctl(root, "update")
        supervisorctl(root, "start", "all")
        print("supervisord was already running: updated and started all programs")
    else:
        subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True, cwd=root)
        print("supervisord started")

    names = [m.name for m in reg.models]
    t0 = time.monotonic()
    failed: dict[str, str] = {}
    last = None
    while time.monotonic() - t0 < timeout:
        got = registered(reg)
        progs = programs(root)
        for m in names:
            p = progs.get(f"worker-{m}")
            if m not in got and p and p.state in ("FATAL", "EXITED", "STOPPED"):
                failed[m] = p.state
        waiting = [m for m in names if m not in got and m not in failed]
        line = f"registered {len(got & set(names))}/{len(names)}" + \
               (f", waiting for {', '.join(waiting)}" if waiting else "")
        if line != last:  # print on change only
            print(f"[{time.monotonic() - t0:5.0f}s] {line}", flush=True)
            last = line
        if not waiting:
            break
        time.sleep(1)
    d = reg.deployment
    for what, url in (("API server", f"http://{d.host}:{d.api_port}/v1/models"),
                      ("web UI", f"http://{d.host}:{d.webui_port}/")):
        while not _answers(url) and time.monotonic() - t0 < timeout:
            time.sleep(1)
        if not _answers(url):
            print(f"problem: the {what} does not answer at {url}; see {d.log_dir}/ for its log")
    print()
    status(registry, reg)
    for m, state in failed.items():
        print(f"\n{m}: worker {state}. From logs/worker-{m}.log:\n{_log_tail(root, reg, f'worker-{m}')}")
    print(f"\nOpenAI API: http://{d.host}:{d.api_port}/v1   (try: curl http://{d.host}:{d.api_port}/v1/models)")
    print(f"Web UI:     http://{d.host}:{d.webui_port}")
    print("Stop with:  python -m deploy down   (or: .venv/bin/supervisorctl -c supervisord.conf shutdown)")
    missing = set(names) - registered(reg)
    return 0 if not missing else 1


def status(registry: str | None = None, reg: Registry | None = None) -> int:
    reg = reg or load_registry(registry)
    got = registered(reg)
    progs = programs(root_of(registry))
    print(f"{'model':34} {'backend':12} {'state':9} {'registered':10} {'cores(cfg)':10} {'cores(actual)':13} budget")
    for m in reg.models:
        p = progs.get(f"worker-{m.name}")
        actual = "-"
        if p and p.pid:
            try:
                actual = describe_cores(os.sched_getaffinity(p.pid))
            except OSError:
                pass
        print(f"{m.name:34} {m.backend.value:12} {(p.state if p else 'absent'):9} "
              f"{('yes' if m.name in got else 'no'):10} {describe_cores(m.cores):10} {actual:13} "
              f"{fmt_size(m.memory_budget)}")
    for name in ("controller", "api_server", "webui"):
        p = progs.get(name)
        print(f"{name:34} {'':12} {(p.state if p else 'absent'):9}")
    return 0


def down(registry: str | None = None) -> int:
    r = supervisorctl(root_of(registry), "shutdown")
    print(r.stdout.strip() or r.stderr.strip())
    return 0
