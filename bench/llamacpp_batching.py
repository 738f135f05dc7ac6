#!/usr/bin/env python3
"""What llama.cpp's engine options do for concurrent streams, side by side in one run.

Two streams decoding at once gave less aggregate throughput than one (bench/bench.py), and four
barely more. The suspects: llama.cpp's batched path on this CPU (the repacked weight layout,
CPU_REPACK, which `no_extra_bufts` turns off), the slots' KV layout (one buffer per slot or one
unified), flash attention, and threads. This script loads one GGUF with each option in a fresh
process, as our worker loads it (weights read, not mapped; four slots), and measures the
aggregate decode rate of 1, 2 and 4 streams at once (prompt processing not counted), and prompt
processing on a 1,900-token prompt:

    .venv/bin/python bench/llamacpp_batching.py [GGUF] [--threads 2] [--tokens 48] [--rounds 3]
        [--options "worker's settings,flash attention off"]

The default GGUF is the seed-shaped synthetic DeepSeek-LLM-7B-Chat Q4_K_M (bench/seed_models.py)
if it has been made, else the default 1.5B model.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from deploy.registry.paths import cache_dir

OPTIONS = {
    "worker's settings": {},
    "no repack": {"no_extra_bufts": True},
    "flash attention on": {"flash_attn_type": "LLAMA_FLASH_ATTN_TYPE_ENABLED"},
    "flash attention off": {"flash_attn_type": "LLAMA_FLASH_ATTN_TYPE_DISABLED"},
    "unified KV cache": {"kv_unified": True},
    "1 thread": {"threads": 1},
}
SLOTS = 4
PROMPT_TOKENS = 1900  # within one slot's 2048


def child(gguf: str, option: dict, threads: int, tokens: int) -> dict:
    import xllamacpp

    from bench import via_engine  # bench/bench.py: a sibling, since this file runs as a script

    p = xllamacpp.CommonParams()
    p.model.path = gguf
    p.n_ctx = 2048 * SLOTS
    p.n_parallel = SLOTS
    p.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE  # as the worker (mmap = false)
    threads = option.pop("threads", threads)
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    for k, v in option.items():
        setattr(p, k, getattr(xllamacpp.llama_flash_attn_type, v) if k == "flash_attn_type" else v)
    engine = xllamacpp.Server(p)
    via_engine(engine, 4)  # warm-up
    one = lambda: via_engine(engine, tokens)  # noqa: E731
    return {"threads": threads, "aggregate": {k: decode_together(one, k) for k in (1, 2, 4)},
            "prompt_tps": prompt_speed(engine)}


def prompt_speed(engine, tokens: int = PROMPT_TOKENS) -> float:
    """Prompt processing tok/s on a prompt of about `tokens` tokens, nothing cached."""
    import httpx

    with httpx.Client(base_url=engine.listening_address, timeout=900) as http:
        per_word = len(http.post("/tokenize", json={"content": "word " * 100}).json()["tokens"]) / 100
        r = http.post("/completion", json={"prompt": "word " * int(tokens / per_word), "n_predict": 1,
                                           "cache_prompt": False}).json()
    return r["timings"]["prompt_per_second"]


def decode_together(one, streams: int) -> float:
    """Aggregate decode rate of `streams` identical requests started at once: they are prompt-
    processed together and then decode in lockstep, so it is the sum of their decode rates
    (first to last token; prompt processing is not in it)."""
    from bench import together

    out, _ = together({i: one for i in range(streams)})
    return sum(r["decode_tps"] for r in out.values())


def default_gguf() -> Path:
    seed = cache_dir() / "synthetic" / "synthetic-deepseek-llm-7b-chat-q4_k_m.gguf"
    return seed if seed.exists() else cache_dir() / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="?", default=str(default_gguf()))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--options", help=f"comma-separated, of: {', '.join(OPTIONS)} (default: all)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="load and measure every option this many times, interleaved; medians are shown")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print("RESULT", json.dumps(child(a.gguf, json.loads(a.child), a.threads, a.tokens)))
        return 0
    names = a.options.split(",") if a.options else list(OPTIONS)
    print(f"{Path(a.gguf).name}: {Path(a.gguf).stat().st_size / 1e9:.2f} GB, {SLOTS} slots, {a.tokens} tokens "
          f"per stream, {a.threads} threads unless said\n")
    print(f"{'option':22} {'threads':>7} {'decode tok/s, 1 stream':>22} {'2 at once':>9} {'4 at once':>9} "
          f"{'x4/x1':>6} {'prompt tok/s':>12}")
    runs: dict[str, list] = {name: [] for name in names}
    for _ in range(a.rounds):  # interleaved: each option sees the machine as the others do
        for name in names:
            out = subprocess.run([sys.executable, __file__, a.gguf, "--threads", str(a.threads), "--tokens",
                                  str(a.tokens), "--child", json.dumps(OPTIONS[name])], capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parent.parent)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{name:22} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            runs[name].append(json.loads(line[7:]))
    results = {}
    for name, rs in runs.items():
        if not rs:
            continue
        g = {k: statistics.median(r["aggregate"][str(k)] for r in rs) for k in (1, 2, 4)}  # keys via JSON
        pp = statistics.median(r["prompt_tps"] for r in rs)
        results[name] = {"threads": rs[0]["threads"], "aggregate": g, "prompt_tps": pp, "runs": rs}
        print(f"{name:22} {rs[0]['threads']:>7} {g[1]:>22.2f} {g[2]:>9.2f} {g[4]:>9.2f} {g[4] / g[1]:>6.2f} "
              f"{pp:>12.1f}", flush=True)
    out = Path(__file__).parent / "results" / time.strftime("llamacpp-batching-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gguf": a.gguf, "threads": a.threads, "tokens": a.tokens, "rounds": a.rounds,
                               "results": results}, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
