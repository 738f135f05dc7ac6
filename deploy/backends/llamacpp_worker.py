"""A FastChat worker on llama.cpp (xllamacpp: the llama.cpp server engine in-process).

It registers and heart-beats like any FastChat worker (BaseModelWorker does that part) and
answers the worker protocol used by FastChat's API server and web UI. Concurrent requests run
in the engine's parallel slots, batched together, rather than queued behind one another.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastchat.constants import ErrorCode
from fastchat.serve.base_model_worker import BaseModelWorker

log = logging.getLogger("deploy.backends.llamacpp_worker")
_DONE = object()


def engine_request(params: dict, stream: bool) -> dict:
    """Translate FastChat's generation params into a llama.cpp /completion body."""
    stop = params.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    top_k = int(params.get("top_k", -1) or -1)
    body = {
        "prompt": params["prompt"],
        "n_predict": int(params.get("max_new_tokens", 256)),
        "temperature": float(params.get("temperature", 1.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "top_k": top_k if top_k > 0 else 0,  # FastChat's -1 (off) is llama.cpp's 0 (whole vocabulary)
        "min_p": 0.0,
        "repeat_penalty": float(params.get("repetition_penalty", 1.0)),
        "presence_penalty": float(params.get("presence_penalty", 0.0)),
        "frequency_penalty": float(params.get("frequency_penalty", 0.0)),
        "stop": [s for s in stop if s],
        "stream": stream,
        "cache_prompt": True,
    }
    if params.get("ignore_eos"):  # benchmarks: a fixed number of tokens (FastChat's API never sends it)
        body["ignore_eos"] = True
    if params.get("seed") is not None:
        body["seed"] = int(params["seed"])
        # A reused prompt cache changes the batch shapes, and so the logits' last bits, and so
        # what a seeded sampler picks: a seeded request recomputes its prompt to be repeatable.
        body["cache_prompt"] = False
    return body


class LlamaCppWorker(BaseModelWorker):
    def __init__(self, entry, controller_addr: str, worker_addr: str):
        import xllamacpp

        super().__init__(
            controller_addr, worker_addr, uuid.uuid4().hex[:8], str(entry.resolved_path),
            [entry.name], entry.concurrency, conv_template=entry.chat_template,
        )
        params = xllamacpp.CommonParams()
        params.model.path = str(entry.resolved_path)
        params.n_ctx = entry.context_length * entry.concurrency  # split evenly across the slots
        params.n_parallel = entry.concurrency
        params.cpuparams.n_threads = entry.n_threads
        params.cpuparams_batch.n_threads = entry.n_threads
        if entry.poll is not None:
            params.cpuparams.poll = params.cpuparams_batch.poll = entry.poll
        params.n_threads_http = 1
        self.engine = xllamacpp.Server(params)
        self.context_len = entry.context_length
        self.frame_interval = entry.stream_interval_ms / 1000
        self._pool = ThreadPoolExecutor(max_workers=entry.concurrency + 1, thread_name_prefix="engine")
        self._engine_http = httpx.AsyncClient(base_url=self.engine.listening_address, timeout=60)

    async def close(self) -> None:
        await self._engine_http.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def count_token(self, params: dict) -> dict:
        r = await self._engine_http.post("/tokenize", json={"content": params["prompt"], "parse_special": True})
        r.raise_for_status()
        return {"count": len(r.json()["tokens"]), "error_code": 0}

    async def generate_stream_gate(self, params: dict):
        """FastChat stream protocol: cumulative text per chunk, NUL-delimited JSON."""
        self.call_ct += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk):  # engine thread
            if cancelled.is_set():
                return True  # the client went away: True asks the engine to stop this request
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return False

        def run():
            try:
                self.engine.handle_completions(engine_request(params, stream=True), on_chunk)
            except Exception as e:  # surfaces as an error chunk, never a dead stream
                loop.call_soon_threadsafe(queue.put_nowait, {"error": {"message": str(e)}})
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        loop.run_in_executor(self._pool, run)
        text = params["prompt"] if params.get("echo") else ""
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        last_sent, sent_text = 0.0, None
        try:
            while (item := await queue.get()) is not _DONE:
                if "error" in item or "choices" not in item:
                    err = item.get("error", item)
                    msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                    yield _frame({"text": f"llama.cpp engine error: {msg}", "error_code": ErrorCode.INTERNAL_ERROR})
                    continue
                choice = item["choices"][0]
                text += choice.get("text") or ""
                if "usage" in item:
                    u = item["usage"]
                    usage = {k: u[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                elif choice.get("text"):
                    usage["completion_tokens"] += 1
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                finish = choice.get("finish_reason")
                now = loop.time()
                # Coalesce tokens into frames at most every stream_interval_ms: every frame costs
                # a wake-up and JSON work in this worker, the API server and the client, CPU the
                # engine's threads lose on a small machine. The first text and the end go at once.
                if finish is None and (text == (sent_text or "") or
                                       (sent_text and now - last_sent < self.frame_interval)):
                    continue
                last_sent, sent_text = now, text
                yield _frame({"text": text, "error_code": 0, "usage": usage, "finish_reason": finish})
        finally:
            cancelled.set()

    async def generate_gate(self, params: dict) -> dict:
        last = {"text": "", "error_code": 0}
        async for frame in self.generate_stream_gate(params):
            last = json.loads(frame[:-1])
            if last["error_code"]:
                break
        return last


def _frame(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\0"
