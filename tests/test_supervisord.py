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

    # status: one row per model with its state, registration and the cores it really runs on
    st = subprocess.run([sys.executable, "-m", "deploy", "--registry", registry, "status"],
                        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert st.returncode == 0, st.stderr
    rows = {line.split()[0]: line.split() for line in st.stdout.splitlines()[1:] if line.strip()}
    for m in doc["models"]:
        row = rows[m["name"]]
        cores = ",".join(map(str, m["cores"])) if isinstance(m["cores"], list) else m["cores"]
        if m["name"] == "typo-model":
            assert row[2:4] == ["FATAL", "no"] and row[5] == "-"
        else:
            assert row[2] in ("STARTING", "RUNNING") and row[3] == "yes" and row[4] == row[5] == cores, row
    assert rows["controller"][1] in ("STARTING", "RUNNING") and rows["api_server"][1] in ("STARTING", "RUNNING")

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
