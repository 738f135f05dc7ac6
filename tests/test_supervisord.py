"""The quick start for real: supervisord runs the default fleet from a rendered supervisord.conf."""
import subprocess
import sys

import pytest
import requests

from conftest import REPO, free_port
from tests.harness import copy_fleet, shutdown_supervisord

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet_root(tmp_path):
    """A copy of the deployment (registry with free ports, plus a model with a wrong path)."""
    bad = {"name": "typo-model", "path": str(tmp_path / "Qwen-7B-Chat"), "backend": "transformers",
           "port": free_port(), "cores": [0], "memory_budget": "1GiB", "chat_template": "qwen-7b-chat"}
    root, doc = copy_fleet(tmp_path / "fleet", [bad])
    yield root, doc
    shutdown_supervisord(root)


def test_default_fleet_comes_up_pinned_and_answers(fleet_root):
    root, doc = fleet_root
    registry = str(root / "model_paths.toml")
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", registry, "up", "--timeout", "300"],
                       capture_output=True, text=True, cwd=REPO, timeout=400)
    out = r.stdout + r.stderr
    good = [m["name"] for m in doc["models"] if m["name"] != "typo-model"]
    # exit 1: one model failed, and says why; every other one registered
    assert r.returncode == 1, out
    assert f"registered {len(good)}/{len(good) + 1}" in out, out
    assert "typo-model: worker FATAL" in out and "does not exist" in out and "Fix:" in out, out
    d = doc["deployment"]
    assert f"OpenAI API: http://127.0.0.1:{d['api_port']}/v1" in out and f"Web UI:     http://127.0.0.1:{d['webui_port']}" in out

    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{d['api_port']}/v1", api_key="unused")
    assert {m.id for m in client.models.list().data} == set(good)
    for name in good:
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "你好"}],
                                               max_tokens=24, temperature=0)
        assert reply.choices[0].message.content.strip()

    from deploy.ops.supervisor import programs
    from deploy.registry.paths import FleetPaths

    progs = programs(FleetPaths.resolve(registry))
    for m in doc["models"]:
        p = progs[f"worker-{m['name']}"]
        if m["name"] == "typo-model":
            assert p.state == "FATAL"  # a failed start, not restarted forever
            starts = (root / "logs" / "worker-typo-model.log").read_text().count("not started")
            assert starts <= 3
            continue
        assert p.state in ("STARTING", "RUNNING") and p.pid, p  # STARTING until its (long) startsecs pass
        taskset = subprocess.run(["taskset", "-cp", str(p.pid)], capture_output=True, text=True).stdout
        assert taskset.strip().endswith(": " + ",".join(map(str, m["cores"]))), taskset

    page = requests.get(f"http://127.0.0.1:{d['webui_port']}", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()

    # status: one row per model: process state, health, whether the model is in memory (the default
    # fleet fits its pool: every model loaded), the cores it really runs on, live RSS against its budget;
    # then the memory pool
    import re

    st = subprocess.run([sys.executable, "-m", "deploy", "--registry", registry, "status"],
                        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert st.returncode == 0, st.stderr
    lines = {line.split()[0]: line for line in st.stdout.splitlines()[1:] if line.strip()}
    units = {"MiB": 2**20, "GiB": 2**30}
    for m in doc["models"]:
        line, row = lines[m["name"]], lines[m["name"]].split()
        cores = ",".join(map(str, m["cores"])) if isinstance(m["cores"], list) else m["cores"]
        if m["name"] == "typo-model":
            assert row[4:7] == ["FATAL", "unregistered", "-"] and row[8] == "-", line
            continue
        assert row[3] == m.get("chat_template", "auto"), line  # the template each model uses
        assert row[4] in ("STARTING", "RUNNING") and row[5] == "up" and row[6] == "loaded", line
        assert row[7] == row[8] == cores, line
        mem = re.search(r"([\d.]+) (MiB|GiB) / ([\d.]+) GiB", line)
        used, budget = float(mem.group(1)) * units[mem.group(2)], float(mem.group(3)) * 2**30
        assert 50 * 2**20 < used < budget, line  # live, and within its budget
    assert lines["controller"].split()[1] in ("STARTING", "RUNNING")
    pool = re.search(r"memory pool 127.0.0.1: ([\d.]+) GiB used of ([\d.]+) GiB \(memory_limit\); (\d) of (\d) model",
                     st.stdout)
    assert pool and float(pool.group(1)) < float(pool.group(2)) and pool.group(3) == pool.group(4) == str(len(good)), \
        st.stdout

    # down: everything stops, supervisord exits; a second down has nothing to stop
    dn = subprocess.run([sys.executable, "-m", "deploy", "--registry", registry, "down"],
                        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert dn.returncode == 0 and "Shut down" in dn.stdout, dn.stdout + dn.stderr
    from tests.harness import wait_for

    wait_for(lambda: not (root / "logs" / "supervisord.pid").exists(), 30, "supervisord to exit")
    for m in doc["models"]:
        pid = progs[f"worker-{m['name']}"].pid
        assert pid is None or not _alive(pid), m["name"]
    again = subprocess.run([sys.executable, "-m", "deploy", "--registry", registry, "down"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_up_from_a_registry_kept_elsewhere(tmp_path):
    """`up --registry ~/fleet/mine.toml` as a user keeps it: another name, an absolute log_dir, no .venv
    beside it. The fleet starts on this environment's Python, writes its own supervisord file and logs,
    answers, and `down` stops that fleet only."""
    import tomlkit

    from conftest import SMALL, entry
    from tests.harness import write_registry

    folder, logs = tmp_path / "home" / "fleet", tmp_path / "logs"  # short: a unix socket path has 107 bytes
    folder.mkdir(parents=True)
    registry = write_registry(folder / "mine.toml", [entry(SMALL)], free_port(), free_port(), free_port())
    doc = tomlkit.parse(registry.read_text())
    doc["deployment"]["log_dir"] = str(logs)
    registry.write_text(tomlkit.dumps(doc))
    run = lambda *a, t=400: subprocess.run([sys.executable, "-m", "deploy", "--registry", str(registry), *a],  # noqa
                                           capture_output=True, text=True, cwd=tmp_path, timeout=t)
    try:
        r = run("up", "--timeout", "300")
        assert r.returncode == 0, r.stdout + r.stderr
        assert (folder / "mine.supervisord.conf").exists() and not (folder / "supervisord.conf").exists()
        assert (logs / f"mine.worker-{SMALL}.log").exists() and (logs / "mine.supervisord.pid").exists()
        assert f"--registry {registry} down" in r.stdout
        from openai import OpenAI

        api = f"http://127.0.0.1:{doc['deployment']['api_port']}/v1"
        reply = OpenAI(base_url=api, api_key="unused").chat.completions.create(
            model=SMALL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert reply.choices[0].message.content is not None
    finally:
        dn = run("down", t=60)
    assert dn.returncode == 0 and "Shut down" in dn.stdout, dn.stdout + dn.stderr
