"""Chaos against the real fleet under supervisord: while a bounded load of streaming and
non-streaming chats runs, kill -9 a worker, the controller, the API server and the web UI, one
after another. Every request must end with a complete answer or a clear error (an OpenAI error
the client raises; a refused or cut connection while the API server itself is down), never a
hang, a plain-text 500 or a garbled stream; every program must come back by itself, and a killed
worker must leave routing within 5 s and return once restarted."""
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import tomlkit

from conftest import QWEN, REPO, SMALL
from deploy.wire.client import FleetClient
from deploy.ops.supervisor import programs
from deploy.registry.paths import FleetPaths
from tests.harness import copy_fleet, shutdown_supervisord, wait_for

pytestmark = pytest.mark.slow
MODELS = (SMALL, QWEN)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root, doc = copy_fleet(tmp_path_factory.mktemp("chaos") / "fleet")
    keep = tomlkit.aot()
    for m in doc["models"]:
        if m["name"] in MODELS:
            keep.append(m)
    doc["models"] = keep
    (root / "model_paths.toml").write_text(tomlkit.dumps(doc))
    registry = str(root / "model_paths.toml")
    try:
        r = subprocess.run([sys.executable, "-m", "deploy", "--registry", registry, "up", "--timeout", "300"],
                           capture_output=True, text=True, cwd=REPO, timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr
        paths = FleetPaths.resolve(registry)
        # past every program's startsecs, so a kill is a crash to recover from, not a failed start
        wait_for(lambda: all(p.state == "RUNNING" for p in programs(paths).values()), 120, "every program RUNNING")
        yield paths, doc["deployment"]
    finally:
        shutdown_supervisord(root)


class Load:
    """Two client threads asking both models, alternating streaming and not, until stopped."""

    def __init__(self, api_base: str):
        self.client = openai.OpenAI(base_url=api_base, api_key="unused", max_retries=0, timeout=60)
        self.results: list[tuple[str, str, float]] = []  # (outcome, detail, when it ended)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(2)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)
        assert not any(t.is_alive() for t in self.threads), "a request hung"

    def run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            model, stream = MODELS[(n + i) % 2], bool(n % 2)
            outcome, detail = self.one(model, stream)
            self.results.append((outcome, detail, time.monotonic()))
            if outcome != "complete":
                time.sleep(0.2)  # a bounded load, also while something is down

    def one(self, model: str, stream: bool) -> tuple[str, str]:
        msgs = [{"role": "user", "content": "Count from 1 to 20."}]
        t0 = time.monotonic()
        try:
            if stream:
                text, finish = "", None
                for ch in self.client.chat.completions.create(model=model, messages=msgs, max_tokens=48, stream=True):
                    if ch.choices:
                        text += ch.choices[0].delta.content or ""
                        finish = ch.choices[0].finish_reason or finish
                ok = finish in ("stop", "length") and text.strip()
            else:
                r = self.client.chat.completions.create(model=model, messages=msgs, max_tokens=48)
                ok = r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.content.strip()
            return ("complete", model) if ok else ("incomplete", f"{model} stream={stream}")
        except openai.APIStatusError as e:  # an HTTP error: it must be OpenAI-shaped JSON
            shaped = isinstance(e.body, dict) and e.body.get("message")
            return ("clear error" if shaped else "unshaped error", f"{e.status_code} {str(e)[:120]}")
        except openai.APITimeoutError:
            return ("hang", f"{model} after {time.monotonic() - t0:.0f} s")
        except openai.APIConnectionError as e:
            return ("connection error", str(e)[:120])
        except openai.APIError as e:  # an error event in a stream
            return ("clear error", f"stream: {str(e)[:120]}")
        except Exception as e:  # a garbled stream shows up here (JSON decoding and such)
            return ("garbled", f"{type(e).__name__}: {e}"[:200])


def kill9(paths: FleetPaths, program: str) -> int:
    pid = programs(paths)[program].pid
    os.kill(pid, signal.SIGKILL)
    return pid


def back(paths: FleetPaths, program: str, old_pid: int, timeout: float) -> float:
    t0 = time.monotonic()

    def restarted():
        p = programs(paths).get(program)
        return p and p.pid and p.pid != old_pid and p.state in ("STARTING", "RUNNING")

    wait_for(restarted, timeout, f"{program} to be restarted by supervisord")
    return time.monotonic() - t0


def test_every_kind_of_process_killed_under_load(fleet):
    paths, d = fleet
    api_base = f"http://127.0.0.1:{d['api_port']}/v1"
    fleet_client = FleetClient(f"http://127.0.0.1:{d['controller_port']}")
    timings = {}
    with Load(api_base) as load:
        time.sleep(3)
        # a worker: out of routing within 5 s, back by itself
        pid = kill9(paths, f"worker-{SMALL}")
        t0 = time.monotonic()
        wait_for(lambda: SMALL not in fleet_client.registered(), 5, "the killed worker to leave routing", every=0.1)
        timings["worker out of routing"] = time.monotonic() - t0
        back(paths, f"worker-{SMALL}", pid, 30)
        wait_for(lambda: SMALL in fleet_client.registered(), 120, "the restarted worker to register")
        timings["worker serving again"] = time.monotonic() - t0
        # the controller: restarted, and every worker registers with it again
        pid = kill9(paths, "controller")
        t0 = time.monotonic()
        back(paths, "controller", pid, 30)
        wait_for(lambda: set(MODELS) <= fleet_client.registered(), 60, "workers to re-register with the new controller")
        timings["controller routing again"] = time.monotonic() - t0
        # the API server and the web UI
        api_down = []
        for program, url in (("api_server", api_base + "/models"), ("webui", f"http://127.0.0.1:{d['webui_port']}/")):
            pid = kill9(paths, program)
            t0 = time.monotonic()
            back(paths, program, pid, 30)
            wait_for(lambda: _answers(url), 90, f"{program} to answer again")
            timings[f"{program} answering again"] = time.monotonic() - t0
            if program == "api_server":
                api_down = [t0, time.monotonic() + 1]
        # and the load is served again: a request asked after everything came back completes
        recovered = time.monotonic()
        wait_for(lambda: any(o == "complete" and t > recovered for o, _, t in load.results), 120,
                 "a request of the load to complete after every restart")
    outcomes = [o for o, _, _ in load.results]
    print(f"\n{len(outcomes)} requests: " + ", ".join(f"{o} {outcomes.count(o)}" for o in sorted(set(outcomes))))
    print("; ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    bad = [r for r in load.results if r[0] in ("hang", "garbled", "unshaped error", "incomplete")]
    assert bad == [], bad
    cut = [r for r in load.results if r[0] == "connection error" and not api_down[0] <= r[2] <= api_down[1]]
    assert cut == [], cut  # refused connections only while the API server itself was down
    assert timings["worker out of routing"] < 5
    for name, p in programs(paths).items():  # everything came back by itself
        assert p.state in ("STARTING", "RUNNING"), (name, p)
    client = openai.OpenAI(base_url=api_base, api_key="unused", max_retries=0, timeout=60)
    for model in MODELS:
        assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=4).choices[0].message.content is not None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_replica_takes_over_when_its_twin_dies(tmp_path):
    """Two workers serve one model (`serves`): the controller balances between them, and when one
    is killed its model stays served; after the dead one leaves routing (within 5 s) every request
    goes to the other."""
    from conftest import Stack, entry

    models = [entry(SMALL, name="smol-a", serves=SMALL), entry(SMALL, name="smol-b", serves=SMALL)]
    stack = Stack(tmp_path, models)
    try:
        stack.start_fleet()
        wait_for(lambda: len([w for w in stack.fleet.workers() if w["healthy"]]) == 2, 120, "both replicas")
        client = stack.openai(timeout=60)
        assert [m.id for m in client.models.list().data] == [SMALL]
        ask = lambda: client.chat.completions.create(model=SMALL, messages=[{"role": "user", "content": "hi"}],  # noqa: E731
                                                     max_tokens=4)
        ask()
        stack.procs["worker-smol-a"].kill()
        t0, outcomes = time.monotonic(), []
        while time.monotonic() - t0 < 8:
            try:
                ask()
                outcomes.append((time.monotonic() - t0, "ok"))
            except openai.APIStatusError as e:
                outcomes.append((time.monotonic() - t0, e.status_code))
        late = [o for t, o in outcomes if t > 5]
        assert late and set(late) == {"ok"}, outcomes  # after the dead one left routing: all served
        assert all(o in ("ok", 503) for _, o in outcomes), outcomes  # before: a clear, retryable error at worst
        assert SMALL in stack.registered()
        dead = [w for w in stack.fleet.workers() if not w["healthy"]]
        assert len(dead) == 1 and dead[0]["worker"].endswith(f":{models[0]['port']}")
    finally:
        stack.stop()
