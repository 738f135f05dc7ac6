"""Models loaded, unloaded, pinned and unpinned on request, through the API (llama.cpp's router
routes: GET /models with each model's status, POST /models/load, /models/unload), our /models/pin
and /models/unpin, and the CLI (`python -m deploy models | load | unload | pin | unpin`), behind the
API keys; a pool that holds one of the two models at a time refuses what does not fit with its
reason. Real controller, workers and API server on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx
import pytest
import tomlkit

from conftest import QWEN, REPO, SMALL, Stack, entry
from tests.test_on_demand import LIMIT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """SmolLM2 (1 GiB) and the 0.5B Qwen (2 GiB) in a pool that holds one of them, API keys on."""
    s = Stack(tmp_path_factory.mktemp("residency"), [entry(SMALL, memory_budget="1GiB"),
                                                     entry(QWEN, memory_budget="2GiB")])
    s.use_api_keys()
    doc = tomlkit.parse(s.registry.read_text())
    doc["deployment"]["memory_limit"], doc["deployment"]["load_wait"] = LIMIT, "60s"
    s.registry.write_text(tomlkit.dumps(doc))
    try:
        s.start_fleet()
        s.wait_registered([SMALL, QWEN])
        yield s
    finally:
        s.stop()


def api(fleet, method: str, path: str, key: str | None = "", **kw) -> httpx.Response:
    key = fleet.api_key if key == "" else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, fleet.api_base.removesuffix("/v1") + path, headers=headers, timeout=300, **kw)


def statuses(fleet) -> dict[str, dict]:
    r = api(fleet, "GET", "/models")
    assert r.status_code == 200, r.text
    return {m["id"]: m["status"] for m in r.json()["data"]}


def cli(fleet, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy", "--registry", str(fleet.registry), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "FLEET_API_KEY": fleet.api_key})


def test_keys_guard_every_route(fleet):
    for method, path, body in (("GET", "/models", None), ("POST", "/models/load", {"model": SMALL}),
                               ("POST", "/models/unload", {"model": SMALL}), ("POST", "/models/pin", {"model": SMALL}),
                               ("POST", "/models/unpin", {"model": SMALL})):
        for key in (None, "sk-wrong"):
            assert api(fleet, method, path, key=key, json=body).status_code == 401, (path, key)


def test_load_unload_pin_through_the_api(fleet):
    assert api(fleet, "POST", "/models/load", json={"model": SMALL}).json()["status"]["value"] == "loaded"
    assert statuses(fleet)[SMALL] == {"value": "loaded", "pinned": False, "failed": False, "reason": None}
    # loading the other makes room: the idle SmolLM2 is unloaded, as any load would
    done = api(fleet, "POST", "/models/load", json={"model": QWEN})
    assert done.status_code == 200 and done.json()["status"]["value"] == "loaded"
    assert statuses(fleet)[SMALL]["value"] == "unloaded"
    # pinned, the Qwen stays: loading SmolLM2 is refused with the pool's reason, naming the pin
    assert api(fleet, "POST", "/models/pin", json={"model": QWEN}).json()["status"]["pinned"] is True
    refused = api(fleet, "POST", "/models/load", json={"model": SMALL})
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert "memory pool" in message and "pinned" in message and f"unpin {QWEN}" in message
    assert statuses(fleet)[QWEN] == {"value": "loaded", "pinned": True, "failed": False, "reason": None}
    refused = api(fleet, "POST", "/models/unload", json={"model": QWEN})  # pinned means kept, until unpinned
    assert refused.status_code == 409 and "pinned" in refused.json()["error"]["message"], refused.text
    # unpinned and unloaded on request; an unknown model is a 404; a bad body a 400
    assert api(fleet, "POST", "/models/unpin", json={"model": QWEN}).json()["status"]["pinned"] is False
    assert api(fleet, "POST", "/models/unload", json={"model": QWEN}).json()["status"]["value"] == "unloaded"
    assert {s["value"] for s in statuses(fleet).values()} == {"unloaded"}
    assert api(fleet, "POST", "/models/load", json={"model": "nope"}).status_code == 404
    assert api(fleet, "POST", "/models/load", json={}).status_code == 400


def test_unloading_a_model_mid_answer_is_refused(fleet):
    client = fleet.openai()
    stream = client.chat.completions.create(model=SMALL, messages=[{"role": "user", "content": "Write a long story."}],
                                            max_tokens=200, temperature=0, stream=True)
    first = next(iter(stream))  # the answer is under way
    assert first
    refused = api(fleet, "POST", "/models/unload", json={"model": SMALL})
    assert refused.status_code == 409 and "answering" in refused.json()["error"]["message"]
    done = threading.Thread(target=lambda: [c for c in stream])
    done.start()
    done.join(120)
    assert api(fleet, "POST", "/models/unload", json={"model": SMALL}).status_code == 200


def test_the_cli_shows_loads_pins_and_refuses_with_the_reason(fleet):
    assert cli(fleet, "load", SMALL).returncode == 0
    shown = cli(fleet, "models").stdout
    assert any(line.split()[:2] == [SMALL, "loaded"] for line in shown.splitlines()), shown
    assert cli(fleet, "pin", SMALL).stdout.strip() == f"{SMALL}: loaded, pinned"
    r = cli(fleet, "load", QWEN)  # SmolLM2 pinned: no room for the Qwen
    assert r.returncode == 1 and "pinned" in r.stderr and "memory pool" in r.stderr
    assert cli(fleet, "unpin", SMALL).returncode == 0
    assert cli(fleet, "load", QWEN).returncode == 0
    assert any(line.split()[:3] == [QWEN, "loaded", "no"] for line in cli(fleet, "models").stdout.splitlines())
