#!/usr/bin/env python3
"""Where a llama.cpp worker's memory goes, per load option, side by side in one run.

RSS mixes two kinds of memory: anonymous memory (the repacked weight copy, the KV cache, compute
buffers: what a memory budget must hold) and mapped pages of the GGUF file (page cache: shared
between processes and, when clean and idle, reclaimed by the kernel before anything is killed).
llama.cpp on a CPU repacks most quantised tensors into an anonymous copy at load (its CPU_REPACK
buffer), so with mmap the file pages of those tensors stay resident but are never touched again.
This script loads one GGUF in fresh processes, each way the fleet can (read or mapped; repacked or
not: the `mmap` and `repack` fields of a registry entry) and with the warm-up pass the fleet no
longer makes, decodes with each, and prints the load time, the first request's prompt time,
anonymous and file RSS and the decode speed. The seed-shaped 7B GGUFs (bench/seed_scale.py) give
the figures a 7B switch is made of:

    .venv/bin/python bench/llamacpp_memory.py [GGUF] [--threads 2] [--tokens 64]
    .venv/bin/python bench/llamacpp_memory.py ~/.cache/fastchat-fleet/synthetic/synthetic-deepseek-llm-7b-chat-q4_k_m.gguf
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from deploy.registry.paths import cache_dir

READ = {"load_mode": "LLAMA_LOAD_MODE_NONE"}
OPTIONS = {  # the fleet's own loads (mmap, repack in a registry entry; never a warm-up pass), then what was
    "read, repack (fleet default)": READ,
    "mmap, repack": {},
    "mmap, no repack": {"no_extra_bufts": True},
    "read, repack, warm-up": {**READ, "warmup": True},  # the fleet default before 4167deb
}
BASE = "read, repack (fleet default)"
PROMPT = "Write a short story about a robot who learns to cook."


def child(gguf: str, option: dict, threads: int, tokens: int) -> dict:
    import httpx
    import xllamacpp

    from deploy.registry.host import memory_of

    p = xllamacpp.CommonParams()
    p.model.path = gguf
    p.n_ctx = 2048
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    p.warmup = False
    for k, v in option.items():
        setattr(p, k, getattr(xllamacpp.llama_load_mode, v) if k == "load_mode" else v)
    t0 = time.perf_counter()
    server = xllamacpp.Server(p)
    load_s = time.perf_counter() - t0
    loaded = memory_of()
    timings = []
    with httpx.Client(base_url=server.listening_address, timeout=600) as http:
        for _ in range(2):  # the first is the first request after the load (what a warm-up pass would spare)
            r = http.post("/completion", json={"prompt": PROMPT, "n_predict": tokens, "temperature": 0,
                                               "cache_prompt": False}).json()
            timings.append(r["timings"])
    return {"load_s": load_s, "loaded": loaded, "after": memory_of(), "decode_tps": timings[-1]["predicted_per_second"],
            "first_prompt_s": timings[0]["prompt_ms"] / 1000}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = cache_dir() / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    ap.add_argument("gguf", nargs="?", default=str(default))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.gguf, json.loads(a.child), a.threads, a.tokens)))
        return 0
    size = Path(a.gguf).stat().st_size
    gib = 2**30
    kind = "SEED-SHAPED SYNTHETIC weights" if Path(a.gguf).name.startswith("synthetic-") else "REAL weights"
    print(f"{Path(a.gguf).name} ({kind}): {size / gib:.2f} GiB file, {a.threads} threads, {a.tokens} tokens, "
          f"engine alone, page cache warm\n")
    print(f"{'load option':30} {'load s':>7} {'1st prompt s':>12} {'anon GiB':>9} {'file GiB':>9} {'RSS GiB':>8} "
          f"{'tok/s':>7}")
    with open(a.gguf, "rb") as f:  # every load from a warm page cache, the first as the others
        while f.read(1 << 24):
            pass
    results = {}
    for name, opt in OPTIONS.items():
        out = subprocess.run([sys.executable, __file__, a.gguf, "--threads", str(a.threads), "--tokens",
                              str(a.tokens), "--child", json.dumps(opt)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name:30} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        m = r["after"]
        print(f"{name:30} {r['load_s']:7.1f} {r['first_prompt_s']:12.2f} {m['anon'] / gib:9.2f} {m['file'] / gib:9.2f} "
              f"{m['rss'] / gib:8.2f} {r['decode_tps']:7.1f}")
    base = results.get(BASE)
    if base:
        print("\ndecode speed relative to the fleet default: " + ", ".join(
            f"{k} {v['decode_tps'] / base['decode_tps']:.2f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
