#!/usr/bin/env python3
"""Performance, side by side in one run: the llama.cpp engine called directly, the same model
through our FastChat worker, and through FastChat's OpenAI API server, on the same cores;
plus the transformers backend on the same model, cold start of the default fleet,
eval/ask_all.py's parallelism, and what tool calling adds to time to first token. Every figure is also a ratio to the memory-bandwidth bound
(tokens/s <= bandwidth / model bytes), with the bandwidth measured on the spot.

    .venv/bin/python bench/bench.py            # about five minutes on 2 cores
    .venv/bin/python bench/bench.py --quick    # fewer repeats, no fleet phases

Writes bench/results/<time>.json and prints the tables and the goals.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from deploy.backends import load_registry
from deploy.wire.client import FleetClient
from deploy.wire.generation import Sampling, chat_params
from deploy.registry.host import resident_bytes
from deploy.registry.paths import REPO_ROOT as REPO
from deploy.registry.paths import FleetPaths
from deploy.registry.render import write
from tests.harness import Stack, _ok, copy_fleet, free_port, shutdown_supervisord, wait_for

MODEL = "qwen2.5-coder-0.5b-instruct"
MODEL_HF = "qwen2.5-coder-0.5b-instruct-hf"
QUESTION = "请从1数到300，数字之间用逗号分隔，不要说别的。"
PROMPT = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
          f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- memory bandwidth
def _read_bandwidth(core: int, seconds: float, q, start) -> None:
    import numpy as np

    os.sched_setaffinity(0, {core})
    buf = np.ones(64 * 1024 * 1024, dtype=np.int64)  # 512 MiB, far beyond any cache
    buf.sum()
    start.wait()  # every reader ready: they read at once
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        buf.sum()
        n += 1
    t1 = time.time()
    q.put({"cores": sorted(os.sched_getaffinity(0)), "start": t0, "end": t1, "bytes_per_s": n * buf.nbytes / (t1 - t0)})


def readers(cores: list[int], seconds: float = 3.0) -> list[dict]:
    """One memory reader per core, all at once, each pinned to its core: what each read, and when."""
    import multiprocessing as mp

    q, start = mp.Queue(), mp.Barrier(len(cores))
    ps = [mp.Process(target=_read_bandwidth, args=(c, seconds, q, start)) for c in cores]
    for p in ps:
        p.start()
    out = [q.get() for _ in ps]
    for p in ps:
        p.join()
    return out


def bandwidth(cores: list[int], seconds: float = 3.0) -> float:
    """Aggregate read bandwidth (bytes/s) with one reader per core, all at once."""
    return sum(r["bytes_per_s"] for r in readers(cores, seconds))


# ---------------------------------------------------------------- timing one stream
class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.first = self.last = None
        self.pieces = 0
        self.tokens = None

    def piece(self):
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now
        self.pieces += 1

    def result(self) -> dict:
        n = self.tokens or self.pieces
        ttft = (self.first - self.t0) if self.first else None
        decode = (n - 1) / (self.last - self.first) if self.first and self.last > self.first and n > 1 else None
        return {"tokens": n, "ttft_s": ttft, "decode_tps": decode, "wall_s": time.perf_counter() - self.t0}


def via_engine(engine, n_predict: int) -> dict:
    t = Timer()

    def cb(chunk):
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            t.piece()
        if "usage" in chunk:
            t.tokens = chunk["usage"]["completion_tokens"]

    engine.handle_completions({"prompt": PROMPT, "n_predict": n_predict, "temperature": 0, "ignore_eos": True,
                               "stream": True, "cache_prompt": False}, cb)
    return t.result()


def question_params(client: FleetClient, model: str, question: str, n_predict: int) -> dict:
    """What the API server would send for `question` (greedy), plus ignore_eos for a fixed token count."""
    conv = client.conversation(model)
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    return {**chat_params(model, conv, Sampling(temperature=0, max_new_tokens=n_predict)), "ignore_eos": True}


def worker_params(client: FleetClient, model: str, n_predict: int) -> dict:
    params = question_params(client, model, QUESTION, n_predict)
    assert params["prompt"] == PROMPT, "the engine rows and the worker rows must decode the same prompt"
    return params


def via_worker(client: FleetClient, addr: str, model: str, n_predict: int) -> dict:
    t = Timer()
    params = worker_params(client, model, n_predict)
    prev = 0
    for frame in client.stream(addr, params):
        if len(frame["text"]) > prev:
            prev = len(frame["text"])
            t.piece()
        if frame.get("usage"):
            t.tokens = frame["usage"]["completion_tokens"]
    return t.result()


def via_api(client: httpx.Client, api: str, model: str, n_predict: int) -> dict:
    t = Timer()
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
            "max_tokens": n_predict, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", api + "/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            ch = (ev.get("choices") or [{}])[0]
            if (ch.get("delta") or {}).get("content"):
                t.piece()
            if ev.get("usage"):
                t.tokens = ev["usage"]["completion_tokens"]
    return t.result()


def _schema(**props: str) -> dict:
    return {"type": "object", "properties": {k: {"type": v} for k, v in props.items()}, "required": list(props)}


FIVE_TOOLS = [{"type": "function", "function": {"name": n, "description": d, "parameters": p}} for n, d, p in (
    ("get_weather", "Get the current weather in a city", _schema(city="string")),
    ("add", "Add two integers", _schema(a="integer", b="integer")),
    ("search_web", "Search the web and return the top results", _schema(query="string", max_results="integer")),
    ("send_email", "Send an email", _schema(to="string", subject="string", body="string")),
    ("get_time", "The current time in a time zone", _schema(timezone="string")))]


def first_chunk(client: httpx.Client, api: str, model: str, tools: bool, seed: int | None) -> tuple[float, int]:
    """(seconds to the first chunk that carries text or a tool call, prompt tokens) for one chat
    request, with the five tools (tool_choice auto) or none. A seed makes the worker compute the
    whole prompt (no KV cache reuse); without one a repeat reuses the cached prompt."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is the capital of France? One word."}],
            "temperature": 0, "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}
    body.update({"tools": FIVE_TOOLS} if tools else {})
    body.update({"seed": seed} if seed is not None else {})
    t0, first, prompt = time.monotonic(), None, 0
    with client.stream("POST", api + "/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            delta = ((ev.get("choices") or [{}])[0].get("delta") or {})
            if first is None and (delta.get("content") or delta.get("tool_calls")):
                first = time.monotonic() - t0
            prompt = (ev.get("usage") or {}).get("prompt_tokens", prompt)
    return first, prompt


def tool_overhead(client: httpx.Client, api: str, model: str, repeats: int) -> dict:
    """Time to first token with five tools against without, interleaved: with the prompt computed
    each time (cold) and with it reused from the KV cache (warm: an agent's next call)."""
    out = {}
    for kind, seed in (("cold", 1), ("warm", None)):
        runs = {True: [], False: []}
        for _ in range(repeats + 1):  # the first of each is a warm-up
            for tools in (False, True):
                runs[tools].append(first_chunk(client, api, model, tools, seed))
        out[kind] = {("with_tools" if t else "without"): {"ttft_s": statistics.median(x[0] for x in v[1:]),
                                                         "prompt_tokens": v[-1][1]} for t, v in runs.items()}
    return out


def _median_decode(runs: list[dict]) -> float:
    return statistics.median(r["decode_tps"] for r in runs if r["decode_tps"])


def single(fn, repeats: int) -> dict:
    runs = [fn() for _ in range(repeats)]
    med = lambda k: statistics.median(r[k] for r in runs if r[k] is not None)  # noqa: E731
    return {"decode_tps": med("decode_tps"), "ttft_s": med("ttft_s"), "tokens": runs[0]["tokens"]}


def together(fns: dict) -> tuple[dict, float]:
    """Run every call at the same time, one thread each; (results by key, wall seconds)."""
    out: dict = {}
    ths = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f())) for k, f in fns.items()]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return out, time.perf_counter() - t0


def aggregate(fn, streams: int) -> float:
    """Total tokens per second of `streams` requests running at once."""
    out, wall = together({i: fn for i in range(streams)})
    return sum(r["tokens"] for r in out.values()) / wall


# ---------------------------------------------------------------- the engine directly, in a child
def engine_child(path: str, cores: list[int], threads: int, slots: int, n_predict: int, repeats: int,
                 embeddings: bool = False) -> dict:
    """`embeddings`: the engine as a worker with `embeddings = true` runs it (what that costs)."""
    import xllamacpp

    os.sched_setaffinity(0, set(cores))
    p = xllamacpp.CommonParams()
    p.model.path = path
    p.n_ctx = 2048 * slots
    p.n_parallel = slots
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    if embeddings:
        p.embedding = True
        p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    engine = xllamacpp.Server(p)
    fn = lambda: via_engine(engine, n_predict)  # noqa: E731
    fn()  # warm-up
    res = {"single": single(fn, repeats), "rss": resident_bytes(os.getpid())}
    res["aggregate"] = {k: aggregate(fn, k) for k in (1, 2, 4)}
    return res


def run_engine(path, cores, threads, n_predict, repeats, embeddings: bool = False) -> dict:
    code = ("import json; from bench.bench import engine_child; "
            "print('RESULT', json.dumps(engine_child(%r, %r, %d, 4, %d, %d, %r)))"
            % (path, cores, threads, n_predict, repeats, embeddings))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"engine measurement failed:\n{out.stderr[-2000:]}")
    res = json.loads(line[7:])
    res["aggregate"] = {int(k): v for k, v in res["aggregate"].items()}
    return res


# ---------------------------------------------------------------- fleet phases
def cold_start(tmp: Path) -> float:
    """Seconds from `supervisord -c supervisord.conf` to every default worker registered."""
    root, _ = copy_fleet(tmp / "fleet")
    (root / "logs").mkdir()
    reg = load_registry(root / "model_paths.toml")
    write(reg, FleetPaths(root / "model_paths.toml"))
    names = {m.name for m in reg.models}
    t0 = time.perf_counter()
    subprocess.run([str(REPO / ".venv/bin/supervisord"), "-c", str(root / "supervisord.conf")], check=True, cwd=root)
    try:
        got = FleetClient(reg.deployment.controller_url).wait_registered(names, timeout=300, every=0.25)
        return time.perf_counter() - t0 if names <= got else float("nan")
    finally:
        shutdown_supervisord(root)


def ask_all_ratio(stack: Stack, tmp: Path) -> dict:
    out = subprocess.run([sys.executable, str(REPO / "eval/ask_all.py"), "--controller", stack.controller,
                          "--api-base", stack.api_base, "--results-dir", str(tmp / "askall"), "--run", "bench",
                          "--max-tokens", "64", "--no-progress"], capture_output=True, text=True)
    meta = json.loads((tmp / "askall" / "bench" / "run.json").read_text())
    s = meta["sessions"][-1]
    slowest = max(s["busy_s"].values())
    return {"wall_s": s["wall_s"], "slowest_share_s": slowest, "ratio": s["wall_s"] / slowest,
            "exit_code": out.returncode}


# ---------------------------------------------------------------- seed models on this box
SEED_MODELS = {"Qwen-7B-Chat": 7.72e9, "ChatGLM3-6B": 6.24e9, "DeepSeek-LLM-7B-Chat": 6.91e9}
BYTES_PER_PARAM = {"fp32 (transformers)": 4.0, "bf16 (transformers)": 2.0, "Q8_0 (llama.cpp)": 1.0625,
                   "Q4_K_M (llama.cpp)": 0.606}


def seed_table(bw: float, ram: int) -> list[dict]:
    rows = []
    for quant, bpp in BYTES_PER_PARAM.items():
        sizes = {m: p * bpp for m, p in SEED_MODELS.items()}
        total = sum(sizes.values()) + 3 * (1.0 if "transformers" in quant else 0.4) * 1024**3
        rows.append({"format": quant, **{m: {"gb": s / 1e9, "tps_bound": bw / s} for m, s in sizes.items()},
                     "all_three_gb": total / 1e9, "fits_together": total < ram * 0.9})
    return rows


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, skip cold start and ask_all")
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else 3
    n = args.tokens
    defaults = {m.name: m for m in load_registry(REPO / "model_paths.toml").models}
    gguf = defaults[MODEL].resolved_path
    model_bytes = gguf.stat().st_size
    hf_bytes = sum(f.stat().st_size for f in defaults[MODEL_HF].resolved_path.glob("*.safetensors")) * 2  # bf16 -> fp32
    res: dict = {"model": MODEL, "model_bytes": model_bytes, "tokens": n, "time": time.strftime("%Y-%m-%d %H:%M:%S")}

    print("measuring read bandwidth ...", flush=True)
    bw1, bw2 = bandwidth([0]), bandwidth([0, 1])
    res["bandwidth"] = {"1_core": bw1, "2_cores": bw2}
    bound = {1: bw1 / model_bytes, 2: bw2 / model_bytes}

    print("engine directly (1 and 2 threads) ...", flush=True)
    res["engine"] = {t: run_engine(str(gguf), [0] if t == 1 else [0, 1], t, n, repeats) for t in (1, 2)}
    print("engine with embeddings on (2 threads) ...", flush=True)
    res["engine_embeddings"] = run_engine(str(gguf), [0, 1], 2, n, repeats, embeddings=True)

    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    base = defaults[MODEL].model_dump(mode="json", exclude_none=True)
    hf = defaults[MODEL_HF].model_dump(mode="json", exclude_none=True)
    entries = [dict(base, name="bench-1t", cores=[0], threads=1, port=free_port()),
               dict(base, name="bench-2t", cores=[0, 1], threads=2, port=free_port()),
               dict(hf, name="bench-hf-fp32", cores=[0, 1], concurrency=1, port=free_port()),
               dict(hf, name="bench-hf-bf16", cores=[0, 1], concurrency=1, dtype="bfloat16", port=free_port())]
    stack = Stack(tmp, entries)
    try:
        stack.start_fleet()
        ungated_port = free_port()
        ungated = stack.start("api-ungated", [sys.executable, "-m", "bench.api_ungated", str(ungated_port)])
        ungated_base = f"http://127.0.0.1:{ungated_port}/v1"
        wait_for(lambda: _ok(ungated_base + "/models"), 60, "ungated API", ungated)
        stack.wait_registered([e["name"] for e in entries])
        client, fleet = httpx.Client(), FleetClient(stack.controller, secret=stack.secret)
        addr = {e["name"]: stack.worker_address(e["name"]) for e in entries}
        for t in (1, 2):
            name = f"bench-{t}t"
            print(f"worker and API, {t} thread(s) ...", flush=True)
            w = lambda: via_worker(fleet, addr[name], name, n)  # noqa: E731
            a = lambda: via_api(client, stack.api_base, name, n)  # noqa: E731
            u = lambda: via_api(client, ungated_base, name, n)  # noqa: E731
            w(), a(), u()  # warm-up
            gated, bare = [], []
            for _ in range(repeats):  # interleaved, so both see the same machine
                gated.append(a()), bare.append(u())
            res.setdefault("gate", {})[t] = {"with_gate": _median_decode(gated), "without_gate": _median_decode(bare)}
            res.setdefault("worker", {})[t] = {"single": single(w, repeats),
                                               "aggregate": {k: aggregate(w, k) for k in (1, 2, 4)},
                                               "rss": resident_bytes(stack.procs[f"worker-{name}"].pid)}
            res.setdefault("api", {})[t] = {"single": single(a, repeats),
                                            "aggregate": {k: aggregate(a, k) for k in (1, 2, 4)}}
        print("tool calling: time to first token with five tools and without ...", flush=True)
        res["tools"] = tool_overhead(client, stack.api_base, "bench-2t", repeats)
        print("transformers backend, fp32 and bf16 ...", flush=True)
        for dt in ("fp32", "bf16"):
            name = f"bench-hf-{dt}"
            w = lambda: via_worker(fleet, addr[name], name, min(n, 64))  # noqa: E731
            w()
            res.setdefault("transformers", {})[dt] = {"single": single(w, 1 if args.quick else 2),
                                                      "rss": resident_bytes(stack.procs[f"worker-{name}"].pid)}
        if not args.quick:
            print("eval/ask_all.py parallelism ...", flush=True)
            res["ask_all"] = ask_all_ratio(stack, tmp)
    finally:
        stack.stop()
    if not args.quick:
        print("cold start of the default fleet ...", flush=True)
        res["cold_start_s"] = cold_start(tmp)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    res["seed_models"] = seed_table(bw2, ram)
    res["transformers_bound_fp32"] = bw2 / hf_bytes
    out = REPO / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    report(res, bound)
    out.write_text(json.dumps(res, indent=2, default=str))  # now with the goals
    print(f"\nresults: {out}")
    return 0


def report(r: dict, bound: dict) -> None:
    gb = 1e9
    print(f"\nModel {r['model']}: {r['model_bytes'] / gb:.3f} GB. Read bandwidth: "
          f"{r['bandwidth']['1_core'] / gb:.1f} GB/s on 1 core, {r['bandwidth']['2_cores'] / gb:.1f} GB/s on 2. "
          f"Bound: {bound[1]:.1f} tok/s (1 core), {bound[2]:.1f} tok/s (2 cores).\n")
    print(f"{'level':10} {'threads':>7} {'decode tok/s':>12} {'of bound':>8} {'TTFT s':>7} "
          f"{'agg x1':>7} {'agg x2':>7} {'agg x4':>7} {'x4/x1':>6} {'RSS GB':>7}")
    for level in ("engine", "worker", "api"):
        for t in (1, 2):
            x = r.get(level, {}).get(t)
            if not x:
                continue
            s, ag = x["single"], x["aggregate"]
            rs = f"{x['rss'] / gb:.2f}" if x.get("rss") else "-"
            print(f"{level:10} {t:>7} {s['decode_tps']:>12.1f} {s['decode_tps'] / bound[t]:>8.0%} {s['ttft_s']:>7.2f} "
                  f"{ag[1]:>7.1f} {ag[2]:>7.1f} {ag[4]:>7.1f} {ag[4] / ag[1]:>6.2f} {rs:>7}")
    for dt, x in r.get("transformers", {}).items():
        s = x["single"]
        dt_bound = r["transformers_bound_fp32"] * (2 if dt == "bf16" else 1)
        print(f"{'hf ' + dt:10} {2:>7} {s['decode_tps']:>12.1f} {s['decode_tps'] / dt_bound:>8.0%} "
              f"{s['ttft_s']:>7.2f} {'':>7} {'':>7} {'':>7} {'':>6} {x['rss'] / gb:>7.2f}")

    print("\nGoals")
    e2, w2, a2 = r["engine"][2]["single"]["decode_tps"], r["worker"][2]["single"]["decode_tps"], r["api"][2]["single"]["decode_tps"]
    goals = [
        ("API decode >= 95% of the engine's (2 threads)", a2 / e2, 0.95, f"{a2:.1f} vs {e2:.1f} tok/s"),
        ("worker, 2 threads, >= 80% of the bandwidth bound", w2 / bound[2], 0.80, f"{w2:.1f} of {bound[2]:.1f} tok/s"),
        ("4 streams >= 1.6x single (worker, 2 threads)", r["worker"][2]["aggregate"][4] / r["worker"][2]["aggregate"][1],
         1.6, f"{r['worker'][2]['aggregate'][4]:.1f} vs {r['worker'][2]['aggregate'][1]:.1f} tok/s"),
    ]
    if "engine_embeddings" in r:
        e_on = r["engine_embeddings"]["single"]["decode_tps"]
        print(f"  [info] embeddings = true costs decode speed: {e_on:.1f} vs {e2:.1f} tok/s "
              f"({1 - e_on / e2:.0%}, engine, 2 threads)")
    for t, g in sorted(r.get("gate", {}).items()):
        goals.append((f"API decode with the request gate no lower than without it, within 3% noise "
                       f"({t} thread(s), interleaved runs)", g["with_gate"] / g["without_gate"], 0.97,
                      f"{g['with_gate']:.1f} vs {g['without_gate']:.1f} tok/s"))
    for kind, x in r.get("tools", {}).items():
        w, wo = x["with_tools"], x["without"]
        print(f"  [info] tool calling, 5 tools, {kind} prompt: time to first token {w['ttft_s']:.2f} s vs "
              f"{wo['ttft_s']:.2f} s without (x{w['ttft_s'] / wo['ttft_s']:.2f}; prompt {w['prompt_tokens']} vs "
              f"{wo['prompt_tokens']} tokens)")
    if "cold_start_s" in r:
        goals.append(("cold start to all registered < 30 s", 30 / r["cold_start_s"], 1.0, f"{r['cold_start_s']:.1f} s"))
    if "ask_all" in r:
        q = r["ask_all"]
        goals.append(("ask_all wall <= 1.2x the slowest model's share", 1.2 / q["ratio"], 1.0,
                      f"{q['wall_s']:.1f} s vs {q['slowest_share_s']:.1f} s (x{q['ratio']:.2f})"))
    for name, value, target, detail in goals:
        print(f"  [{'met' if value >= target else 'NOT met'}] {name}: {detail}")
    r["goals"] = [{"goal": g, "value": v, "target": t, "met": v >= t, "detail": d} for g, v, t, d in goals]

    print("\nSeed models on this machine (ESTIMATES from parameter counts and the measured 2-core bandwidth)")
    names = list(SEED_MODELS)
    print(f"{'format':22}" + "".join(f"{n:>26}" for n in names) + f"{'all three':>12} fit?")
    for row in r["seed_models"]:
        cells = "".join(f"{row[n]['gb']:>9.1f} GB, <={row[n]['tps_bound']:>5.1f} tok/s" for n in names)
        print(f"{row['format']:22}{cells}{row['all_three_gb']:>9.1f} GB {'yes' if row['fits_together'] else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
