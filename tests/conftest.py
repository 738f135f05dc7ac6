"""Fixtures that start the real stack on loopback and stop only what they started, by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import tomlkit

# FastChat modules write log files into $LOGDIR (default: cwd) as soon as they are imported.
os.environ.setdefault("LOGDIR", str(Path(__file__).resolve().parent.parent / "logs" / "fastchat"))
os.makedirs(os.environ["LOGDIR"], exist_ok=True)

from deploy.config import load_registry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "eval"))  # the eval/askall package, as eval/ask_all.py imports it
PY = sys.executable
DEFAULTS = {m.name: m for m in load_registry(REPO / "model_paths.toml").models}
SMALL = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_HF = "qwen2.5-coder-0.5b-instruct-hf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process we started, in its own session so we can stop its whole group."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT, cwd=REPO,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                  start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """A crash: SIGKILL, no graceful shutdown (uvicorn would let in-flight answers finish)."""
        if self.p.poll() is None:
            cgroups = _fleet_cgroups(self.p.pid)
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            for d in cgroups:  # a killed worker cannot remove its own memory cgroup
                for _ in range(50):
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        time.sleep(0.1)

    def stop(self, timeout: float = 15) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self._fh.close()


def _fleet_cgroups(pid: int) -> list[Path]:
    out = []
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "/fleet-" in path:
                root = Path("/sys/fs/cgroup/memory") if "memory" in controllers.split(",") else Path("/sys/fs/cgroup")
                out.append(root / path.lstrip("/"))
    except OSError:
        pass
    return out


def wait_for(pred, timeout: float, what: str, proc: Proc | None = None, every: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.p.returncode}:\n{proc.output()[-3000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f"\n{proc.output()[-3000:]}" if proc else ""))


def write_registry(path: Path, models: list[dict], controller_port: int, api_port: int, webui_port: int) -> Path:
    doc = tomlkit.document()
    doc["deployment"] = {"host": "127.0.0.1", "controller_port": controller_port, "api_port": api_port,
                         "webui_port": webui_port, "log_dir": "logs"}
    aot = tomlkit.aot()
    for m in models:
        aot.append(tomlkit.item(m))
    doc["models"] = aot
    path.write_text(tomlkit.dumps(doc))
    return path


def copy_model_folder(src: Path, dest: Path, **config_changes) -> Path:
    """A model folder that links to src's files, with config.json edited."""
    import json

    dest.mkdir()
    for f in src.iterdir():
        if f.name != "config.json" and not f.name.startswith("."):
            (dest / f.name).symlink_to(f)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config_changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def entry(model: str, **over) -> dict:
    """A default model's entry as a dict, with overrides (a fresh port by default)."""
    d = DEFAULTS[model].model_dump(mode="json", exclude_none=True)
    d["port"] = free_port()
    d.update(over)
    return d


class Stack:
    """Controller + workers + API server from a registry of our own, on free loopback ports."""

    def __init__(self, tmp: Path, models: list[dict]):
        self.tmp = tmp
        self.controller_port, self.api_port, self.webui_port = free_port(), free_port(), free_port()
        self.registry = write_registry(tmp / "model_paths.toml", models, self.controller_port,
                                       self.api_port, self.webui_port)
        self.env = {"FLEET_REGISTRY": str(self.registry)}
        self.models = models
        self.procs: dict[str, Proc] = {}

    @property
    def controller(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    def start(self, key: str, args: list[str], env: dict | None = None) -> Proc:
        p = Proc(args, self.tmp / f"{key}.log", {**self.env, **(env or {})})
        self.procs[key] = p
        return p

    def start_controller(self) -> None:
        c = self.start("controller", [PY, "-m", "fastchat.serve.controller", "--host", "127.0.0.1",
                                      "--port", str(self.controller_port)])
        wait_for(lambda: _ok(self.controller + "/list_models"), 30, "controller", c)

    def start_worker(self, name: str, env: dict | None = None) -> Proc:
        return self.start(f"worker-{name}", [PY, "-m", "deploy", "worker", name], env)

    @property
    def webui_url(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    def start_webui(self) -> None:
        w = self.start("webui", [PY, "-m", "deploy", "webui"])
        wait_for(lambda: _ok(self.webui_url, method="get"), 90, "web UI", w)

    def start_api(self) -> None:
        a = self.start("api", [PY, "-m", "deploy", "api-server"])
        wait_for(lambda: _ok(self.api_base + "/models", method="get"), 60, "API server", a)

    def registered(self) -> set[str]:
        try:
            return set(requests.post(self.controller + "/list_models", timeout=3).json()["models"])
        except (requests.RequestException, ValueError):
            return set()

    def wait_registered(self, names: list[str], timeout: float = 180) -> None:
        wait_for(lambda: set(names) <= self.registered(), timeout, f"{names} to register")

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()


def _ok(url: str, method: str = "post") -> bool:
    try:
        return getattr(requests, method)(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two llama.cpp workers (SmolLM2, Qwen 0.5B) and the transformers worker, plus a worker
    whose model path is wrong, behind the real controller and API server. The transformers
    worker runs under the RLIMIT_AS fallback, to prove its measured headroom is enough to load."""
    tmp = tmp_path_factory.mktemp("stack")
    models = [entry(SMALL), entry(QWEN), entry(QWEN_HF),
              entry(QWEN, name="broken-path", path=str(tmp / "missing" / "model.gguf"))]
    s = Stack(tmp, models)
    try:
        s.start_controller()
        for m in models:
            s.start_worker(m["name"], {"FLEET_MEMORY_MECHANISM": "rlimit_as"} if m["name"] == QWEN_HF else None)
        s.start_api()
        s.wait_registered([SMALL, QWEN, QWEN_HF])
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(stack):
    from openai import OpenAI

    return OpenAI(base_url=stack.api_base, api_key="unused", timeout=120)
