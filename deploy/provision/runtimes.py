"""The Python environments a worker may run in besides the main one (.venv), built only where a
registered model needs one, once. A model whose own code (trust_remote_code) was written for an old
transformers (the seed models ChatGLM3-6B and Qwen-7B-Chat) runs its worker in the
`transformers-4.41` runtime; everything else (controller, API server, web UI, llama.cpp workers,
transformers workers of current architectures) runs in the main one. FastChat runs one process per
worker, so a worker's Python is the runtime's (supervisord's command, and `deploy worker` moves
itself there); Xinference's per-model virtual environments are the precedent.

Each runtime is a virtual environment in .runtimes/NAME, installed from runtimes/NAME.lock (torch
from this machine's CPU wheel first, as in the main one) with this project on top, and stamped with
the lock's hash: a second build installs nothing, a changed lock rebuilds it.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from deploy.provision.pip import pip_install
from deploy.registry.config import Registry
from deploy.registry.locks import held
from deploy.registry.paths import MAIN_RUNTIME, REPO_ROOT, RUNTIMES_DIR, runtime_python

LOCKS = REPO_ROOT / "runtimes"
TORCH = "torch==2.13.0"  # the CPU wheel on this machine; first, so nothing pulls a CUDA build


class RuntimeBuildError(Exception):
    """A runtime could not be built (the message names the step and the fix)."""


def lock_of(name: str) -> Path:
    return LOCKS / f"{name}.lock"


def known() -> list[str]:
    return sorted(p.stem for p in LOCKS.glob("*.lock"))


def needed(reg: Registry) -> dict[str, list[str]]:
    """The runtimes other than the main one that the registry's models need: name -> models."""
    out: dict[str, list[str]] = {}
    for m in reg.models:
        name = m.options.runtime_of(m)
        if name != MAIN_RUNTIME:
            out.setdefault(name, []).append(m.name)
    return out


def stamp(name: str) -> str:
    return hashlib.sha256(lock_of(name).read_bytes()).hexdigest()


def is_ready(name: str) -> bool:
    marker = RUNTIMES_DIR / name / ".lock-installed"
    return runtime_python(name).exists() and marker.exists() and marker.read_text() == stamp(name)


def _pip(python: Path, args: list[str], what: str) -> None:
    r = subprocess.run([*pip_install(python), *args], capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-20:])
        raise RuntimeBuildError(f"{tail}\ninstalling {what} into the runtime failed (exit {r.returncode}). Fix: read the "
                            f"lines above; rerun `python -m deploy runtimes` (it starts over).")


def ensure(name: str, say=print) -> Path:
    """The runtime's Python, built if it is not (or its lock changed); a second call installs nothing."""
    if name == MAIN_RUNTIME:
        return runtime_python(name)
    if not lock_of(name).exists():
        raise RuntimeBuildError(f"no runtime named '{name}' (known: {', '.join(known())}). Fix: use one of those, or "
                            f"runtime = \"auto\" in the entry.")
    python = runtime_python(name)
    with held(RUNTIMES_DIR / f".{name}.lock", f"building the runtime {name}"):  # built once, by the first
        if is_ready(name):
            say(f"runtime {name}: present ({python.parent.parent})")
            return python
        _build(name, python, say)
    return python


def _build(name: str, python: Path, say) -> None:
    venv = RUNTIMES_DIR / name
    say(f"runtime {name}: building {venv} from {lock_of(name).relative_to(REPO_ROOT)} (once; a few minutes) ...")
    shutil.rmtree(venv, ignore_errors=True)
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeBuildError(f"creating {venv} failed: {r.stderr.strip()}. Fix: install python3.11-venv.")
    _pip(python, [TORCH], "torch (CPU)")
    _pip(python, ["-r", str(lock_of(name))], lock_of(name).name)
    _pip(python, ["--no-deps", "-e", str(REPO_ROOT), "--config-settings", "editable_mode=compat"], "this project")
    (venv / ".lock-installed").write_text(stamp(name))
    say(f"runtime {name}: ready")


def ensure_for(reg: Registry, say=print) -> dict[str, Path]:
    """Every runtime the registry's models need, built where missing."""
    out = {}
    for name, models in needed(reg).items():
        say(f"runtime {name} for {', '.join(models)}")
        out[name] = ensure(name, say)
    return out

