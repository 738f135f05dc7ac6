"""Talking to supervisord: supervisorctl commands and the state of each program."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploy.registry.paths import FleetPaths

BIN = Path(sys.executable).parent
STATES = {"RUNNING", "STARTING", "BACKOFF", "FATAL", "EXITED", "STOPPED", "STOPPING", "UNKNOWN"}


@dataclass
class Program:
    name: str
    state: str
    pid: int | None


def supervisorctl(paths: FleetPaths, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "supervisorctl"), "-c", str(paths.supervisord_conf), *args],
                          capture_output=True, text=True, cwd=paths.root)


def is_running(paths: FleetPaths) -> bool:
    return supervisorctl(paths, "pid").returncode == 0


def start_supervisord(paths: FleetPaths) -> None:
    subprocess.run([str(BIN / "supervisord"), "-c", str(paths.supervisord_conf)], check=True, cwd=paths.root)


def programs(paths: FleetPaths) -> dict[str, Program]:
    """Program name (without group) -> state and pid."""
    out = {}
    for line in supervisorctl(paths, "status").stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] not in STATES:
            continue
        pid = None
        if "pid" in parts:
            pid = int(parts[parts.index("pid") + 1].rstrip(","))
        elif parts[1] == "STARTING":  # alive, within startsecs: status does not print its pid
            r = supervisorctl(paths, "pid", parts[0]).stdout.strip()
            pid = int(r) if r.isdigit() and int(r) > 0 else None
        out[parts[0].split(":")[-1]] = Program(parts[0], parts[1], pid)
    return out
