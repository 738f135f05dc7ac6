"""The test harness: processes we start and stop ourselves, by PID, on loopback (a controller,
workers, the API server and the web UI from a registry of our own), and copies of the
deployment with free ports for supervisord. Used by the tests and the benchmark."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import tomlkit

from deploy.wire.client import FleetClient

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this process (the kernel may offer a
    just-released port again before anything binds the first one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


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


class MemorySampler:
    """The peak of a sum of memory figures (`key` of each dict `figures()` gives: rss, anon, ...),
    sampled every 200 ms in a thread while the `with` block runs."""

    def __init__(self, figures, key: str = "rss"):
        self.figures, self.key, self.peak = figures, key, 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(f[self.key] for f in self.figures()))
            time.sleep(0.2)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()


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


def copy_fleet(root: Path, extra_models: list[dict] = ()) -> tuple[Path, tomlkit.TOMLDocument]:
    """The repository's deployment (its model_paths.toml with free ports, plus `extra_models`) in
    `root`, beside a link to deploy/, ready for `supervisord -c root/supervisord.conf`."""
    root.mkdir(parents=True)
    (root / "deploy").symlink_to(REPO / "deploy")
    doc = tomlkit.parse((REPO / "model_paths.toml").read_text())
    for k in ("controller_port", "api_port", "webui_port"):
        doc["deployment"][k] = free_port()
    doc["deployment"]["fleet_secret_file"] = str(fleet_secret(root))
    for m in doc["models"]:
        m["port"] = free_port()
    for extra in extra_models:
        t = tomlkit.table()
        t.update(extra)
        doc["models"].append(t)
    (root / "model_paths.toml").write_text(tomlkit.dumps(doc))
    return root, doc


def shutdown_supervisord(root: Path, timeout: float = 30) -> None:
    """Stop a supervisord started from root/supervisord.conf and wait until it is gone."""
    conf = root / "supervisord.conf"
    if not conf.exists():
        return
    subprocess.run([str(REPO / ".venv/bin/supervisorctl"), "-c", str(conf), "shutdown"], capture_output=True)
    pidfile = root / "logs" / "supervisord.pid"
    t0 = time.monotonic()
    while pidfile.exists() and time.monotonic() - t0 < timeout:
        time.sleep(0.5)


def fleet_secret(folder: Path) -> Path:
    """A fleet secret of the test's own, in `folder` (created once)."""
    from deploy.wire.secret import create_secret

    path = folder / "fleet.secret"
    create_secret(path)
    return path


def write_registry(path: Path, models: list[dict], controller_port: int, api_port: int, webui_port: int) -> Path:
    doc = tomlkit.document()
    doc["deployment"] = {"host": "127.0.0.1", "controller_port": controller_port, "api_port": api_port,
                         "webui_port": webui_port, "log_dir": "logs",
                         "fleet_secret_file": str(fleet_secret(path.parent))}
    aot = tomlkit.aot()
    for m in models:
        aot.append(tomlkit.item(m))
    doc["models"] = aot
    path.write_text(tomlkit.dumps(doc))
    return path


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
        self.secret = (tmp / "fleet.secret").read_text().strip()
        self.fleet = FleetClient(self.controller, secret=self.secret)  # the workers generate for the fleet only
        self.api_key: str | None = None

    @property
    def controller(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    def openai(self, timeout: float = 120, key: str | None = None, max_retries: int = 0):
        """The official client on this stack's API, with its key when it has one; no retries
        unless asked (a test sees each answer, refusals included)."""
        from openai import OpenAI

        return OpenAI(base_url=self.api_base, api_key=key or self.api_key or "unused", max_retries=max_retries,
                      timeout=timeout)

    def start(self, key: str, args: list[str], env: dict | None = None) -> Proc:
        p = Proc(args, self.tmp / f"{key}.log", {**self.env, **(env or {})})
        self.procs[key] = p
        return p

    def start_controller(self) -> None:
        c = self.start("controller", [PY, "-m", "deploy", "controller"])
        wait_for(self._controller_answers, 30, "controller", c)

    def _controller_answers(self) -> bool:
        try:
            self.fleet.list_models()
            return True
        except Exception:
            return False

    def start_worker(self, name: str, env: dict | None = None) -> Proc:
        return self.start(f"worker-{name}", [PY, "-m", "deploy", "worker", name], env)

    def start_fleet(self) -> None:
        """The controller, a worker per model and the API server (not waiting for registration)."""
        self.start_controller()
        for m in self.models:
            self.start_worker(m["name"])
        self.start_api()

    @property
    def webui_url(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    def start_webui(self) -> None:
        w = self.start("webui", [PY, "-m", "deploy", "webui"])
        wait_for(lambda: _ok(self.webui_url), 90, "web UI", w)

    @classmethod
    @contextmanager
    def serving_webui(cls, tmp: Path, models: list[dict]):
        """The controller, a worker per model (registered) and the web UI; stopped on leaving."""
        s = cls(tmp, models)
        try:
            s.start_controller()
            for m in models:
                s.start_worker(m["name"])
            s.wait_registered([m["name"] for m in models])
            s.start_webui()
            yield s
        finally:
            s.stop()

    def use_api_keys(self, cors_origins: list[str] = ()) -> str:
        """Give the API server a keys file (and allowed origins) before it starts; returns the key."""
        from deploy.wire.keys import add_key

        self.api_key = add_key(self.tmp / "api_keys")
        doc = tomlkit.parse(self.registry.read_text())
        doc["deployment"]["api_keys_file"] = str(self.tmp / "api_keys")
        doc["deployment"]["cors_origins"] = list(cors_origins)
        self.registry.write_text(tomlkit.dumps(doc))
        return self.api_key

    def start_api(self) -> None:
        a = self.start("api", [PY, "-m", "deploy", "api-server"])
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        wait_for(lambda: _ok(self.api_base + "/models", headers), 60, "API server", a)

    def registered(self) -> set[str]:
        return self.fleet.registered()

    def wait_registered(self, names: list[str], timeout: float = 180) -> None:
        got = self.fleet.wait_registered(names, timeout)
        assert set(names) <= got, f"timed out after {timeout}s waiting for {sorted(set(names) - got)} to register"

    def worker_address(self, model: str) -> str:
        return self.fleet.worker_address(model)

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()


def _ok(url: str, headers: dict | None = None) -> bool:
    try:
        return httpx.get(url, timeout=2, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False
