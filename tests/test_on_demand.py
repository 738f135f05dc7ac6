"""More models than memory: a memory pool per host (memory_limit) that holds one of two models at a
time. Both are registered and answer in turn, loaded on demand; the pool never goes over its
limit (the workers' summed RSS, sampled); a streaming answer is never cut to make room; two first
requests load a model once; unloading gives the memory back on both backends; a request that
cannot get memory in time gets a 503 naming the pool; a load that fails, or a worker killed while
loading, gives its reservation back. Real controller, workers and API server on loopback."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import APIStatusError, OpenAI

from conftest import QWEN, QWEN_HF, SMALL, Stack, entry, wait_for
from tests.harness import MemorySampler
from deploy.backends.slot_store import LOGGED
from deploy.registry.host import memory_of
from deploy.wire.routes import SECRET_HEADER

pytestmark = pytest.mark.slow
GiB = 1024**3
HI = [{"role": "user", "content": "Say hi."}]
LIMIT = int(2.5 * GiB)  # SmolLM2 (1 GiB budget) or the 0.5B Qwen (2 GiB), with the other asleep; not both


def pool_stack(tmp, models, **deployment) -> Stack:
    s = Stack(tmp, models)
    import tomlkit

    doc = tomlkit.parse(s.registry.read_text())
    for k, v in deployment.items():
        doc["deployment"][k] = v
    s.registry.write_text(tomlkit.dumps(doc))
    s.start_fleet()
    s.wait_registered([m["name"] for m in models])
    # Each worker tries to load at start when the pool has room: let those loads end first, so a test's
    # first request does not find a model busy loading (on a slow machine that outlasts a short load_wait).
    wait_for(lambda: "loading" not in states(s).values(), 180, "the start-up loads to end", every=0.2)
    return s


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    s = pool_stack(tmp_path_factory.mktemp("pool"), [entry(SMALL, memory_budget="1GiB"),
                                                     entry(QWEN, memory_budget="2GiB")],
                   memory_limit=LIMIT, load_wait="60s")
    try:
        yield s
    finally:
        s.stop()


def client(stack) -> OpenAI:
    return stack.openai()


def pool(stack) -> dict:
    return httpx.get(stack.controller + "/fleet_pools").json()["pools"][0]


def states(stack) -> dict[str, str]:
    return {m["model"]: m["state"] for m in pool(stack)["members"]}


LONG = [{"role": "user", "content": "Write a very long story about a cat."}]  # SmolLM2: 400 tokens, ~6 s


def ask(stack, model, max_tokens=8, messages=HI, **kw):
    return client(stack).chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                 temperature=0, **kw)


def test_two_models_answer_in_turn_within_the_pool(fleet):
    assert {m.id for m in client(fleet).models.list().data} == {SMALL, QWEN}  # both listed, whatever is loaded
    pids = [fleet.procs[f"worker-{n}"].pid for n in (SMALL, QWEN)]
    with MemorySampler(lambda: [memory_of(pid) for pid in pids]) as rss:
        for model in (SMALL, QWEN, SMALL, QWEN):
            assert ask(fleet, model).choices[0].message.content.strip()
            assert states(fleet)[model] == "loaded"
            assert sorted(states(fleet).values()) == ["asleep", "loaded"]
            p = pool(fleet)
            assert p["used"] <= p["limit"] == LIMIT
    assert 0 < rss.peak < LIMIT, rss.peak
    assert pool(fleet)["evictions"].get(SMALL, 0) >= 1 and pool(fleet)["evictions"].get(QWEN, 0) >= 1


def test_a_conversation_that_comes_back_after_a_swap_finds_its_prompt_computed(fleet):
    """keep_conversations (on by default): the 0.5B's conversation is saved to disk when the model is
    unloaded to make room, and restored when it loads again, so the follow-up after the swap finds
    the whole earlier conversation in the KV cache instead of processing it again."""
    first_turn = [{"role": "user", "content": "Summarise: " + " ".join(f"item {i}" for i in range(250))}]
    first = ask(fleet, QWEN, messages=first_turn)
    ask(fleet, SMALL)  # QWEN is unloaded to make room
    assert states(fleet)[QWEN] == "asleep"
    follow_up = first_turn + [{"role": "assistant", "content": first.choices[0].message.content},
                              {"role": "user", "content": "Shorter."}]
    again = ask(fleet, QWEN, messages=follow_up)
    assert states(fleet)[QWEN] == "loaded" and first.usage.prompt_tokens > 700
    assert again.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1, again.usage
    moved = [(m[1], int(m[2]), float(m[3])) for m in LOGGED.finditer(fleet.procs[f"worker-{QWEN}"].output())]
    assert moved[-2][0] == "saved" and moved[-1][0] == "restored", moved  # the worker says what it kept, in figures
    assert moved[-1][1] >= first.usage.prompt_tokens - 1 and moved[-1][2] > 1, moved


def test_a_streaming_answer_is_never_cut_to_make_room(fleet):
    ask(fleet, SMALL)  # SMALL loaded, QWEN asleep
    got = {}

    def long_stream():
        chunks = list(ask(fleet, SMALL, max_tokens=160, messages=LONG, stream=True))
        got["small"] = ("".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                        [c.choices[0].finish_reason for c in chunks if c.choices][-1], time.monotonic())

    t = threading.Thread(target=long_stream)
    t.start()
    time.sleep(0.5)  # the stream is going
    r = ask(fleet, QWEN)
    qwen_done = time.monotonic()
    t.join()
    assert r.choices[0].message.content.strip()
    text, finish, small_done = got["small"]
    assert text and finish in ("stop", "length")  # a whole answer, not an error event
    assert small_done <= qwen_done  # QWEN loaded only after SMALL's stream ended


def test_two_simultaneous_first_requests_load_the_model_once(fleet):
    ask(fleet, SMALL)  # QWEN asleep now
    assert states(fleet)[QWEN] == "asleep"
    loads_before = len(pool(fleet)["load_seconds"])
    with ThreadPoolExecutor(2) as ex:
        answers = list(ex.map(lambda _: ask(fleet, QWEN), range(2)))
    assert all(a.choices[0].message.content.strip() for a in answers)
    assert len(pool(fleet)["load_seconds"]) == loads_before + 1


def unload(stack, model) -> dict:
    addr = stack.worker_address(model)
    r = httpx.post(addr + "/fleet_unload", headers={SECRET_HEADER: stack.secret}, timeout=60)
    assert r.status_code == 200 and r.json()["unloaded"], r.text
    return stack.fleet.worker_info(addr)


@pytest.fixture(scope="module")
def hf_fleet(tmp_path_factory):
    s = pool_stack(tmp_path_factory.mktemp("hf"), [entry(QWEN_HF)])
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("backend", ["llama.cpp", "transformers"])
def test_unloading_gives_the_memory_back(fleet, hf_fleet, backend):
    """The worker stays up and registered; its RSS drops back near what it held before it ever
    loaded, and the next request loads the model again."""
    stack, model = (fleet, QWEN) if backend == "llama.cpp" else (hf_fleet, QWEN_HF)
    ask(stack, model)
    loaded = stack.fleet.worker_info(stack.worker_address(model))
    assert loaded["state"] == "loaded" and loaded["backend"] == backend
    after = unload(stack, model)
    weights = loaded["model_bytes"]
    assert after["state"] == "asleep" and model in stack.registered()
    assert loaded["rss"] - after["rss"] > 0.8 * weights, (loaded["rss"], after["rss"], weights)
    assert after["rss"] < after["rss_asleep"] + 0.2 * weights, (after["rss"], after["rss_asleep"], weights)
    assert ask(stack, model).choices[0].message.content.strip()  # and it comes back


def test_the_pool_route_and_the_unload_route_need_the_secret(fleet):
    addr = fleet.worker_address(SMALL)
    assert httpx.post(addr + "/fleet_unload").status_code == 401
    assert httpx.post(addr + "/fleet_unload", headers={SECRET_HEADER: "wrong-wrong-wrong-wrong"}).status_code == 401
    body = {"worker_name": addr}
    assert httpx.post(fleet.controller + "/pool/acquire", json=body).status_code == 401
    bad = httpx.post(fleet.controller + "/pool/acquire", json={"worker_name": 5},
                     headers={SECRET_HEADER: fleet.secret})
    assert bad.status_code == 400 and "worker_name" in bad.text


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A short load_wait, and a model whose file llama.cpp cannot load."""
    from test_default_models import tiny_gguf

    tmp = tmp_path_factory.mktemp("tight")
    tiny_gguf(tmp / "broken.gguf")  # a well-formed GGUF header and tensor table, but not a whole model
    models = [entry(SMALL, memory_budget="1GiB"), entry(QWEN, memory_budget="2GiB"),
              entry(SMALL, name="broken", path=str(tmp / "broken.gguf"), memory_budget="512MiB")]
    s = pool_stack(tmp, models, memory_limit=3 * GiB, load_wait="2s")
    try:
        yield s
    finally:
        s.stop()


def test_no_room_in_time_is_a_503_naming_the_pool(tight):
    ask(tight, SMALL)
    t = threading.Thread(target=lambda: list(ask(tight, SMALL, max_tokens=400, messages=LONG, stream=True)))
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    with pytest.raises(APIStatusError) as e:
        ask(tight, QWEN)
    t.join()
    assert e.value.status_code == 503 and e.value.response.headers["retry-after"] == "5"
    msg = e.value.response.json()["error"]["message"]
    assert "memory pool of host 127.0.0.1 (memory_limit 3.00 GiB" in msg and "every loaded model is busy or pinned" in msg, msg
    # it waited load_wait (2 s), not until the busy model's answer ended or the client gave up (120 s);
    # a loaded machine stretches the rest of the call (one CI run: 20 s)
    assert 1.5 < time.monotonic() - t0 < 60
    assert ask(tight, QWEN).choices[0].message.content.strip()  # once SMALL is idle, QWEN loads


def test_a_model_that_fails_to_load_gives_its_reservation_back_and_says_why(tight):
    before = pool(tight)["used"]
    with pytest.raises(APIStatusError) as e:
        ask(tight, "broken")
    assert e.value.status_code == 503 and "failed to load" in e.value.response.json()["error"]["message"]
    member = next(m for m in pool(tight)["members"] if m["model"] == "broken")
    assert member["state"] == "asleep" and "Failed to init server" in member["reason"]
    assert pool(tight)["used"] <= before + 64 * 1024**2  # its 512 MiB budget is free again
    row = next(w for w in tight.fleet.workers() if "broken" in w["models"])
    assert "Failed to init server" in row["load_error"]
    assert ask(tight, SMALL).choices[0].message.content.strip()  # the others go on
    status = __import__("subprocess").run([__import__("sys").executable, "-m", "deploy", "status"], env={
        **__import__("os").environ, **tight.env}, capture_output=True, text=True, timeout=60).stdout
    assert "broken" in status and "failed to load" in status, status


def test_a_worker_killed_while_loading_frees_its_share(tight):
    ask(tight, SMALL)  # QWEN asleep
    done = threading.Event()
    threading.Thread(target=lambda: (_ignore(lambda: ask(tight, QWEN)), done.set()), daemon=True).start()
    wait_for(lambda: states(tight).get(QWEN) == "loading", 30, "QWEN to start loading", every=0.05)
    tight.procs[f"worker-{QWEN}"].kill()
    wait_for(lambda: QWEN not in states(tight), 10, "the killed worker's share to leave the pool", every=0.2)
    assert pool(tight)["used"] < 1.5 * GiB  # SMALL's budget and an asleep worker's share, no more
    done.wait(60)
    tight.start_worker(QWEN)  # restarted (supervisord would), it registers asleep and serves again
    tight.wait_registered([QWEN])
    assert ask(tight, QWEN).choices[0].message.content.strip()


def _ignore(fn):
    try:
        fn()
    except Exception:
        pass


def test_a_model_larger_than_the_pool_is_refused_with_the_numbers(tmp_path):
    import subprocess
    import sys

    from conftest import write_registry

    reg = write_registry(tmp_path / "model_paths.toml", [entry(SMALL, memory_budget="2GiB")], 21001, 8000, 7860)
    reg.write_text(reg.read_text().replace("[deployment]", '[deployment]\nmemory_limit = "1GiB"'))
    check = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "check"], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 2
    assert "2.00 GiB is more than this host's memory pool of 1.00 GiB (memory_limit), so it could never load" in \
        check.stderr
    worker = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "worker", SMALL],
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 78 and "could never load" in worker.stderr


def test_metrics_show_what_is_loaded_the_loads_the_evictions_and_the_pool(fleet):
    ask(fleet, SMALL)
    ask(fleet, QWEN)
    text = httpx.get(fleet.api_base[:-3] + "/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    loaded = {k: v for k, v in samples.items() if k.startswith("fleet_model_loaded{")}
    assert sorted(loaded.values()) == [0.0, 1.0] and any(QWEN in k and v == 1 for k, v in loaded.items())
    assert samples['fleet_pool_limit_bytes{host="127.0.0.1"}'] == LIMIT
    assert 0 < samples['fleet_pool_used_bytes{host="127.0.0.1"}'] <= LIMIT
    assert samples[f'fleet_model_evictions_total{{model="{SMALL}"}}'] >= 1
    assert samples['fleet_model_load_seconds_count{host="127.0.0.1"}'] >= 2


def test_ask_all_asks_one_model_at_a_time_when_they_cannot_all_be_resident(fleet, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, str(REPO / "eval/ask_all.py"), "--controller", fleet.controller,
                        "--api-base", fleet.api_base, "--results-dir", str(tmp_path), "--no-progress", "--run", "r",
                        "--models", f"{SMALL},{QWEN}", "--puzzles", "yisi,single-dog", "--max-tokens", "8"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "asking one model at a time" in r.stderr and "more than its memory pool of 2.50 GiB" in r.stderr
    recs = [json.loads(x) for x in (tmp_path / "r/answers.jsonl").read_text().splitlines()]
    spans = {m: (min(x["t_start"] for x in recs if x["model"] == m), max(x["t_end"] for x in recs if x["model"] == m))
             for m in (SMALL, QWEN)}
    first, second = sorted(spans.values())
    assert first[1] <= second[0]  # no overlap: one model's answers, then the other's
    assert all(x["error"] is None for x in recs)
    session = json.loads((tmp_path / "r/run.json").read_text())["sessions"][-1]
    assert session["one_at_a_time"] and set(session["load_s"]) == {SMALL, QWEN}
    assert "one at a time, not side by side" in (tmp_path / "r/report.md").read_text()
