"""The quick start for real: supervisord runs the default fleet from a rendered supervisord.conf."""
import shutil
import subprocess
import sys
import time

import pytest
import requests
import tomlkit

from conftest import REPO, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet_root(tmp_path):
    """A copy of the deployment (registry with free ports) beside links to our .venv and deploy/."""
    root = tmp_path / "fleet"
    root.mkdir()
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "deploy").symlink_to(REPO / "deploy")
    doc = tomlkit.parse((REPO / "model_paths.toml").read_text())
    for k in ("controller_port", "api_port", "webui_port"):
        doc["deployment"][k] = free_port()
    for m in doc["models"]:
        m["port"] = free_port()
    bad = tomlkit.table()
    bad.update({"name": "typo-model", "path": str(tmp_path / "Qwen-7B-Chat"), "backend": "transformers",
                "port": free_port(), "cores": [0], "memory_budget": "1GiB", "chat_template": "qwen-7b-chat"})
    doc["models"].append(bad)
    (root / "model_paths.toml").write_text(tomlkit.dumps(doc))
    yield root, doc
    conf = root / "supervisord.conf"
    if conf.exists():
        subprocess.run([str(REPO / ".venv/bin/supervisorctl"), "-c", str(conf), "shutdown"], capture_output=True)
        pidfile = root / "logs" / "supervisord.pid"
        for _ in range(60):
            if not pidfile.exists():
                break
            time.sleep(0.5)


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

    from deploy.fleet import programs

    progs = programs(root)
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
