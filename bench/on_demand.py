#!/usr/bin/env python3
"""More models than memory, measured on SEED-SHAPED SYNTHETIC weights (bench/seed_models.py: the
real architectures of Qwen-7B-Chat, ChatGLM3-6B and DeepSeek-LLM-7B-Chat, random values), under
supervisord as a user runs them, in one run:

- a memory_limit that holds two of the three Q4_K_M models: the switch latency (a request for an
  asleep model to its first token, the idle model used least recently unloaded to make room),
  with a warm and with a cold page cache;
- the peak anonymous RSS of all workers, sampled every 200 ms, against the limit;
- a rotation over the three models: its throughput against the same rotation with all three
  resident (the default pool, which holds them);
- the switch alone, per load setting (read and repacked, the default; mmap; mmap not repacked);
- the bf16 case the seed reports wanted: the DeepSeek-shaped bf16 folder on transformers with two
  Q4_K_M models beside it, under a limit that cannot hold all three;
- failed requests (goal: none).

    .venv/bin/python bench/on_demand.py [--rounds 3] [--tokens 16] [--no-bf16]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deploy.backends import load_registry
from tests.harness import MemorySampler
from seed_models import load_shapes, make, make_hf  # bench/seed_models.py (this file runs as a script)
from seed_scale import BF16_MODEL, Fleet, drop_page_cache, finish, gguf_entries  # bench/seed_scale.py

GiB = 1024**3
IDLE_SHARE = int(0.45 * GiB)  # what an asleep worker holds (measured: 0.3-0.4 GiB), for choosing the limits


def pooled(fleet: Fleet, limit: int | None) -> Fleet:
    """The fleet with [deployment] memory_limit set (None: the default, the machine less 2 GiB),
    before it starts (its workers read the registry when they start)."""
    if limit:
        text = fleet.paths.registry.read_text().replace("[deployment]", f'[deployment]\nmemory_limit = {limit}\n'
                                                                          f'load_wait = "600s"', 1)
        fleet.paths.registry.write_text(text)
        fleet.reg = load_registry(fleet.paths.registry)
    return fleet


def first_token(fleet: Fleet, model: str, n: int) -> dict:
    """One request through the worker: seconds to the first token (a load included), decode, errors."""
    try:
        r = fleet.decode(model, n)
        return {**r, "ok": r["tokens"] > 0}
    except Exception as e:  # a failed request is a result here, counted
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def states(fleet: Fleet) -> dict[str, str]:
    pools = httpx.get(fleet.reg.deployment.controller_url + "/fleet_pools", timeout=10).json()["pools"]
    return {m["model"]: m["state"] for p in pools for m in p["members"]}


def rotation(fleet: Fleet, names: list[str], rounds: int, n: int) -> dict:
    """Every model in turn, `rounds` times: tokens per second of wall time, and each request."""
    t0, tokens, requests = time.perf_counter(), 0, []
    for _ in range(rounds):
        for m in names:
            r = first_token(fleet, m, n)
            requests.append({"model": m, **r})
            tokens += r.get("tokens", 0)
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "tok_per_s": tokens / wall, "requests": requests,
            "failed": sum(not r["ok"] for r in requests)}


def measure_pool(files: dict, limit: int | None, rounds: int, n: int, tmp: Path, label: str) -> dict:
    fleet = pooled(Fleet(tmp / label, gguf_entries(files, [[0, 1]] * len(files), 1)), limit)
    names = fleet.names
    out: dict = {"limit": limit, "budgets": {m.name: m.memory_budget for m in fleet.reg.models}}
    try:
        out["start_s"] = fleet.start()
        with MemorySampler(lambda: fleet.memory().values(), "anon") as anon:
            for m in names:  # every model once: in a small pool the last loads evict
                first_token(fleet, m, 2)
            out["states_after_warmup"] = states(fleet)
            if limit:
                asleep = [m for m, s in out["states_after_warmup"].items() if s == "asleep"]
                out["switch_warm"] = {m: first_token(fleet, m, 2) for m in asleep[:1]}
                asleep = [m for m, s in states(fleet).items() if s == "asleep"]
                out["page_cache_dropped"] = drop_page_cache()
                out["switch_cold"] = {m: first_token(fleet, m, 2) for m in asleep[:1]}
            out["rotation"] = rotation(fleet, names, rounds, n)
        out["peak_anon"] = anon.peak
    finally:
        fleet.stop()
    return out


LOAD_SETTINGS = {"read, repacked (the default)": {}, "mmap, repacked": {"mmap": True},
                 "mmap, not repacked": {"mmap": True, "repack": False}}


def measure_switch(files: dict, tmp: Path, n: int, switches: int = 4) -> dict:
    """The switch alone, per load setting: two of the models (2 threads each) in a pool that holds
    one, asked in turn, so every request finds its model asleep (page cache warm after the first
    round): seconds from the request to the first token, and the decode rate once loaded."""
    two = dict(list(files.items())[:2])
    out = {}
    for label, setting in LOAD_SETTINGS.items():
        entries = [{**e, **setting} for e in gguf_entries(two, [[0, 1]] * 2, 2)]
        fleet = Fleet(tmp / f"switch-{len(out)}", entries)
        fleet = pooled(fleet, max(m.memory_budget for m in fleet.reg.models) + 2 * IDLE_SHARE)
        try:
            fleet.start()
            for m in fleet.names:  # each loaded once: its file in the page cache
                first_token(fleet, m, 2)
            runs = [first_token(fleet, fleet.names[i % 2], n) for i in range(switches)]
        finally:
            fleet.stop()
        ok = [r for r in runs if r["ok"]]
        out[label] = {"ttft_s": sorted(r["ttft_s"] for r in ok), "decode_tps": [r["decode_tps"] for r in ok],
                      "failed": len(runs) - len(ok)}
        print(f"  {label}: first token after a switch {[round(t, 1) for t in out[label]['ttft_s']]} s", flush=True)
    return out


def measure_bf16(files: dict, limit: int, rounds: int, n: int, tmp: Path) -> dict:
    """The DeepSeek-shaped bf16 folder on transformers beside two Q4_K_M models, in a pool that
    holds the bf16 model alone or the two Q4_K_M together, never all three."""
    shape = next(s for s in load_shapes() if s.name == BF16_MODEL)
    others = {k: v for k, v in files.items() if k != BF16_MODEL}
    bf16 = {"name": f"synthetic-{BF16_MODEL}-bf16", "path": str(make_hf(shape)), "backend": "transformers",
            "dtype": "bfloat16", "cores": [0, 1], "threads": 2, "chat_template": shape.chat_template,
            "context_length": 2048, "concurrency": 1, "source": "SYNTHETIC seed-shaped"}
    fleet = pooled(Fleet(tmp / "bf16", gguf_entries(others, [[0, 1]] * 2, 1) + [bf16]), limit)
    out: dict = {"limit": limit, "budgets": {m.name: m.memory_budget for m in fleet.reg.models}}
    try:
        out["start_s"] = fleet.start()
        with MemorySampler(lambda: fleet.memory().values(), "anon") as anon:
            out["rotation"] = rotation(fleet, fleet.names, rounds, n)
        out["peak_anon"] = anon.peak
    finally:
        fleet.stop()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rotations over the models")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per request")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)
    files = {s.name: make(s) for s in load_shapes()}
    tmp = Path(tempfile.mkdtemp(prefix="on-demand-"))
    # the budgets come from the fit estimate (Fleet): a pool for the two largest and two asleep workers
    probe = Fleet(tmp / "probe", gguf_entries(files, [[0, 1]] * 3, 1))
    budgets = sorted((m.memory_budget for m in probe.reg.models), reverse=True)
    two = budgets[0] + budgets[1] + 2 * IDLE_SHARE
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "synthetic": True, "rounds": args.rounds,
                 "tokens": args.tokens, "limit_two_of_three": two}
    print(f"pool for two of three: {two / GiB:.2f} GiB (budgets {[round(b / GiB, 2) for b in budgets]} GiB)", flush=True)
    res["pooled"] = measure_pool(files, two, args.rounds, args.tokens, tmp, "pooled")
    print("all three resident (the default pool) ...", flush=True)
    res["resident"] = measure_pool(files, None, args.rounds, args.tokens, tmp, "resident")
    print("the switch alone, per load setting (2 threads, page cache warm) ...", flush=True)
    res["switch"] = measure_switch(files, tmp, args.tokens)
    if args.bf16:
        print("bf16 beside two Q4_K_M ...", flush=True)
        res["bf16"] = measure_bf16(files, 20 * GiB, args.rounds, args.tokens, tmp)
    return finish("on-demand", res, report)


def report(r: dict) -> None:
    p, a = r["pooled"], r["resident"]
    print("\nSEED-SHAPED SYNTHETIC WEIGHTS (real shapes, random values), three 7B-class Q4_K_M models")
    print(f"memory_limit {p['limit'] / GiB:.2f} GiB (two of three): peak anonymous RSS of all workers "
          f"{p['peak_anon'] / GiB:.2f} GiB ({p['peak_anon'] / p['limit']:.0%} of the limit)")
    for kind in ("switch_warm", "switch_cold"):
        for m, x in p.get(kind, {}).items():
            print(f"  {kind.replace('_', ' ')} page cache: {m} asleep -> first token {x.get('ttft_s', float('nan')):.2f} s"
                  + ("" if x.get("ok") else f" FAILED {x.get('error')}"))
    pr, ar = p["rotation"], a["rotation"]
    print(f"rotation, {r['rounds']} rounds x 3 models x {r['tokens']} tokens: {pr['tok_per_s']:.2f} tok/s in the pool, "
          f"{ar['tok_per_s']:.2f} tok/s all resident ({pr['tok_per_s'] / ar['tok_per_s']:.0%}); "
          f"failed requests {pr['failed']} / {ar['failed']}")
    print("  first-token times in the pool: " + ", ".join(f"{x['model'][10:]} {x.get('ttft_s', 0):.1f}s"
                                                           for x in pr["requests"]))
    if "switch" in r:
        print("the switch alone (two models, a pool that holds one, 2 threads, page cache warm), per load setting:")
        for label, x in r["switch"].items():
            t, d = x["ttft_s"], [v for v in x["decode_tps"] if v]
            print(f"  {label:30} request to first token: median {t[len(t) // 2]:.2f} s (min {t[0]:.2f}, max {t[-1]:.2f});"
                  f" decode {min(d):.2f}-{max(d):.2f} tok/s; failed {x['failed']}")
    if "bf16" in r:
        b = r["bf16"]
        br = b["rotation"]
        print(f"bf16 DeepSeek-shaped on transformers + two Q4_K_M, memory_limit {b['limit'] / GiB:.1f} GiB: "
              f"{br['tok_per_s']:.2f} tok/s over the rotation, failed {br['failed']}, peak anonymous RSS "
              f"{b['peak_anon'] / GiB:.2f} GiB")
        print("  first-token times: " + ", ".join(f"{x['model'][10:]} {x.get('ttft_s', 0):.1f}s" for x in br["requests"]))


if __name__ == "__main__":
    sys.exit(main())
