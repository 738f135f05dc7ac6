#!/usr/bin/env python3
"""What thinking costs on this machine, side by side in one run, REAL weights: the fleet's 1.5B Qwen
GGUF with DeepSeek-R1-Distill's published chat template (which opens the trace in the prompt, so
the model thinks until it closes it or a budget does), answering the puzzles through the API with
its trace on, off (reasoning_effort "none": a budget of 0) and budgeted (reasoning_budget_tokens).
For each: the time to the answer's first token, the trace's tokens, and decode tok/s. Then the
same with draftless speculation (llama.cpp's ngram-mod) against none, on the trace alone: traces
repeat themselves, which n-gram drafting feeds on.

No model on PyPI thinks, so the trace is what this model writes when a template makes it think;
the figures measure the machinery (a trace's tokens cost what an answer's do; a budget bounds the
wait for the answer), not the quality of a thinking model's thoughts.

    .venv/bin/python bench/thinking.py [--rounds 2] [--tokens 256] [--budgets 32,128]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from deploy.provision.default_models import default_entries
from deploy.registry.paths import expand_path
from eval.askall.puzzles import load_puzzles
from seed_scale import Fleet, finish  # bench/seed_scale.py (this file runs as a script)
from tests.thinking_models import R1_DISTILL, with_template

TARGET = "qwen2.5-coder-1.5b-instruct"


def ask(client: OpenAI, model: str, prompt: str, tokens: int, extra: dict) -> dict:
    """One streamed answer: time to its first trace token and to its answer's, trace and answer tokens."""
    t0, first, answer_at, last, usage = time.perf_counter(), None, None, None, None
    for ch in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                             max_tokens=tokens, temperature=0, stream=True,
                                             stream_options={"include_usage": True}, extra_body=extra):
        delta = ch.choices[0].delta if ch.choices else None
        if delta is not None and (delta.content or getattr(delta, "reasoning_content", None)):
            first = first or time.perf_counter()
            last = time.perf_counter()
            if delta.content and answer_at is None:
                answer_at = last
        usage = ch.usage or usage
    n = usage.completion_tokens if usage else 0
    traced = (usage.completion_tokens_details.reasoning_tokens or 0) if usage and usage.completion_tokens_details else 0
    return {"answer_s": (answer_at - t0) if answer_at else None, "trace_tokens": traced, "tokens": n,
            "tps": (n - 1) / (last - first) if first and last and last > first and n > 1 else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="puzzles asked per setting (median)")
    ap.add_argument("--tokens", type=int, default=256, help="max tokens per answer")
    ap.add_argument("--budgets", default="32,128", help="thinking budgets to measure, in tokens")
    args = ap.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="thinking-"))
    base = {k: v for k, v in {e["name"]: e for e in default_entries()}[TARGET].items() if k not in ("port", "memory_budget")}
    gguf = with_template(expand_path(base["path"]), R1_DISTILL, tmp / "gguf")
    models = [{**base, "name": f"r1-{mode}", "path": str(gguf), "chat_template": "auto", "cores": "0-1",
               "speculation": mode, "concurrency": 1, "context_length": 4096} for mode in ("off", "ngram-mod")]
    settings = {"on": {}, "off": {"reasoning_effort": "none"},
                **{f"budget {b}": {"reasoning_budget_tokens": b} for b in budgets}}
    prompts = [p.question for p in load_puzzles()[:args.rounds]]
    fleet = Fleet(tmp / "fleet", models)
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "target": TARGET, "template": "DeepSeek-R1-Distill-Qwen",
                 "weights": "real", "rounds": args.rounds, "tokens": args.tokens, "settings": {}, "speculation": {}}
    try:
        fleet.start()
        client = OpenAI(base_url=fleet.api_base, api_key="unused", max_retries=0, timeout=900)
        for m in fleet.names:
            ask(client, m, "Hi", 4, {"reasoning_effort": "none"})  # warm-up
        for name, extra in settings.items():
            got = [ask(client, "r1-off", p, args.tokens, extra) for p in prompts]
            res["settings"][name] = summary(got)
            print(f"  {name}: {res['settings'][name]}", flush=True)
        for m in fleet.names:  # the trace alone (on, unbounded), with and without n-gram drafting
            got = [ask(client, m, p, args.tokens, {}) for p in prompts]
            res["speculation"][m.removeprefix("r1-")] = summary(got)
            print(f"  speculation {m}: {res['speculation'][m.removeprefix('r1-')]}", flush=True)
    finally:
        fleet.stop()
    return finish("thinking", res, report)


def summary(got: list[dict]) -> dict:
    answered = [g["answer_s"] for g in got if g["answer_s"] is not None]
    return {"answer_s": statistics.median(answered) if answered else None, "answered": len(answered),
            "asked": len(got), "trace_tokens": statistics.median(g["trace_tokens"] for g in got),
            "tokens": statistics.median(g["tokens"] for g in got),
            "tps": statistics.median(g["tps"] or 0 for g in got)}


def report(r: dict) -> None:
    print(f"\nREAL WEIGHTS: {r['target']} with {r['template']}'s chat template, cores 0-1, temperature 0, up to "
          f"{r['tokens']} tokens, {r['rounds']} puzzle(s) per setting (median), through the API.")
    off = r["settings"]["off"]["answer_s"]
    print(f"\n{'trace':12} {'answer starts':>14} {'x off':>6} {'answered':>9} {'trace tokens':>13} {'tokens':>7} "
          f"{'tok/s':>6}")
    for name, s in r["settings"].items():
        at = f"{s['answer_s']:.1f} s" if s["answer_s"] is not None else "never"
        ratio = f"{s['answer_s'] / off:.1f}x" if s["answer_s"] is not None and off else "-"
        print(f"{name:12} {at:>14} {ratio:>6} {s['answered']:>4}/{s['asked']:<4} {s['trace_tokens']:>13.0f} "
              f"{s['tokens']:>7.0f} {s['tps']:>6.1f}")
    spec = r["speculation"]
    print(f"\nthe trace alone, decode tok/s: off {spec['off']['tps']:.1f}, ngram-mod {spec['ngram-mod']['tps']:.1f} "
          f"({spec['ngram-mod']['tps'] / spec['off']['tps']:.2f}x off)" if spec.get("off", {}).get("tps") else "")


if __name__ == "__main__":
    raise SystemExit(main())
