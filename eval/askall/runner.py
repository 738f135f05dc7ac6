"""Send every puzzle to every model through the OpenAI API.

Models run in parallel, one thread each; within a model, one request at a time, so each
answer's timings are its own and not shared with the same model's other answers.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from eval.askall.puzzles import Puzzle
from eval.askall.thinking import THINKING, served
from eval.askall.store import RunStore


@dataclass
class Settings:
    api_base: str
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    repeats: int = 1
    timeout: float = 600.0
    api_key: str | None = None  # sent as Bearer when the API has keys; never written to run.json


class StreamCut(Exception):
    """The stream ended without a finish reason: the worker went away mid-answer."""


def retryable(e: Exception) -> bool:
    """A worker restarting or briefly gone (connection refused or cut mid-answer, 502/503/504, or
    its model unregistered for a moment), as opposed to a bad request or an answer that took too long."""
    import openai

    if isinstance(e, StreamCut):
        return True
    if isinstance(e, openai.APITimeoutError):
        return False
    if isinstance(e, openai.APIConnectionError):
        return True
    if type(e) is openai.APIError and getattr(e, "type", None) == "worker_unavailable":  # the API's stream error event
        return True
    return isinstance(e, openai.APIStatusError) and e.status_code in (404, 502, 503, 504)


def _attempt(client, model: str, puzzle: Puzzle, repeat: int, s: Settings, rec: dict) -> None:
    """One streamed chat completion into rec (answer pieces, a thinking model's trace apart,
    timings, usage); raises on failure. ttft_s is the answer's first token, after any trace."""
    name, thinking = served(model)
    extra = {"seed": s.seed + repeat} if s.seed is not None else {}
    t0 = time.perf_counter()
    pieces, trace = [], []
    rec["_pieces"], rec["_trace"] = pieces, trace
    stream = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": puzzle.question}], stream=True,
        stream_options={"include_usage": True}, extra_body=THINKING.get(thinking),
        temperature=s.temperature, max_tokens=s.max_tokens, timeout=s.timeout, **extra)
    trace_from = None
    for chunk in stream:
        if chunk.usage:  # the last chunk, with no choices (stream_options.include_usage)
            rec["prompt_tokens"] = chunk.usage.prompt_tokens
            rec["completion_tokens"] = chunk.usage.completion_tokens
            details = chunk.usage.completion_tokens_details
            if details is not None and details.reasoning_tokens is not None:
                rec["reasoning_tokens"] = details.reasoning_tokens
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        thought = getattr(c.delta, "reasoning_content", None) if c.delta else None
        if (thought or (c.delta and c.delta.content)) and rec["first_token_s"] is None:
            rec["first_token_s"] = round(time.perf_counter() - t0, 4)  # of the trace or the answer
        if thought:
            trace_from = trace_from or time.perf_counter()
            trace.append(thought)
        if c.delta and c.delta.content:
            if rec["ttft_s"] is None:
                rec["ttft_s"] = round(time.perf_counter() - t0, 4)
                if trace_from is not None:
                    rec["thinking_s"] = round(time.perf_counter() - trace_from, 4)
            pieces.append(c.delta.content)
        if c.finish_reason:
            rec["finish_reason"] = c.finish_reason
    if trace_from is not None and rec.get("thinking_s") is None:  # it never got past its trace
        rec["thinking_s"] = round(time.perf_counter() - trace_from, 4)
    if rec["finish_reason"] is None:
        raise StreamCut("the stream ended without a finish reason (the worker may have stopped)")


def ask_one(client, model: str, puzzle: Puzzle, repeat: int, s: Settings, sleep=time.sleep) -> dict:
    """One answer, timed; a worker that is restarting is waited for with back-off, up to s.timeout;
    errors are recorded, never raised. rec["unreachable"] says the back-off ran out."""
    started = time.perf_counter()
    delay, retries = 0.5, 0
    while True:
        rec = {"model": model, "puzzle": puzzle.id, "repeat": repeat, "question": puzzle.question,
               "answer": None, "finish_reason": None, "ttft_s": None, "latency_s": None,
               "prompt_tokens": None, "completion_tokens": None, "decode_tps": None, "error": None,
               "reasoning": None, "reasoning_tokens": None, "thinking_s": None, "first_token_s": None,
               "retries": retries, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "t_start": time.time(),
               "t_end": None}
        t0 = time.perf_counter()
        err = None
        try:
            _attempt(client, model, puzzle, repeat, s, rec)
        except Exception as e:  # API errors, a worker that vanished, timeouts: all recorded per answer
            err = e
            rec["error"] = f"{type(e).__name__}: {e}"
        waited = time.perf_counter() - started
        if err is not None and retryable(err) and waited + delay < s.timeout:
            sleep(delay)
            delay, retries = min(delay * 2, 8.0), retries + 1
            continue
        if err is not None and retryable(err):
            rec["unreachable"] = True
            rec["error"] += f" (still failing after {retries} retries over {waited:.0f} s)"
        break
    pieces, trace = rec.pop("_pieces", []), rec.pop("_trace", [])
    rec["reasoning"] = "".join(trace) if trace else None
    rec["latency_s"] = round(time.perf_counter() - t0, 4)
    rec["t_end"] = time.time()
    rec["answer"] = "".join(pieces) if (pieces or not rec["error"]) else None
    n, ttft = rec["completion_tokens"], rec["first_token_s"] or rec["ttft_s"]  # decoding: the trace's tokens too
    if n and n > 1 and ttft is not None and rec["latency_s"] > ttft:
        rec["decode_tps"] = round((n - 1) / (rec["latency_s"] - ttft), 3)
    return rec


def load_first(client, model: str, s: Settings) -> float:
    """Ask for one token, unrecorded, so that the model is in memory before its timed answers;
    returns the seconds that took (its load, when it was asleep)."""
    t0 = time.perf_counter()
    try:
        client.chat.completions.create(model=served(model)[0], messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=1, temperature=0, timeout=s.timeout)
    except Exception:  # the timed answers will meet the same problem and record it
        pass
    return round(time.perf_counter() - t0, 3)


def run_all(models: list[str], puzzles: list[Puzzle], s: Settings, store: RunStore,
            done: set, on_answer=None, one_at_a_time: str | None = None) -> dict:
    """Ask what is not in `done`; returns {"wall_s", "busy_s": {model: seconds}}. Models are asked
    side by side (a model asked with thinking on and off, one label after the other); with `one_at_a_time` (why they cannot all be in memory) one after another, each
    loaded first, so that no answer waits for another model's load and each is timed as if alone."""
    from openai import OpenAI

    client = OpenAI(base_url=s.api_base, api_key=s.api_key or "unused", max_retries=0)
    lock = threading.Lock()
    busy = {m: 0.0 for m in models}
    loads: dict[str, float] = {}

    def work(model: str) -> None:
        gone = None  # set once the model stayed unreachable for a whole back-off window
        for rep in range(s.repeats):
            for p in puzzles:
                if (model, p.id, rep) in done:
                    continue
                if gone:
                    rec = {"model": model, "puzzle": p.id, "repeat": rep, "question": p.question, "answer": None,
                           "latency_s": 0.0, "error": f"not asked: the model was unreachable ({gone})"}
                else:
                    rec = ask_one(client, model, p, rep, s)
                    if rec.get("unreachable"):
                        gone = rec["error"]
                with lock:
                    store.append(rec)
                    busy[model] += rec["latency_s"]
                    if on_answer:
                        on_answer(rec)

    def work_all(labels: list[str]) -> None:
        for label in labels:
            work(label)

    by_model: dict[str, list[str]] = {}
    for m in models:
        by_model.setdefault(served(m)[0], []).append(m)
    t0 = time.perf_counter()
    if one_at_a_time:
        for name, labels in by_model.items():
            if any((m, p.id, r) not in done for m in labels for p in puzzles for r in range(s.repeats)):
                loads[name] = load_first(client, name, s)
                work_all(labels)
    else:
        with ThreadPoolExecutor(max_workers=max(1, len(by_model)), thread_name_prefix="ask") as pool:
            for f in [pool.submit(work_all, labels) for labels in by_model.values()]:
                f.result()
    timing = {"wall_s": round(time.perf_counter() - t0, 3), "busy_s": {m: round(v, 3) for m, v in busy.items()}}
    if one_at_a_time:
        timing.update(one_at_a_time=one_at_a_time, load_s=loads)
    return timing
