#!/usr/bin/env python3
"""Conversation prefix reuse, measured through the API on a default model with REAL weights, in one
run: time to first token of turns 1 to 8 of a conversation that grows to about 2,000 tokens, as a
chat client sends it (the whole conversation every turn),

- alone on the worker, and with 3 other users holding conversations of their own on it;
- with the worker's prompt cache (the default: the engine keeps each slot's KV cache, picks the
  slot whose cached prompt shares the most with the new one, and computes only what is new) and
  without it (a seeded request: the worker recomputes the whole prompt, so the answer is
  repeatable), interleaved, the median of --repeats conversations for each.

    .venv/bin/python bench/prefix_reuse.py [--model qwen2.5-coder-0.5b-instruct] [--repeats 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from openai import OpenAI

from deploy.provision.default_models import default_entries
from deploy.registry.paths import REPO_ROOT
from seed_scale import Fleet, finish  # bench/seed_scale.py (this file runs as a script)

TURNS = 8
ANSWER_TOKENS = 40
OTHERS = 3


def passages() -> list[str]:
    """Real text for the user's turns: the paragraphs of the README and docs/, about 1,000 characters each."""
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    paras = [p.strip() for f in docs for p in f.read_text().split("\n\n") if len(p.strip()) > 200]
    out, cur = [], ""
    for p in paras:
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) > 900:
            out.append(cur[:1100])
            cur = ""
    return out


def conversation(client: OpenAI, model: str, texts: list[str], seeded: bool, stop: threading.Event | None = None):
    """One conversation of TURNS turns; yields (turn, ttft seconds, prompt tokens, of them cached) per turn."""
    messages: list[dict] = []
    for turn, text in enumerate(texts[:TURNS], 1):
        if stop is not None and stop.is_set():
            return
        messages.append({"role": "user", "content": f"Summarise this part in one sentence:\n\n{text}"})
        t0, first, answer, usage = time.perf_counter(), None, "", None
        extra = {"seed": 7} if seeded else {}
        for ch in client.chat.completions.create(model=model, messages=messages, max_tokens=ANSWER_TOKENS,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, **extra):
            if ch.choices and ch.choices[0].delta.content:
                first = first or time.perf_counter()
                answer += ch.choices[0].delta.content
            usage = ch.usage or usage
        messages.append({"role": "assistant", "content": answer})
        details = usage.prompt_tokens_details if usage else None
        yield turn, (first or time.perf_counter()) - t0, usage.prompt_tokens if usage else 0, \
            (details.cached_tokens or 0) if details else 0


def others_talk(client: OpenAI, model: str, texts: list[str], stop: threading.Event, k: int) -> threading.Thread:
    """Another user: conversations of their own (other passages, in another order), one after another."""
    def run():
        mine = texts[k:] + texts[:k]
        while not stop.is_set():
            for _ in conversation(client, model, mine[::-1], False, stop):
                pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def measure(client: OpenAI, model: str, texts: list[str], others: int, repeats: int) -> dict:
    """TTFT per turn, reuse and recompute interleaved, with `others` users talking meanwhile."""
    stop = threading.Event()
    threads = [others_talk(client, model, texts, stop, 5 * (k + 1)) for k in range(others)]
    runs: dict[str, list[list[tuple]]] = {"reuse": [], "recompute": []}
    try:
        time.sleep(3 if others else 0)
        for r in range(repeats):
            for mode in ("reuse", "recompute"):
                rows = list(conversation(client, model, texts[r:] + texts[:r], mode == "recompute"))
                runs[mode].append(rows)
                print(f"  {others} others, {mode}, run {r + 1}: " + " ".join(f"{t:.2f}" for _, t, _, _ in rows), flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(300)
    out = {}
    for mode, conv in runs.items():
        out[mode] = [{"turn": i + 1, "ttft_s": statistics.median(c[i][1] for c in conv),
                      "prompt_tokens": statistics.median(c[i][2] for c in conv),
                      "cached_tokens": statistics.median(c[i][3] for c in conv)} for i in range(TURNS)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="a default model's name")
    ap.add_argument("--repeats", type=int, default=2, help="conversations per mode and load (median)")
    ap.add_argument("--cores", default="0-1", help="the worker's cores")
    args = ap.parse_args(argv)
    raw = next(e for e in default_entries() if e["name"] == args.model)
    raw = {**raw, "cores": args.cores, "concurrency": 4, "context_length": 4096}  # threads: one per core
    raw.pop("port", None)
    raw.pop("memory_budget", None)
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="prefix-reuse-")) / "fleet", [raw])
    texts = passages()
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "model": args.model, "weights": "real",
                 "cores": args.cores, "repeats": args.repeats, "answer_tokens": ANSWER_TOKENS}
    try:
        fleet.start()
        client = OpenAI(base_url=fleet.api_base, api_key="unused", max_retries=0, timeout=600)
        client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        for others in (0, OTHERS):
            print(f"{args.model}: {others} other users ...", flush=True)
            res[f"others_{others}"] = measure(client, args.model, texts, others, args.repeats)
    finally:
        fleet.stop()
    return finish("prefix-reuse", res, report)


def report(r: dict) -> None:
    print(f"\nREAL WEIGHTS: {r['model']}, cores {r['cores']}, 4 slots, {r['answer_tokens']}-token answers, "
          f"median of {r['repeats']} conversations. TTFT in seconds, through the API (streamed).")
    for others in (0, OTHERS):
        res = r[f"others_{others}"]
        print(f"\n{others} other users on the worker" if others else "\nalone on the worker")
        print(f"{'turn':>4} {'prompt tok':>10} {'cached':>6} {'reuse':>7} {'recompute':>9} {'recompute/reuse':>15}")
        for a, b in zip(res["reuse"], res["recompute"]):
            print(f"{a['turn']:>4} {a['prompt_tokens']:>10.0f} {a.get('cached_tokens', 0):>6.0f} {a['ttft_s']:>7.2f} "
                  f"{b['ttft_s']:>9.2f} {b['ttft_s'] / a['ttft_s']:>14.1f}x")
        reuse, recompute = res["reuse"], res["recompute"]
        print(f"turn 8 / turn 1: reuse {reuse[-1]['ttft_s'] / reuse[0]['ttft_s']:.2f}x (goal <= 1.5x), "
              f"recompute {recompute[-1]['ttft_s'] / recompute[0]['ttft_s']:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
