"""Any OpenAI-compatible server as a worker (backend = "openai"), against real servers: a llama.cpp
server (xllamacpp's, tests/llama_upstream.py) with an API key, and a second fleet's API. Chat and
completions (streamed and not, with logprobs) and embeddings through our API; the upstream killed
and restarted leaves routing within 5 s and comes back by itself; add-model --upstream checks the
upstream first and names what is wrong; the key is never shown."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from openai import APIStatusError, OpenAI

from deploy.webui.arena import Arena
from deploy.webui.votes import VoteLog
from deploy.wire.client import AsyncFleetClient
from conftest import DEFAULTS, PY, QWEN, REPO, SMALL, Proc, Stack, entry, free_port, wait_for
from tests.netns import VethPair, namespaces_work

pytestmark = pytest.mark.slow
KEY = "sk-upstream-" + "u" * 24


class LlamaUpstream:
    """A real llama.cpp server on a fixed port, which can be killed and started again."""

    def __init__(self, tmp, model=SMALL, alias="smol-up", host="127.0.0.1", netns: str | None = None):
        self.tmp, self.gguf, self.alias, self.port = tmp, str(DEFAULTS[model].resolved_path), alias, free_port()
        self.host, self.prefix = host, ["ip", "netns", "exec", netns] if netns else []
        self.key_file = tmp / "upstream.key"
        self.key_file.write_text(KEY + "\n")
        self.key_file.chmod(0o600)
        self.proc = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> None:
        self.proc = Proc([*self.prefix, PY, str(REPO / "tests/llama_upstream.py"), self.gguf, str(self.port),
                          self.alias, KEY, self.host], self.tmp / f"upstream-{time.monotonic():.0f}.log")
        wait_for(lambda: _answers(self.base + "/models"), 60, "the llama.cpp upstream", self.proc)

    def kill(self) -> None:
        self.proc.kill()

    def pause(self, paused: bool) -> None:
        """SIGSTOP: a hung upstream (it accepts connections and never answers); SIGCONT: it goes on."""
        os.kill(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def remote_entry(up: LlamaUpstream, **over) -> dict:
    e = {"name": "remote-smol", "path": up.base, "backend": "openai", "upstream_model": up.alias,
         "upstream_key_file": str(up.key_file), "port": free_port(), "cores": [0], "memory_budget": "512MiB",
         "chat_template": "smollm2"}
    e.update(over)
    return e


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    up = LlamaUpstream(tmp_path_factory.mktemp("upstream"))
    up.start()
    try:
        yield up
    finally:
        up.proc.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, upstream):
    s = Stack(tmp_path_factory.mktemp("proxied"), [remote_entry(upstream), entry(QWEN),
                                                   remote_entry(upstream, name="remote-chat", upstream_route="chat")])
    try:
        s.start_fleet()
        s.wait_registered(["remote-smol", QWEN, "remote-chat"])
        yield s
    finally:
        s.stop()


def client(stack, key="unused") -> OpenAI:
    return stack.openai(key=key)


def test_chat_completions_and_embeddings_through_the_upstream(fleet):
    c = client(fleet)
    hi = [{"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model="remote-smol", messages=hi, max_tokens=16, temperature=0)
    assert r.choices[0].message.content.strip() and r.usage.completion_tokens > 0
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="remote-smol", messages=hi, max_tokens=16, temperature=0, stream=True) if ch.choices)
    assert streamed == r.choices[0].message.content  # the same prompt, greedy: the same answer
    comp = c.completions.create(model="remote-smol", prompt="Once upon a time", max_tokens=4, temperature=0,
                                logprobs=2)
    lp = comp.choices[0].logprobs
    assert comp.choices[0].text and "".join(lp.tokens) == comp.choices[0].text
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert "".join(ch.choices[0].text for ch in c.completions.create(
        model="remote-smol", prompt="Once upon a time", max_tokens=4, temperature=0, stream=True))
    e = c.embeddings.create(model="remote-smol", input=["北京", "上海"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 576  # SmolLM2's width, computed upstream


def test_the_chat_route_for_upstreams_without_completions(fleet):
    """upstream_route = "chat": the messages go to the upstream's /v1/chat/completions, in its own
    template (the GGUF's); a raw completion prompt goes as one user message."""
    c = client(fleet)
    hi = [{"role": "system", "content": "Answer in one word."},
          {"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model="remote-chat", messages=hi, max_tokens=16, temperature=0, logprobs=True,
                                  top_logprobs=2)
    text = r.choices[0].message.content
    assert "Paris" in text and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert "".join(t.token for t in r.choices[0].logprobs.content) == text
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="remote-chat", messages=hi, max_tokens=16, temperature=0, stream=True) if ch.choices)
    assert streamed == text
    comp = c.completions.create(model="remote-chat", prompt="Name a colour.", max_tokens=8, temperature=0)
    raw = c.completions.create(model="remote-smol", prompt="Name a colour.", max_tokens=8, temperature=0)
    assert comp.choices[0].text.strip()
    # the upstream wrapped it in its chat template (role markers, its default system prompt): the
    # completions route sends the 4-5 tokens as they are
    assert raw.usage.prompt_tokens < 8 < comp.usage.prompt_tokens, (raw.usage, comp.usage)
    info = fleet.fleet.worker_info(fleet.worker_address("remote-chat"))
    assert info["upstream_route"] == "chat"


def test_it_is_one_of_the_models_for_the_api_and_ask_all(fleet, tmp_path):
    assert {"remote-smol", "remote-chat", QWEN} <= {m.id for m in client(fleet).models.list()}
    r = subprocess.run([sys.executable, str(REPO / "eval/ask_all.py"), "--controller", fleet.controller,
                        "--api-base", fleet.api_base, "--results-dir", str(tmp_path), "--no-progress", "--models",
                        "remote-smol", "--puzzles", "winter-summer", "--max-tokens", "32", "--run", "up"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "up" / "answers.jsonl").read_text().splitlines()[0])
    assert rec["model"] == "remote-smol" and rec["error"] is None and rec["answer"] and rec["completion_tokens"] > 0
    assert "| remote-smol | openai | " in (tmp_path / "up" / "report.md").read_text()


def test_the_arena_offers_it_and_says_where_it_runs(fleet, tmp_path):
    """The web UI's pickers list what the controller routes; the line under a picker says backend."""
    async def look():
        client = AsyncFleetClient(fleet.controller)
        try:
            arena = Arena(client, VoteLog(tmp_path))
            return await client.list_models(), await arena.describe("remote-smol")
        finally:
            await client.aclose()

    models, line = asyncio.run(look())
    assert {"remote-smol", "remote-chat", QWEN} <= set(models)
    assert "openai" in line and "loaded" in line and KEY not in line


def test_a_hung_upstream_blocks_nothing_else(fleet, upstream):
    """The upstream stops answering mid-request (SIGSTOP): its model leaves routing, the other
    models answer meanwhile, and the waiting request completes once the upstream goes on."""
    c = client(fleet)
    hi = [{"role": "user", "content": "Count from one to five."}]
    upstream.pause(True)
    waiting: dict = {}
    try:
        t = threading.Thread(target=lambda: waiting.update(r=c.chat.completions.create(
            model="remote-smol", messages=hi, max_tokens=8, temperature=0)))
        t.start()
        wait_for(lambda: "remote-smol" not in fleet.registered(), 10, "the hung upstream to leave routing", every=0.1)
        t0 = time.monotonic()
        assert c.chat.completions.create(model=QWEN, messages=hi, max_tokens=8).choices[0].message.content
        assert time.monotonic() - t0 < 30 and t.is_alive()  # answered while the other waits
    finally:
        upstream.pause(False)
    t.join(120)
    assert waiting["r"].choices[0].message.content
    wait_for(lambda: "remote-smol" in fleet.registered(), 20, "the model to come back", every=0.2)


def test_it_describes_the_upstream_and_never_its_key(fleet, upstream):
    # the upstream may have just come back from the hung test: one of its health checks can still
    # fail while it works off the requests queued when it stopped (CI saw upstream_ok False once)
    addr = fleet.worker_address("remote-smol")
    wait_for(lambda: fleet.fleet.worker_info(addr)["upstream_ok"], 15, "the upstream's health check to pass", every=0.2)
    info = fleet.fleet.worker_info(addr)
    assert info["backend"] == "openai" and info["upstream"] == upstream.base and info["upstream_ok"]
    assert info["upstream_latency_ms"] is not None and KEY not in json.dumps(info)
    st = subprocess.run([sys.executable, "-m", "deploy", "status"], env={**os.environ, **fleet.env},
                        capture_output=True, text=True, timeout=60).stdout
    assert f"remote-smol: upstream {upstream.base} (model smol-up) answers in" in st and KEY not in st
    assert all(KEY not in p.output() for p in fleet.procs.values())


def test_an_upstream_that_goes_away_leaves_routing_and_comes_back(fleet, upstream):
    upstream.kill()
    t0 = time.monotonic()
    wait_for(lambda: "remote-smol" not in fleet.registered(), 10, "the model to leave routing", every=0.1)
    assert time.monotonic() - t0 < 5
    with pytest.raises(APIStatusError) as e:
        client(fleet).chat.completions.create(model="remote-smol", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=4)
    assert e.value.status_code == 503 and e.value.response.headers["retry-after"]
    assert client(fleet).chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4).choices[0].message.content  # the others go on
    upstream.start()
    wait_for(lambda: "remote-smol" in fleet.registered(), 20, "the model to come back", every=0.2)
    assert client(fleet).chat.completions.create(model="remote-smol", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4).choices[0].message.content


def add_model(tmp_path, *args):
    reg = tmp_path / "model_paths.toml"
    return reg, subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "add-model", "--name",
                                "remote", "--port", str(free_port()), "--chat-template", "smollm2", *args],
                               capture_output=True, text=True, timeout=180)


def test_add_model_upstream_checks_first_and_names_what_is_wrong(upstream, tmp_path):
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text("sk-wrong-wrong-wrong-wrong\n")
    wrong_key.chmod(0o600)
    cases = [(["--upstream", "http://127.0.0.1:9/v1", "--upstream-model", "smol-up"], "cannot reach"),
             (["--upstream", upstream.base, "--upstream-model", "smol-up", "--upstream-key-file", str(wrong_key)],
              "refused the key (HTTP 401)"),
             (["--upstream", upstream.base, "--upstream-model", "gpt-9", "--upstream-key-file", str(upstream.key_file)],
              "serves smol-up, not 'gpt-9'")]
    for args, says in cases:
        reg, r = add_model(tmp_path, *args)
        assert r.returncode == 2 and says in r.stderr and "Fix:" in r.stderr, r.stderr
        assert not reg.exists() or "remote" not in reg.read_text()  # nothing written
    reg, r = add_model(tmp_path, "--upstream", upstream.base, "--upstream-model", "smol-up", "--upstream-key-file",
                       str(upstream.key_file))
    assert r.returncode == 0 and "completed a token" in r.stdout, r.stderr
    import tomllib

    m = tomllib.loads(reg.read_text())["models"][0]
    assert (m["backend"], m["path"], m["upstream_model"], m["memory_budget"]) == ("openai", upstream.base, "smol-up",
                                                                                  "512MiB")
    assert KEY not in reg.read_text() + r.stdout + r.stderr
    check = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "check"], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    reg.write_text(reg.read_text().replace("127.0.0.1", "192.0.2.10"))
    check = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "check"], capture_output=True,
                           text=True, timeout=60)
    assert "plain http beyond loopback" in check.stdout, check.stdout


def test_a_fleet_of_fleets_with_keys_on_both(tmp_path_factory):
    """A second fleet's API as the upstream of the first, each behind its own API keys."""
    inner = Stack(tmp_path_factory.mktemp("inner"), [entry(SMALL)])
    inner_key = inner.use_api_keys()
    try:
        inner.start_fleet()
        inner.wait_registered([SMALL])
        key_file = inner.tmp / "inner.key"
        key_file.write_text(inner_key)
        key_file.chmod(0o600)
        outer = Stack(tmp_path_factory.mktemp("outer"), [
            {"name": "via-inner", "path": inner.api_base, "backend": "openai", "upstream_model": SMALL,
             "upstream_key_file": str(key_file), "port": free_port(), "cores": [0], "memory_budget": "512MiB",
             "chat_template": "smollm2"}])
        outer_key = outer.use_api_keys()
        try:
            outer.start_fleet()
            outer.wait_registered(["via-inner"])
            r = client(outer, outer_key).chat.completions.create(
                model="via-inner", messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=16, temperature=0)
            assert r.choices[0].message.content.strip()
            with pytest.raises(APIStatusError) as e:
                client(outer, "sk-wrong-wrong-wrong-wrong").models.list()
            assert e.value.status_code == 401
        finally:
            outer.stop()
    finally:
        inner.stop()


@pytest.fixture
def gpu_host(tmp_path):
    why = namespaces_work()
    if why:
        pytest.skip(why)
    with VethPair(net=1) as net:
        up = LlamaUpstream(tmp_path, host=net.worker_ip, netns=net.ns)
        up.start()
        try:
            yield net, up
        finally:
            up.proc.stop()


def test_an_upstream_on_another_host_joins_and_follows_the_link(gpu_host, tmp_path):
    """The upstream on the "GPU host" (a network namespace), reached over a veth pair: it joins with
    `add-model --upstream`, answers through the API, and leaves and rejoins routing with the link."""
    net, up = gpu_host
    (tmp_path / "main").mkdir()
    stack = Stack(tmp_path / "main", [entry(SMALL)])
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(stack.registry), "add-model", "--name",
                        "gpu-model", "--port", str(free_port()), "--chat-template", "smollm2", "--upstream", up.base,
                        "--upstream-model", "smol-up", "--upstream-key-file", str(up.key_file)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "completed a token" in r.stdout, r.stderr
    try:
        stack.start_fleet()
        stack.start_worker("gpu-model")  # the entry add-model wrote
        stack.wait_registered([SMALL, "gpu-model"])
        hi = [{"role": "user", "content": "What is the capital of France?"}]
        assert client(stack).chat.completions.create(model="gpu-model", messages=hi, max_tokens=8,
                                                     temperature=0).choices[0].message.content
        net.link(False)
        t0 = time.monotonic()
        wait_for(lambda: "gpu-model" not in stack.registered(), 10, "the cut-off upstream to leave routing", every=0.1)
        assert time.monotonic() - t0 < 5
        assert client(stack).chat.completions.create(model=SMALL, messages=hi, max_tokens=4).choices[0].message.content
        net.link(True)
        wait_for(lambda: "gpu-model" in stack.registered(), 20, "the upstream to come back", every=0.2)
        assert client(stack).chat.completions.create(model="gpu-model", messages=hi, max_tokens=8,
                                                     temperature=0).choices[0].message.content
    finally:
        stack.stop()


VLLM_MODEL = os.environ.get("FLEET_VLLM_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")


def test_vllm_on_a_gpu_joins_as_an_openai_upstream(tmp_path):
    """The GPU-host recipe (docs/multi-host.md) with vLLM itself: where vllm is installed and a GPU is present
    (FLEET_VLLM_MODEL: a model it can load there), `vllm serve` joins through an openai entry."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        pytest.skip("vllm is not installed here (a CPU machine): see docs/multi-host.md, 'A GPU host running vLLM'")
    if not torch.cuda.is_available():
        pytest.skip("no GPU here: vLLM serves on a GPU host (docs/multi-host.md, 'A GPU host running vLLM')")
    port, key_file = free_port(), tmp_path / "vllm.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    server = Proc([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", VLLM_MODEL,
                   "--served-model-name", "vllm-model", "--host", "127.0.0.1", "--port", str(port),
                   "--api-key", KEY], tmp_path / "vllm.log")
    (tmp_path / "main").mkdir()
    stack = Stack(tmp_path / "main", [{
        "name": "on-vllm", "path": f"http://127.0.0.1:{port}/v1", "backend": "openai", "upstream_model": "vllm-model",
        "upstream_key_file": str(key_file), "port": free_port(), "cores": [0], "memory_budget": "512MiB",
        "chat_template": "qwen2.5"}])
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/v1/models"), 900, "vllm serve", server)
        stack.start_fleet()
        stack.wait_registered(["on-vllm"])
        c = client(stack)
        r = c.chat.completions.create(model="on-vllm", messages=[{"role": "user", "content": "Say hi."}],
                                      max_tokens=8, logprobs=True, top_logprobs=2)
        assert r.choices[0].message.content and r.choices[0].logprobs.content
    finally:
        stack.stop()
        server.stop()
