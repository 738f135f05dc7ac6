"""The real stack: FastChat controller and API server, our workers on both backends, the official openai client."""
import json
import re
import subprocess
import threading
import time

import pytest
import requests

from conftest import QWEN, QWEN_HF, SMALL
from deploy.wire.client import FleetClient

pytestmark = pytest.mark.slow
SERVED = [SMALL, QWEN, QWEN_HF]
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_lists_every_registered_model(client):
    ids = {m.id for m in client.models.list().data}
    assert set(SERVED) <= ids
    assert "broken-path" not in ids


def test_bad_worker_fails_clearly_while_the_others_serve(stack, client):
    p = stack.procs["worker-broken-path"]
    assert p.p.wait(timeout=30) == 78
    out = p.output()
    assert "field 'path'" in out and "does not exist" in out and "Fix:" in out
    r = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "你好"}], max_tokens=16)
    assert r.choices[0].message.content


@pytest.mark.parametrize("model", SERVED)
def test_chat_in_chinese_streaming_and_not_stops_on_its_own(client, model):
    # SmolLM2-135M is English-only and loops greedily on harder Chinese prompts; it answers 你好 and stops.
    msgs = [{"role": "user", "content": "你好" if model == SMALL else "用一句话介绍北京。"}]
    r = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=400)
    full = r.choices[0].message.content
    assert full.strip() and r.choices[0].finish_reason == "stop", (full, r.choices[0].finish_reason)
    assert "<|im_end|>" not in full and "<|im_start|>" not in full
    assert r.usage.completion_tokens < 400 and r.usage.prompt_tokens > 10
    if model != SMALL:  # SmolLM2 is an English model; the Qwens answer in Chinese
        assert CJK.search(full), full

    pieces, finish, usage = [], None, None
    for ch in client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=400, stream=True,
                                             stream_options={"include_usage": True}):
        if ch.choices and ch.choices[0].delta.content:
            pieces.append(ch.choices[0].delta.content)
        if ch.choices and ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
        usage = ch.usage or usage
    assert len(pieces) > 1 and finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens) == (r.usage.prompt_tokens, r.usage.completion_tokens)
    assert "".join(pieces) == full  # greedy: streaming carries exactly the same UTF-8 text
    assert "\ufffd" not in "".join(pieces)


def test_completions_endpoint_streams(client):
    text = "".join(c.choices[0].text for c in client.completions.create(
        model=QWEN, prompt="春眠不觉晓，", max_tokens=12, temperature=0, stream=True))
    assert CJK.search(text)


def test_malformed_requests_get_clear_errors(client):
    from openai import BadRequestError, NotFoundError

    with pytest.raises(NotFoundError) as e:  # what OpenAI answers
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found" and "no-such-model" in str(e.value) and QWEN not in str(e.value)
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "hi"}], temperature=-3)
    assert "temperature" in str(e.value)


def test_workers_are_pinned_to_their_cores(stack):
    for m in stack.models:
        if m["name"] == "broken-path":
            continue
        pid = stack.procs[f"worker-{m['name']}"].pid
        out = subprocess.run(["taskset", "-cp", str(pid)], capture_output=True, text=True).stdout
        assert out.strip().endswith(": " + ",".join(map(str, m["cores"]))), out


def test_both_paths_use_the_configured_template(stack):
    for m in stack.models[:3]:
        served = requests.post(stack.worker_address(m["name"]) + "/worker_get_conv_template").json()["conv"]
        assert served["name"] == m["chat_template"]
        assert FleetClient(stack.controller).conversation(m["name"]).name == m["chat_template"]  # the web UI's lookup


def test_llamacpp_worker_batches_concurrent_requests(client):
    """Four streams on one worker run together in the engine's slots, not one after another."""
    first, done = {}, {}

    def ask(i):
        for ch in client.chat.completions.create(
                model=QWEN, messages=[{"role": "user", "content": f"数到{20 + i}，用逗号分隔。"}],
                temperature=0, max_tokens=48, stream=True):
            if ch.choices and ch.choices[0].delta.content and i not in first:
                first[i] = time.monotonic()
        done[i] = time.monotonic()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(done) == 4
    assert max(first.values()) < min(done.values()), "a request waited for another to finish"


def test_workers_describe_themselves(stack):
    for m in stack.models[:3]:
        info = stack.fleet.worker_info(stack.worker_address(m["name"]))
        assert (info["name"], info["backend"], info["cores"]) == (m["name"], m["backend"], m["cores"])
        assert info["memory_budget"] > 0 and info["memory_limit"]


def test_llamacpp_workers_hold_their_weights_once(stack):
    """Read, not mapped: the weights are the worker's own memory, counted once, and the GGUF's
    pages are not also resident in it (with mmap, llama.cpp's repacked copy and the mapped file
    both counted: bench/llamacpp_memory.py)."""
    from deploy.backends import parse_registry

    m = next(m for m in stack.models if m["name"] == QWEN)
    info = stack.fleet.worker_info(stack.worker_address(QWEN))
    size = parse_registry({"models": [m]}).models[0].resolved_path.stat().st_size
    assert info["model_bytes"] == size
    assert info["rss_file"] < 0.5 * size, info  # shared libraries only; mapped, the whole file would be here too
    assert info["rss_anon"] > 0.9 * size and info["rss"] == pytest.approx(info["rss_anon"] + info["rss_file"], rel=0.05)


def test_count_token_matches_an_independent_tokenizer(stack):
    """The worker counts with the engine's tokenizer; the HF tokenizer of the same model must agree."""
    from transformers import AutoTokenizer

    from conftest import DEFAULTS

    tok = AutoTokenizer.from_pretrained(str(DEFAULTS[QWEN_HF].resolved_path))
    addr = stack.worker_address(QWEN)
    for text in ("<|im_start|>user\n你好<|im_end|>", "单身狗产生的原因有两个，一是谁都看不上，二是谁都看不上" * 7,
                 "def f(x):\n    return x ** 2  # squares"):
        n = requests.post(addr + "/count_token", json={"prompt": text}, headers={"X-Fleet-Secret": stack.secret}).json()
        assert n == {"count": len(tok(text).input_ids), "error_code": 0}, text


def test_memory_mechanism_is_logged_and_applied(stack):
    hf = stack.procs[f"worker-{QWEN_HF}"]
    assert "memory budget enforced by RLIMIT_AS" in hf.output()
    limits = open(f"/proc/{hf.pid}/limits").read()
    line = next(l for l in limits.splitlines() if l.startswith("Max address space"))
    from conftest import DEFAULTS
    from deploy.backends import get as backend

    budget = DEFAULTS[QWEN_HF].memory_budget  # plus the backend's measured address-space headroom
    assert str(budget + backend("transformers").address_space_headroom) in line
    from deploy.worker.limits import strongest_mechanism

    expected = {"cgroup2": "cgroup v2 memory.max", "cgroup1": "cgroup v1 memory.limit_in_bytes",
                "rlimit_as": "RLIMIT_AS"}[strongest_mechanism()]  # what this host offers, probed
    assert f"memory budget enforced by {expected} = 1.00 GiB" in stack.procs[f"worker-{SMALL}"].output()


def test_seed_makes_sampling_repeatable(client):
    def ask(seed):
        return client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": "给我讲一个很短的故事。"}],
            temperature=1.0, max_tokens=24, seed=seed).choices[0].message.content

    assert ask(11) == ask(11)
    assert len({ask(s) for s in (1, 2, 3)}) > 1


def test_a_worker_without_the_fleet_secret_cannot_take_over_a_model(stack, client):
    """The hijack: a server of an attacker's registers under an existing model name. Without the
    secret, or with a wrong one, it is refused, and no chat ever reaches it."""
    from deploy.wire.routes import SECRET_HEADER
    from test_control_plane import FakeWorker, registration

    fake = FakeWorker(models=(QWEN,))
    try:
        for headers in ({}, {SECRET_HEADER: "guessed"}, {"Content-Type": "text/plain"}):
            r = requests.post(stack.controller + "/register_worker", data=json.dumps(registration(fake.url, (QWEN,))),
                              headers=headers, timeout=5)
            assert r.status_code == 401, r.text
        for i in range(10):
            reply = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": f"秘密 {i}"}],
                                                   max_tokens=4, temperature=0)
            assert reply.choices[0].message.content != "stolen"
        assert fake.prompts == []
        assert fake.url not in {w["worker"] for w in stack.fleet.workers()}
    finally:
        fake.close()


def test_a_killed_worker_leaves_routing_within_seconds(stack):
    assert "victim" in stack.registered()
    stack.procs["worker-victim"].kill()
    t0 = time.monotonic()
    while "victim" in stack.registered() and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert "victim" not in stack.registered()
    assert time.monotonic() - t0 < 5
    down = [w for w in stack.fleet.workers() if "victim" in w["models"]]
    assert down and down[0]["healthy"] is False
    # a request for it says it is restarting, and when to retry, instead of a 500 or "no such model"
    from openai import APIStatusError

    quick = stack.openai(timeout=30)
    with pytest.raises(APIStatusError) as e:
        quick.chat.completions.create(model="victim", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert e.value.status_code == 503 and e.value.response.headers["Retry-After"] == "5"
    assert "model 'victim' is restarting" in str(e.value)
