"""A second host, for real: a network namespace joined by a veth pair stands for another machine.
The main host runs the controller (bound to its veth address), the API server and one local
worker; the worker host has its own checkout-like folder whose model_paths.toml says
`role = "workers"`, renders a supervisord.conf with workers only, and runs it inside the
namespace. Its model is served through the one API; cutting the link takes it out of routing
within seconds and restoring it brings it back."""
import subprocess
import time

import httpx
import pytest
import tomlkit
from openai import APIStatusError

from conftest import QWEN, SMALL, Stack, entry
from tests.netns import VethPair, namespaces_work, sh
from tests.harness import REPO, free_port, shutdown_supervisord, wait_for

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "Say hi."}]
NEIGHBOUR = "smollm2-on-the-worker-host"
REMOTE_LIMIT = "2.5GiB"  # the worker host's pool: its Qwen (2 GiB budget) or its SmolLM2 (1 GiB), not both


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    why = namespaces_work()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("multihost")
    with VethPair() as net:
        (tmp / "main").mkdir()
        main = Stack(tmp / "main", [entry(SMALL)])
        doc = tomlkit.parse(main.registry.read_text())
        doc["deployment"]["controller_host"] = "0.0.0.0"  # the controller is reachable from the network
        main.registry.write_text(tomlkit.dumps(doc))
        # the worker host: its own folder, as a checkout on another machine would be
        host = tmp / "worker-host"
        host.mkdir()
        (host / "deploy").symlink_to(REPO / "deploy")
        remote = entry(QWEN, port=free_port(), memory_budget="2GiB")
        neighbour = entry(SMALL, name=NEIGHBOUR, port=free_port(), memory_budget="1GiB")
        wdoc = tomlkit.document()
        wdoc["deployment"] = {"role": "workers", "host": net.worker_ip, "log_dir": "logs",
                              "controller_address": f"http://{net.main_ip}:{main.controller_port}",
                              "fleet_secret_file": str(tmp / "main" / "fleet.secret"),  # the same secret, copied
                              "memory_limit": REMOTE_LIMIT, "load_wait": "60s"}  # this host's own pool
        aot = tomlkit.aot()
        aot.append(tomlkit.item(remote))
        aot.append(tomlkit.item(neighbour))
        wdoc["models"] = aot
        (host / "model_paths.toml").write_text(tomlkit.dumps(wdoc))
        r = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "deploy", "--registry", str(host / "model_paths.toml"),
                            "render"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        try:
            main.start_controller()
            main.start_worker(SMALL)
            main.start_api()
            (host / "logs").mkdir()
            sh("ip", "netns", "exec", net.ns, str(REPO / ".venv/bin/supervisord"), "-c", str(host / "supervisord.conf"))
            main.wait_registered([SMALL, QWEN, NEIGHBOUR], timeout=240)
            yield main, net, host, remote
        finally:
            shutdown_supervisord(host)
            main.stop()


def test_a_worker_host_renders_workers_only(two_hosts):
    _, _, host, remote = two_hosts
    conf = (host / "supervisord.conf").read_text()
    assert f"[program:worker-{QWEN}]" in conf
    for program in ("controller", "api_server", "webui"):
        assert f"[program:{program}]" not in conf


def test_the_remote_model_is_served_through_the_one_api(two_hosts):
    main, net, _, remote = two_hosts
    assert main.worker_address(QWEN) == f"http://{net.worker_ip}:{remote['port']}"
    client = main.openai()
    for model in (QWEN, SMALL):
        r = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0)
        assert r.choices[0].message.content.strip()


def test_other_machines_cannot_use_the_fleet_directly(two_hosts):
    """The worker answers only its controller's host (and loopback); the controller's read routes,
    now on the network, need the fleet secret from anyone but loopback."""
    main, net, _, remote = two_hosts
    stranger = httpx.Client(transport=httpx.HTTPTransport(local_address=net.stranger_ip), timeout=10)
    body = {"model": QWEN, "prompt": "secret plans:", "max_new_tokens": 4}
    r = stranger.post(f"http://{net.worker_ip}:{remote['port']}/worker_generate_stream", json=body)
    assert r.status_code == 403, r.text
    r = stranger.post(f"http://{net.main_ip}:{main.controller_port}/get_worker_address", json={"model": QWEN})
    assert r.status_code == 401, r.text
    ok = httpx.post(f"http://{net.worker_ip}:{remote['port']}/model_details", json={}, timeout=10)  # from main_ip
    assert ok.status_code == 200


def test_each_host_has_its_own_pool(two_hosts):
    """The worker host's two models share its 2.5 GiB pool and take turns in it; the main host's
    model, in the main host's own pool, stays loaded throughout."""
    main, net, _, _ = two_hosts
    client = main.openai(timeout=120)

    def pools() -> dict[str, dict]:
        listed = httpx.get(main.controller + "/fleet_pools", timeout=10).json()["pools"]
        return {p["host"]: p for p in listed}

    def states() -> dict[str, str]:
        return {m["model"]: m["state"] for p in pools().values() for m in p["members"]}

    remote = pools()[net.worker_ip]
    assert remote["limit"] == int(2.5 * 1024**3) and {m["model"] for m in remote["members"]} == {QWEN, NEIGHBOUR}
    [local] = [p for host, p in pools().items() if host != net.worker_ip]
    assert {m["model"] for m in local["members"]} == {SMALL} and local["limit"] > remote["limit"]
    before, qwen_was_loaded = dict(remote["evictions"]), states()[QWEN] == "loaded"
    for model in (QWEN, NEIGHBOUR, QWEN):
        r = client.chat.completions.create(model=model, messages=HI, max_tokens=4, temperature=0)
        assert r.choices[0].message.content is not None
        now = states()
        assert now[model] == "loaded" and now[SMALL] == "loaded", now
        assert now[NEIGHBOUR if model == QWEN else QWEN] == "asleep", now  # unloaded to make room, on its host
        remote = pools()[net.worker_ip]
        assert remote["used"] <= remote["limit"]
    after = pools()[net.worker_ip]["evictions"]
    evicted = {m: after.get(m, 0) - before.get(m, 0) for m in (QWEN, NEIGHBOUR)}
    assert evicted == {QWEN: 1, NEIGHBOUR: 1 if qwen_was_loaded else 2}, (before, after)


def test_cutting_the_link_takes_the_model_out_and_restoring_brings_it_back(two_hosts):
    main, net, _, _ = two_hosts
    client = main.openai(timeout=30)
    net.link(False)
    try:
        t0 = time.monotonic()
        wait_for(lambda: QWEN not in main.registered(), 10, "the remote model to leave routing")
        gone_after = time.monotonic() - t0
        with pytest.raises(APIStatusError) as e:
            client.chat.completions.create(model=QWEN, messages=HI, max_tokens=4)
        assert e.value.status_code == 503 and e.value.response.headers["Retry-After"]
        assert client.chat.completions.create(model=SMALL, messages=HI, max_tokens=4).choices  # the rest serve on
    finally:
        net.link(True)
    t0 = time.monotonic()
    wait_for(lambda: QWEN in main.registered(), 30, "the remote model to come back")
    back_after = time.monotonic() - t0
    assert gone_after < 5, gone_after
    r = client.chat.completions.create(model=QWEN, messages=HI, max_tokens=4)
    assert r.choices[0].message.content is not None
    print(f"out of routing {gone_after:.1f} s after the cut, back {back_after:.1f} s after the restore")
