"""The worker launcher refuses bad entries fast, with our message, before loading anything."""
import subprocess
import sys

import pytest

from conftest import DEFAULTS, QWEN, QWEN_HF, copy_model_folder, entry, free_port, write_registry


def launch(tmp_path, model: dict, timeout=120):
    reg = write_registry(tmp_path / "model_paths.toml", [model], free_port(), free_port(), free_port())
    return subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "worker", model["name"]],
                          capture_output=True, text=True, timeout=timeout)


def test_missing_path_gets_our_error_not_fastchats(tmp_path):
    r = launch(tmp_path, entry(QWEN_HF, path=str(tmp_path / "Qwen-7B-Chat")))
    assert r.returncode == 78
    assert f"field 'path': {tmp_path}/Qwen-7B-Chat does not exist" in r.stderr
    assert "Fix:" in r.stderr and "Repo id must be" not in r.stderr


def test_model_that_does_not_fit_is_refused_with_numbers(tmp_path):
    r = launch(tmp_path, entry(QWEN, memory_budget="700MiB"))
    assert r.returncode == 78
    assert "does not fit its memory budget: weights 468.64 MiB + KV cache" in r.stderr
    assert "against a budget of 700.00 MiB" in r.stderr and "raise memory_budget to at least" in r.stderr


def test_cores_the_host_does_not_have(tmp_path):
    r = launch(tmp_path, entry(QWEN, cores=[0, 63]))
    assert r.returncode == 78 and "core(s) 63 do not exist on this host" in r.stderr


@pytest.mark.slow
def test_remote_code_needs_an_explicit_opt_in(tmp_path):
    folder = copy_model_folder(DEFAULTS[QWEN_HF].resolved_path, tmp_path / "custom-code-model",
                               auto_map={"AutoModelForCausalLM": "modeling_custom.CustomModel"})
    r = launch(tmp_path, entry(QWEN_HF, path=str(folder), source="modelscope:someone/custom"))
    assert r.returncode == 78
    assert "ships its own Python code" in r.stderr and "set trust_remote_code = true" in r.stderr


ECHO_WORKER = """
import sys
from deploy import backends
from tests.echo_backend import Echo
backends.BACKENDS["echo"] = Echo()  # the one registration line
from deploy.ops.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_fourth_backend_needs_no_change_to_the_launcher_fit_or_limits(tmp_path):
    """The launcher, the fit check, the limits and the worker app know no backend by name: a new
    backend (tests/echo_backend.py) is validated, sized, pinned, limited and served as it is."""
    from conftest import Proc, wait_for
    from deploy.wire.client import FleetClient
    from tests.echo_backend import Echo

    (tmp_path / "hello.txt").write_text("hello from echo")
    m = {"name": "echo-model", "path": str(tmp_path / "hello.txt"), "backend": "echo", "port": free_port(),
         "cores": [1], "memory_budget": "512MiB", "chat_template": "qwen2.5", "concurrency": 2,
         "greeting_suffix": "!"}
    controller_port = free_port()
    reg = write_registry(tmp_path / "model_paths.toml", [m], controller_port, free_port(), free_port())
    c = Proc([sys.executable, "-c", ECHO_WORKER, "--registry", str(reg), "controller"], tmp_path / "controller.log")
    p = Proc([sys.executable, "-c", ECHO_WORKER, "--registry", str(reg), "worker", "echo-model"],
             tmp_path / "echo.log", {"FLEET_MEMORY_MECHANISM": "rlimit_as"})
    try:
        addr = f"http://127.0.0.1:{m['port']}"
        fleet = FleetClient(f"http://127.0.0.1:{controller_port}")
        wait_for(lambda: "echo-model" in fleet.registered(), 60, "echo worker", p)
        info = FleetClient("http://unused").worker_info(addr)
        assert (info["backend"], info["greeting"], info["cores"]) == ("echo", "hello from echo!", [1])
        limits = open(f"/proc/{p.pid}/limits").read()
        assert str(512 * 1024**2 + Echo.address_space_headroom) in limits  # the backend's own headroom
        assert "memory estimate for 'echo-model': weights 15 B + KV cache" in p.output()
        refused = list(FleetClient("http://unused").stream(addr, {"prompt": "one two three"}))
        assert refused[-1]["error_code"] == 40101 and "fleet secret" in refused[-1]["text"]  # the fleet's only
        secret = (tmp_path / "fleet.secret").read_text().strip()
        frames = list(FleetClient("http://unused", secret=secret).stream(addr, {"prompt": "one two three"}))
        assert frames[-1] == {"text": "one two three ", "error_code": 0, "finish_reason": "stop"}
    finally:
        p.stop()
        c.stop()

    # the path check is the backend's own
    m2 = dict(m, path=str(tmp_path), name="echo-dir", port=free_port())
    reg = write_registry(tmp_path / "model_paths.toml", [m2], free_port(), free_port(), free_port())
    r = subprocess.run([sys.executable, "-c", ECHO_WORKER, "--registry", str(reg), "worker", "echo-dir"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and f"field 'path': {tmp_path} is not a .txt file" in r.stderr

    # its own field is validated by the registry, and another backend's field is named as such
    for bad, says in (({"greeting_suffix": "far too long"}, "field 'greeting_suffix': String should have at most 8"),
                      ({"mmap": True}, "'mmap' is a field of the llama.cpp backend, and this entry's backend is echo")):
        m3 = dict(m, name="echo-bad", port=free_port(), **bad)
        reg = write_registry(tmp_path / "model_paths.toml", [m3], free_port(), free_port(), free_port())
        r = subprocess.run([sys.executable, "-c", ECHO_WORKER, "--registry", str(reg), "worker", "echo-bad"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 78 and says in r.stderr, r.stderr
