#!/usr/bin/env python3
"""A conversation that comes back after an on-demand swap, measured through the API on a default
model with REAL weights, in one run: time to first token of its next turn when its model was
unloaded to make room for another and loads again,

- with `keep_conversations` (the default: the slots' KV cache is saved to disk on unload and
  restored on load, llama.cpp's slot save/restore), and without it (the prompt is processed again);
- beside the same turn when no swap happened (the model stayed loaded).

Two copies of the 1.5B (one with each setting) and the 0.5B share a memory pool that holds one of
them at a time; the two settings alternate, the median of --repeats conversations each.

    .venv/bin/python bench/slot_restore.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import tomlkit
from openai import OpenAI

from deploy.backends.slot_store import LOGGED
from deploy.provision.default_models import default_entries
from prefix_reuse import passages  # bench/prefix_reuse.py (this file runs as a script)
from seed_scale import finish
from tests.harness import Stack, free_port

TALKER, OTHER = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
VARIANTS = {"keep": True, "recompute": False}  # keep_conversations


def entry(model: str, **over) -> dict:
    return {**next(e for e in default_entries() if e["name"] == model), "port": free_port(), **over}


def turn(client: OpenAI, model: str, messages: list[dict]) -> tuple[float, str, int, int]:
    """(seconds to the first token, the answer, prompt tokens, of them cached) of one streamed turn."""
    t0, first, answer, usage = time.perf_counter(), None, "", None
    for ch in client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                             stream=True, stream_options={"include_usage": True}):
        if ch.choices and ch.choices[0].delta.content:
            first = first or time.perf_counter()
            answer += ch.choices[0].delta.content
        usage = ch.usage or usage
    cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0
    return (first or time.perf_counter()) - t0, answer, usage.prompt_tokens, cached


def conversation_back(client: OpenAI, model: str, text: str, swap: bool) -> dict:
    """Turn 1 on `model`, then (with `swap`) a question to the other model, which unloads it, then
    turn 2: its time to first token, load included."""
    messages = [{"role": "user", "content": f"Summarise this text in one sentence:\n\n{text}"}]
    ttft1, answer, _, _ = turn(client, model, messages)
    if swap:
        turn(client, OTHER, [{"role": "user", "content": "Say hi."}])
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Now in five words."}]
    ttft2, _, prompt, cached = turn(client, model, messages)
    return {"turn1_ttft_s": ttft1, "back_ttft_s": ttft2, "prompt_tokens": prompt, "cached_tokens": cached}


def moves(worker_log: str) -> list[dict]:
    """The worker's own account of each save (on unload) and restore (on load): tokens, bytes, the
    engine's milliseconds (deploy/backends/slot_store.py)."""
    return [{"what": m[1], "tokens": int(m[2]), "mb": float(m[3]), "ms": float(m[4])}
            for m in LOGGED.finditer(worker_log) if int(m[2])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    models = [entry(TALKER, name=f"talker-{v}", cores=[0, 1], memory_budget="3GiB", keep_conversations=keep)
              for v, keep in VARIANTS.items()] + [entry(OTHER, cores=[0, 1], memory_budget="2GiB")]
    stack = Stack(Path(tempfile.mkdtemp(prefix="slot-restore-")), models)
    doc = tomlkit.parse(stack.registry.read_text())
    doc["deployment"]["memory_limit"] = "3.9GiB"  # one model at a time (the asleep workers hold ~0.4 GiB each)
    doc["deployment"]["load_wait"] = "300s"
    stack.registry.write_text(tomlkit.dumps(doc))
    text = "\n\n".join(passages()[:6])  # about 1,700 tokens of real text
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "model": TALKER, "weights": "real", "cores": "0-1",
                 "repeats": args.repeats, "runs": {}}
    try:
        stack.start_fleet()
        stack.wait_registered([m["name"] for m in models], timeout=300)
        client = OpenAI(base_url=stack.api_base, api_key="unused", max_retries=0, timeout=900)
        for r in range(args.repeats):
            for v in VARIANTS:
                for swap in (True, False):
                    row = conversation_back(client, f"talker-{v}", text[r * 7:], swap)
                    res["runs"].setdefault(f"{v}, {'swapped' if swap else 'stayed'}", []).append(row)
                    print(f"  run {r + 1}, {v}, {'swapped' if swap else 'stayed loaded'}: back in "
                          f"{row['back_ttft_s']:.2f} s ({row['cached_tokens']} of {row['prompt_tokens']} cached)",
                          flush=True)
        res["moves"] = moves(stack.procs["worker-talker-keep"].output())
    finally:
        stack.stop()
    res["median"] = {k: {f: statistics.median(x[f] for x in rows) for f in rows[0]} for k, rows in res["runs"].items()}
    return finish("slot-restore", res, report)


def report(r: dict) -> None:
    m = r["median"]
    print(f"\nREAL WEIGHTS: {r['model']}, 2 threads, medians of {r['repeats']}. A conversation's next turn, time to "
          f"first token through the API:")
    print(f"{'':34} {'prompt tok':>10} {'cached':>7} {'TTFT s':>7}")
    for k, x in m.items():
        print(f"{k:34} {x['prompt_tokens']:>10.0f} {x['cached_tokens']:>7.0f} {x['back_ttft_s']:>7.2f}")
    keep, again = m["keep, swapped"]["back_ttft_s"], m["recompute, swapped"]["back_ttft_s"]
    print(f"after a swap: {keep:.2f} s with keep_conversations, {again:.2f} s without ({again / keep:.1f}x)")
    for what in ("saved", "restored"):
        done = [x for x in r.get("moves", []) if x["what"] == what]
        if done:
            print(f"{what} on {'unload' if what == 'saved' else 'load'}, {len(done)} times: median "
                  f"{statistics.median(x['ms'] for x in done):.0f} ms for "
                  f"{statistics.median(x['tokens'] for x in done):.0f} tokens, "
                  f"{statistics.median(x['mb'] * 1000 / x['tokens'] for x in done):.1f} MB per 1,000 tokens on disk")


if __name__ == "__main__":
    raise SystemExit(main())
