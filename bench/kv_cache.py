#!/usr/bin/env python3
"""The KV cache types (kv_cache_type: f16, q8_0, q4_0), side by side in one run, per model: three
workers of one model, one per type, under supervisord, all resident, each on cores 0-1:

- the KV cache's memory: each worker's anonymous RSS right after loading (llama.cpp allocates and
  clears the whole cache at load), against the f16 worker's, and the fit estimate's figure;
- decode tok/s after a short prompt and after a ~1,000-token one (a quantised cache costs more to
  read as it fills), straight to the worker, rounds interleaved, the median;
- quality, on the real models: the puzzle set and long-text summaries at temperature 0, seeded (the prompt is computed
  whole, so the answers are repeatable), each type against f16: how many answers change and how
  many the rules grade right.

The default models run with REAL weights; the 7B row uses SEED-SHAPED SYNTHETIC weights (Qwen-7B-
Chat's shape, random values: memory and speed only, no quality).

    .venv/bin/python bench/kv_cache.py [--rounds 3] [--tokens 48] [--summaries 3] [--no-quality] [--no-seven-b]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from deploy.backends import load_registry
from deploy.backends.fit import estimate
from deploy.provision.default_models import default_entries
from eval.askall.grading import grade
from eval.askall.puzzles import load_puzzles
from prefix_reuse import passages  # bench/prefix_reuse.py (this file runs as a script)
from seed_models import load_shapes, make  # bench/seed_models.py
from seed_scale import Fleet, finish

TYPES = ("f16", "q8_0", "q4_0")
REAL = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
MiB = 2**20


def entries(base: dict, concurrency: int, context: int) -> list[dict]:
    """One entry per KV cache type, named <model>-<type>."""
    out = []
    for t in TYPES:
        raw = {k: v for k, v in base.items() if k not in ("port", "memory_budget")}
        out.append({**raw, "name": f"{base['name']}-{t}", "kv_cache_type": t, "cores": "0-1",
                    "concurrency": concurrency, "context_length": context})
    return out


def same_share(a: str, b: str) -> float:
    """How much of the f16 answer `b` the answer `a` repeats before they part."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return n / max(len(b), 1)


def quality(fleet: Fleet, names: list[str], summaries: int, max_tokens: int) -> dict:
    """Each type's answers, seeded at temperature 0, against f16's: the puzzle set (graded by its
    rules) and `summaries` summaries of ~1,000-token texts (where a cache's precision counts most)."""
    puzzles = load_puzzles()
    prompts = [p.question for p in puzzles] + [f"Summarise this text in three sentences:\n\n{t}"
                                                for t in passages()[3:3 + summaries]]
    client = OpenAI(base_url=fleet.api_base, api_key="unused", max_retries=0, timeout=600)
    answers: dict[str, list[str]] = {m: [] for m in names}
    for q in prompts:  # interleaved: every type answers a prompt before the next
        for m in names:
            r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": q}],
                                               max_tokens=max_tokens, temperature=0, seed=0)
            answers[m].append(r.choices[0].message.content or "")
    ref = answers[names[0]]
    out = {}
    for m in names:
        changed = [same_share(a, b) for a, b in zip(answers[m], ref) if a.strip() != b.strip()]
        out[m] = {"changed": len(changed), "asked": len(prompts), "same_until": statistics.median(changed) if changed
                  else None, "right": sum(grade(p, a).label == "right" for p, a in zip(puzzles, answers[m])),
                  "puzzles": len(puzzles)}
    return out


def measure(label: str, models: list[dict], rounds: int, tokens: int, summaries: int | None, tmp: Path) -> dict:
    """summaries None: memory and speed only (synthetic weights)."""
    print(f"\n== {label}", flush=True)
    fleet = Fleet(tmp / label, models)
    names = fleet.names
    res: dict = {"models": names}
    try:
        fleet.start()
        for m in names:
            fleet.decode(m, 4)  # loads it (workers load on demand or just after they register), warms it up
        mem = fleet.memory()  # weights, the whole KV cache (allocated and cleared at load), compute buffers
        reg = load_registry(fleet.paths.registry)
        est = {m.name: estimate(m).kv_cache for m in reg.models}
        res["anon"] = {m: mem[m]["anon"] for m in names}
        res["kv_estimate"] = est
        long_prompt = "Summarise this text in three sentences:\n\n" + "\n\n".join(passages()[:4])
        runs: dict[str, dict[str, list]] = {m: {"short": [], "long": []} for m in names}
        for r in range(rounds):
            for m in names:
                runs[m]["short"].append(fleet.decode(m, tokens)["decode_tps"])
                if summaries is not None:  # the real models: also decode after a long prompt
                    runs[m]["long"].append(fleet.decode(m, tokens, prompt=long_prompt)["decode_tps"])
            print(f"  round {r + 1}: " + ", ".join(f"{m} {runs[m]['short'][-1]:.1f}" for m in names), flush=True)
        res["decode"] = {m: {k: statistics.median(v) if v else None for k, v in d.items()} for m, d in runs.items()}
        if summaries is not None:
            res["quality"] = quality(fleet, names, summaries, 256)
    finally:
        fleet.stop()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48, help="decoded tokens per request")
    ap.add_argument("--summaries", type=int, default=3,
                    help="long-text summaries asked beside the puzzle set for the quality check")
    ap.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seven-b", dest="seven_b", action=argparse.BooleanOptionalAction, default=True,
                    help="also the seed-shaped synthetic 7B (Qwen-7B-Chat's shape)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kv-cache-"))
    defaults = {e["name"]: e for e in default_entries()}
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": args.rounds, "tokens": args.tokens, "runs": {}}
    for name in REAL:
        res["runs"][name] = {"weights": "real", **measure(name, entries(defaults[name], 4, 4096), args.rounds,
                                                         args.tokens, args.summaries if args.quality else None, tmp)}
    if args.seven_b:
        shape = next(s for s in load_shapes() if s.name == "qwen-7b-chat")
        base = {"name": "synthetic-qwen-7b", "path": str(make(shape)), "backend": "llama.cpp",
                "chat_template": shape.chat_template, "source": "SYNTHETIC seed-shaped"}
        res["runs"]["synthetic-qwen-7b"] = {"weights": "SEED-SHAPED SYNTHETIC", **measure(
            "synthetic-qwen-7b", entries(base, 1, 4096), args.rounds, max(8, args.tokens // 3), None, tmp)}
    return finish("kv-cache", res, report)


def report(r: dict) -> None:
    print(f"\nKV cache types, cores 0-1, median of {r['rounds']} rounds of {r['tokens']} tokens (the 7B: a third).")
    for model, x in r["runs"].items():
        names = x["models"]
        f16 = names[0]
        base_kv = x["kv_estimate"][f16]
        print(f"\n{model} ({x['weights']} weights)")
        print(f"{'type':6} {'anon MiB':>9} {'KV MiB (est.)':>13} {'KV vs f16':>9} {'decode':>7} {'x f16':>6} "
              f"{'long':>6} {'x f16':>6} {'changed':>8} {'same until':>10} {'puzzles right':>13}")
        for m, t in zip(names, TYPES):
            # measured KV: f16's estimated cache plus what this worker holds more (or less) than f16's
            kv = base_kv + x["anon"][m] - x["anon"][f16]
            d, d0 = x["decode"][m], x["decode"][f16]
            q = (x.get("quality") or {}).get(m)
            long = f"{d['long']:>6.1f} {d['long'] / d0['long']:>5.2f}x" if d.get("long") else f"{'-':>6} {'-':>6}"
            print(f"{t:6} {x['anon'][m] / MiB:>9.0f} {kv / MiB:>6.0f} ({x['kv_estimate'][m] / MiB:>4.0f}) "
                  f"{kv / base_kv:>8.0%} {d['short']:>7.1f} {d['short'] / d0['short']:>5.2f}x {long} "
                  + (f"{q['changed']:>4}/{q['asked']:<3} "
                     f"{(format(q['same_until'], '.0%') if q['same_until'] is not None else '-'):>10} "
                     f"{q['right']:>9}/{q['puzzles']}" if q else ""))
    print("\nchanged: answers (the puzzle set and long-text summaries) not identical to f16's; same until: the "
          "median share of f16's answer a changed one repeats before it parts.")
    print("Goal: q8_0 KV at most 55 % of f16's, at 0.97x f16's decode speed or better.")


if __name__ == "__main__":
    raise SystemExit(main())
