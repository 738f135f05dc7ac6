"""A FastChat worker that serves a model from an OpenAI-compatible server elsewhere (the `openai`
backend): the worker protocol answered by calling the upstream's /v1/completions (the prompt
rendered with the entry's chat template, as every worker renders it) or, where it has none, its
/v1/chat/completions with the messages; its /v1/embeddings and its tokenizer. Its health is the upstream's: a background check every second, and the controller's
status check fails while the upstream does not answer, so the model leaves routing within seconds
and comes back by itself."""
from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
import uuid

import httpx
from fastchat.serve.base_model_worker import BaseModelWorker

from deploy.backends.base import ConfigProblem
from deploy.backends.openai_shapes import TokenLogprobs, embeddings_reply, last_frame
from deploy.registry.templates import text_for_tokenizer
from deploy.wire.frames import ENGINE_ERROR, VALIDATION_ERROR, frame

log = logging.getLogger("deploy.backends.upstream_worker")
HEALTH_EVERY = 1.0
HEALTH_TIMEOUT = 2.0


def read_key(entry) -> str | None:
    """The upstream's API key from its file (mode 600 or stricter), or None."""
    path = entry.options.key_path()
    if path is None:
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigProblem(f"upstream_key_file {path} can be read by other users (mode {mode:o}). Fix: chmod 600 {path}")
    key = path.read_text().strip()
    if not key:
        raise ConfigProblem(f"upstream_key_file {path} is empty. Fix: write the upstream's API key in it.")
    return key


def sampling_fields(params: dict, model: str, stream: bool) -> dict:
    """FastChat's generation params as the fields both OpenAI routes share."""
    stop = params.get("stop") or []
    body = {"model": model, "stream": stream,
            "max_tokens": int(params.get("max_new_tokens") or 256),
            "temperature": float(params.get("temperature", 1.0)), "top_p": float(params.get("top_p", 1.0)),
            "stop": [stop] if isinstance(stop, str) else [s for s in stop if s] or None,
            "presence_penalty": float(params.get("presence_penalty", 0.0)),
            "frequency_penalty": float(params.get("frequency_penalty", 0.0))}
    if int(params.get("top_k", -1) or -1) > 0:
        body["top_k"] = int(params["top_k"])  # vLLM, SGLang and llama.cpp take it beside OpenAI's fields
    if params.get("seed") is not None:
        body["seed"] = int(params["seed"])
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def completions_body(params: dict, model: str, prompt: str, stream: bool) -> dict:
    """A /v1/completions request: the prompt already in the entry's chat template."""
    body = {**sampling_fields(params, model, stream), "prompt": prompt}
    if params.get("stop_token_ids"):
        body["stop_token_ids"] = list(params["stop_token_ids"])  # vLLM's extra field; others ignore it
    if params.get("logprobs") is not None:
        body["logprobs"] = max(1, int(params["logprobs"]))
    return body


def chat_body(params: dict, model: str, stream: bool) -> dict:
    """A /v1/chat/completions request: the messages as the API got them (a raw completion prompt
    becomes one user message), for the upstream's own chat template."""
    messages = params.get("messages") or [{"role": "user", "content": params["prompt"]}]
    body = {**sampling_fields(params, model, stream), "messages": messages}
    if params.get("logprobs") is not None:
        body.update(logprobs=True, top_logprobs=int(params["logprobs"]))
    return body


def chunk_text(choice: dict) -> str:
    """The new text of one streamed choice, in either route's shape."""
    return choice.get("text") or (choice.get("delta") or choice.get("message") or {}).get("content") or ""


class UpstreamWorker(BaseModelWorker):
    def __init__(self, entry, controller_addr: str, worker_addr: str):
        super().__init__(controller_addr, worker_addr, uuid.uuid4().hex[:8], entry.path, [entry.model_name],
                         entry.concurrency, conv_template=entry.chat_template)
        self.entry = entry
        self.base = entry.path.rstrip("/")
        self.model = entry.options.upstream_model
        self.context_len = entry.context_length
        key = read_key(entry)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(3 * 3600, connect=5), headers=self._headers)
        self.healthy, self.latency, self.reason = False, None, "not checked yet"
        self._checker: asyncio.Task | None = None
        self.template = entry.chat_template
        self.route = entry.options.upstream_route  # "auto" settles on the first request

    # ---- the model's life: nothing to load, only an upstream to watch ----------------------------
    def load(self) -> None:
        """Nothing is loaded here; the upstream must answer and list the model."""
        r = httpx.get(self.base + "/models", headers=self._headers, timeout=10)
        r.raise_for_status()

    def unload(self) -> None:
        pass

    async def check_health(self) -> None:
        """GET /models on the upstream: its latency, or why it does not answer."""
        t0 = time.monotonic()
        try:
            r = await self._http.get(self.base + "/models", timeout=HEALTH_TIMEOUT)
            r.raise_for_status()
            self.healthy, self.latency, self.reason = True, time.monotonic() - t0, ""
        except httpx.HTTPStatusError as e:
            self.healthy, self.reason = False, f"the upstream answered HTTP {e.response.status_code}"
        except httpx.HTTPError as e:
            self.healthy, self.reason = False, f"the upstream does not answer ({type(e).__name__})"

    async def watch(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(HEALTH_EVERY)

    def health_problem(self) -> str | None:
        """Why this worker cannot serve now (its upstream does not answer), for the controller's
        status check (deploy/worker/app.py answers it with a 503), or None."""
        if self._checker is None:  # called on the worker app's loop
            self._checker = asyncio.get_running_loop().create_task(self.watch())
        return None if self.healthy or self.reason == "not checked yet" else self.reason

    def live_info(self) -> dict:
        """For /fleet_info and `deploy status`: the upstream's health and latency (never its key)."""
        return {"upstream_ok": self.healthy, "upstream_route": self.route, "upstream_latency_ms": round(self.latency * 1000, 1) if self.latency
                else None, "upstream_problem": self.reason}

    async def close(self) -> None:
        if self._checker:
            self._checker.cancel()
        await self._http.aclose()

    # ---- the worker protocol --------------------------------------------------------------------
    def text_for_tokenizer(self, prompt: str) -> str:
        """The upstream's tokenizer adds its own BOS (as the model's does): the model's prefix once."""
        return text_for_tokenizer(prompt, self.template, "")

    async def count_token(self, params: dict) -> dict:
        """The upstream's own count where it offers a tokenizer (llama.cpp's /tokenize, vLLM's),
        else an upper estimate (a token per character), which only shortens max_tokens."""
        root = self.base.removesuffix("/v1")
        text = self.text_for_tokenizer(params["prompt"])
        for body in ({"model": self.model, "prompt": text}, {"content": text}):
            try:
                r = await self._http.post(root + "/tokenize", json=body, timeout=10)
                if r.status_code == 200:
                    out = r.json()
                    return {"count": int(out.get("count") or len(out["tokens"])), "error_code": 0}
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        return {"count": len(text), "error_code": 0}

    async def _request(self, params: dict, stream: bool):
        """Open the upstream request on the entry's route; on `auto`, an upstream without
        /v1/completions (404 or 405) is asked through /v1/chat/completions from then on."""
        if self.route != "chat":
            body = completions_body(params, self.model, self.text_for_tokenizer(params["prompt"]), stream)
            r = await self._http.send(self._http.build_request("POST", self.base + "/completions", json=body),
                                      stream=True)
            if not (self.route == "auto" and r.status_code in (404, 405)):
                return r
            await r.aclose()
            self.route = "chat"
            log.info("%s has no /v1/completions: prompts go to /v1/chat/completions, in the upstream's own "
                     "chat template", self.base)
        return await self._http.send(self._http.build_request(
            "POST", self.base + "/chat/completions", json=chat_body(params, self.model, stream)), stream=True)

    async def generate_stream_gate(self, params: dict):
        """FastChat stream protocol from the upstream's SSE: cumulative text, usage, logprobs."""
        self.call_ct += 1
        text, usage, finish, logprobs = "", {}, None, TokenLogprobs(0, params.get("logprobs"))
        try:
            r = await self._request(params, True)
            try:
                if r.status_code != 200:
                    detail = (await r.aread()).decode(errors="replace")[:500]
                    code = VALIDATION_ERROR if 400 <= r.status_code < 500 else ENGINE_ERROR
                    yield frame({"text": f"the upstream refused the request (HTTP {r.status_code}): {detail}",
                                 "error_code": code})
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text += chunk_text(choice)
                        logprobs.add(choice.get("logprobs"))
                        finish = choice.get("finish_reason") or finish
                    yield frame({"text": text, "error_code": 0, "usage": usage, "finish_reason": finish,
                                 **logprobs.fields()})
            finally:
                await r.aclose()
        except httpx.HTTPError as e:
            yield frame({"text": f"the upstream {self.base} failed: {type(e).__name__}", "error_code": ENGINE_ERROR})

    async def generate_gate(self, params: dict) -> dict:
        return await last_frame(self.generate_stream_gate(params))

    async def get_embeddings(self, params: dict) -> dict:
        inputs = params["input"] if isinstance(params["input"], list) else [params["input"]]
        try:
            r = await self._http.post(self.base + "/embeddings", json={"model": self.model, "input": inputs,
                                                                      "encoding_format": "float"})
        except httpx.HTTPError as e:
            return {"text": f"the upstream {self.base} failed: {type(e).__name__}", "error_code": ENGINE_ERROR}
        if r.status_code != 200:
            return {"text": f"the upstream refused the embeddings (HTTP {r.status_code}): {r.text[:300]}",
                    "error_code": VALIDATION_ERROR}
        return embeddings_reply(r.json(), params.get("encoding_format"))
