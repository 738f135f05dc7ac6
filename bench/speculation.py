#!/usr/bin/env python3
"""Speculative decoding per workload, through the API, side by side in one run, REAL weights: one
worker of the target model (default Qwen2.5-Coder-1.5B Q4_K_M) per speculation mode that works
without a trained head (off, llama.cpp's four n-gram modes, and a draft model: Qwen2.5-Coder-0.5B,
the fleet's model with the same vocabulary), all resident, each on cores 0-1, under supervisord.

Five workload classes: code generation, code editing (the answer repeats given code), summarising a
given text, a Chinese question, and puzzles from the puzzle set. For each mode and class: decode
tok/s (streamed through the API, from the first token to the last), time to first token, and the
share of drafted tokens the model accepted (the worker's counters, /fleet_info); at 1 stream the
median of --rounds rounds, interleaved; at 2 and 4 streams at once (the same request), the aggregate
tok/s of one round.

    .venv/bin/python bench/speculation.py [--rounds 3] [--tokens 128] [--streams 1,2,4]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from openai import OpenAI

from deploy.provision.default_models import default_entries
from deploy.registry.paths import REPO_ROOT
from eval.askall.puzzles import load_puzzles
from prefix_reuse import passages  # bench/prefix_reuse.py (this file runs as a script)
from seed_scale import Fleet, finish

MODES = ("off", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "draft")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def workloads() -> dict[str, list[str]]:
    """Each class's prompts (the puzzles: one per round, in turn)."""
    code = (REPO_ROOT / "deploy/backends/openai_shapes.py").read_text()
    code = code[code.index("def per_token"):code.index("class TokenLogprobs")].strip()
    text = passages()[2]
    return {
        "code generation": ["Write a Python function merge_intervals(intervals) that merges overlapping "
                            "intervals, with a docstring and three doctest examples."],
        "code editing": [f"Rename the function per_token to logprobs_per_token and the parameter lp to raw, "
                         f"and output the whole code, otherwise unchanged:\n\n```python\n{code}\n```"],
        "summarising": [f"Summarise this text, quoting its key sentences word for word:\n\n{text}"],
        "Chinese question": ["请详细介绍一下中国的四大发明，每一项写一段。"],
        "puzzles": [p.question for p in load_puzzles()[:3]],
    }


def ask(client: OpenAI, model: str, prompt: str, tokens: int) -> dict:
    """One streamed answer through the API: TTFT, decode tok/s, tokens."""
    t0, first, last, usage = time.perf_counter(), None, None, None
    for ch in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                             max_tokens=tokens, temperature=0, stream=True,
                                             stream_options={"include_usage": True}):
        if ch.choices and ch.choices[0].delta.content:
            first = first or time.perf_counter()
            last = time.perf_counter()
        usage = ch.usage or usage
    n = usage.completion_tokens if usage else 0
    return {"ttft_s": (first or time.perf_counter()) - t0, "tokens": n,
            "tps": (n - 1) / (last - first) if first and last and last > first and n > 1 else None,
            "wall_s": (last or time.perf_counter()) - t0}


def drafted(fleet: Fleet, model: str) -> tuple[int, int]:
    info = httpx.get(fleet.client.worker_address(model) + "/fleet_info", timeout=10).json()
    return info.get("drafted_tokens", 0), info.get("accepted_tokens", 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds at 1 stream (median)")
    ap.add_argument("--tokens", type=int, default=128, help="max tokens per answer")
    ap.add_argument("--streams", default="1,2,4", help="concurrent streams to measure")
    args = ap.parse_args(argv)
    streams = [int(s) for s in args.streams.split(",")]
    defaults = {e["name"]: e for e in default_entries()}
    base = {k: v for k, v in defaults[TARGET].items() if k not in ("port", "memory_budget")}
    draft_path = defaults[DRAFT]["path"]
    models = [{**base, "name": f"spec-{m}", "cores": "0-1", "speculation": m, "concurrency": 4,
               "context_length": 4096, **({"draft_model": draft_path} if m == "draft" else {})} for m in MODES]
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="speculation-")) / "fleet", models)
    work = workloads()
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "target": TARGET, "draft": DRAFT, "weights": "real",
                 "rounds": args.rounds, "tokens": args.tokens, "runs": {}}
    try:
        fleet.start()
        client = OpenAI(base_url=fleet.api_base, api_key="unused", max_retries=0, timeout=900)
        for m in fleet.names:
            ask(client, m, "Hi", 4)  # warm-up
        for n in streams:
            rounds = args.rounds if n == 1 else 1
            runs: dict = {m: {w: [] for w in work} for m in fleet.names}
            acc: dict = {m: {w: [0, 0] for w in work} for m in fleet.names}
            for r in range(rounds):
                for w, prompts in work.items():
                    prompt = prompts[r % len(prompts)]
                    for m in fleet.names:  # interleaved: every mode answers the same request in turn
                        d0 = drafted(fleet, m)
                        with ThreadPoolExecutor(n) as pool:
                            got = list(pool.map(lambda _: ask(client, m, prompt, args.tokens), range(n)))
                        d1 = drafted(fleet, m)
                        acc[m][w][0] += d1[0] - d0[0]
                        acc[m][w][1] += d1[1] - d0[1]
                        wall = max(g["wall_s"] for g in got)
                        runs[m][w].append({"tps": statistics.median(g["tps"] or 0 for g in got),
                                           "aggregate_tps": sum(g["tokens"] for g in got) / wall,
                                           "ttft_s": statistics.median(g["ttft_s"] for g in got),
                                           "tokens": statistics.median(g["tokens"] for g in got)})
                    print(f"  {n} stream(s), round {r + 1}, {w}: " + ", ".join(
                        f"{m.removeprefix('spec-')} {runs[m][w][-1]['aggregate_tps']:.1f}" for m in fleet.names),
                        flush=True)
            res["runs"][str(n)] = {m: {w: {k: statistics.median(x[k] for x in v) for k in v[0]}
                                       | {"drafted": acc[m][w][0], "accepted": acc[m][w][1]}
                                       for w, v in per.items()} for m, per in runs.items()}
    finally:
        fleet.stop()
    return finish("speculation", res, report)


def report(r: dict) -> None:
    print(f"\nREAL WEIGHTS: {r['target']} (draft model: {r['draft']}), cores 0-1, temperature 0, up to "
          f"{r['tokens']} tokens, through the API. 1 stream: median of {r['rounds']} rounds; 2 and 4: one round, "
          f"aggregate tok/s. Each cell: tok/s (x off) and the share of drafted tokens accepted.")
    for n, runs in r["runs"].items():
        off = runs["spec-off"]
        classes = list(off)
        print(f"\n{n} stream(s)" + ("" if n == "1" else " at once (aggregate)"))
        print(f"{'mode':14} " + " ".join(f"{w[:18]:>20}" for w in classes))
        key = "tps" if n == "1" else "aggregate_tps"
        for m, per in runs.items():
            cells = []
            for w in classes:
                x, base = per[w], off[w][key]
                rate = f"{x['accepted'] / x['drafted']:.0%}" if x["drafted"] else "-"
                cells.append(f"{x[key]:5.1f} {x[key] / base:4.2f}x {rate:>4}" if base else "-")
            print(f"{m.removeprefix('spec-'):14} " + " ".join(f"{c:>20}" for c in cells))
        if n == "1":
            print("time to first token (s)")
            for m, per in runs.items():
                print(f"{m.removeprefix('spec-'):14} " + " ".join(f"{per[w]['ttft_s']:>20.2f}" for w in classes))
    print("\nDefault rule: a mode on by default only where it is >= 0.97x off on every class and >= 1.3x on one.")


if __name__ == "__main__":
    raise SystemExit(main())
