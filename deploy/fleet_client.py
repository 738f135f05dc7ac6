"""The one client of FastChat's control plane and worker protocol.

Everything of ours that asks the controller which models are up, where a model's worker is,
or streams from a worker goes through here: the web UI, eval/ask_all.py, `deploy up/status`,
the benchmark and the test harness. The route names are spelled only here (the worker app
serves them by these constants). Two transports share one protocol: `FleetClient` (blocking,
for the CLI, threads and tests) and `AsyncFleetClient` (for async callers such as the web UI).

Generation parameters are built from a conversation exactly as FastChat's OpenAI API server
builds them (`gen_params`), so a model sees the same prompt and settings from every door.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Iterator

import httpx

# ---- FastChat's routes ------------------------------------------------------------------------
# controller
LIST_MODELS = "/list_models"
GET_WORKER_ADDRESS = "/get_worker_address"
REFRESH_ALL_WORKERS = "/refresh_all_workers"
REGISTER_WORKER = "/register_worker"
RECEIVE_HEART_BEAT = "/receive_heart_beat"
FLEET_WORKERS = "/fleet_workers"  # ours: every worker with its health, queue and last heartbeat
# worker
WORKER_GET_STATUS = "/worker_get_status"
WORKER_GENERATE_STREAM = "/worker_generate_stream"
WORKER_GENERATE = "/worker_generate"
WORKER_GET_CONV_TEMPLATE = "/worker_get_conv_template"
WORKER_GET_EMBEDDINGS = "/worker_get_embeddings"
COUNT_TOKEN = "/count_token"
MODEL_DETAILS = "/model_details"
FLEET_INFO = "/fleet_info"  # ours: what the worker is (backend, cores, budget, ...)
SECRET_HEADER = "X-Fleet-Secret"  # registration and heartbeats carry the fleet secret in it


class ModelUnavailable(Exception):
    """The controller cannot be reached, or no worker serves the model now."""


# ---- the protocol, independent of the transport -----------------------------------------------
def gen_params(model: str, conv, *, temperature: float = 0.7, top_p: float = 1.0, top_k: int = -1,
               max_new_tokens: int | None = None, stop: str | list[str] | None = None, seed: int | None = None,
               presence_penalty: float = 0.0, frequency_penalty: float = 0.0, echo: bool = False,
               logprobs: int | None = None) -> dict[str, Any]:
    """A worker request for `conv` (whose last message is the empty assistant turn), with the keys
    and defaults FastChat's API server sends for /v1/chat/completions, plus the OpenAI `seed`."""
    stops: set[str] = set()
    for s in (stop, conv.stop_str):  # FastChat's _add_to_set: a string or a list, each optional
        if s:
            stops.update([s] if isinstance(s, str) else s)
    from deploy.registry.templates import exact_prompt

    params = {"model": model, "prompt": exact_prompt(conv) or conv.get_prompt(), "temperature": temperature,
              "logprobs": logprobs,
              "top_p": top_p, "top_k": top_k, "presence_penalty": presence_penalty,
              "frequency_penalty": frequency_penalty, "max_new_tokens": max_new_tokens, "echo": echo,
              "stop_token_ids": conv.stop_token_ids, "stop": sorted(stops)}
    if seed is not None:
        params["seed"] = int(seed)
    return params


def conversation_from_messages(conv_dict: dict, messages: list[dict]):
    """The conversation FastChat's API server builds from OpenAI messages (its get_gen_params), with
    the empty assistant turn at the end; for rendering the prompt where its template is inexact."""
    conv = conversation_from_dict(conv_dict)
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = "\n".join(part["text"] for part in content if part.get("type") == "text")
        if m["role"] == "system":
            conv.set_system_message(content)
        else:
            conv.append_message(conv.roles[0] if m["role"] == "user" else conv.roles[1], content)
    conv.append_message(conv.roles[1], None)
    return conv


def conversation_from_dict(d: dict):
    """The Conversation a worker sent (/worker_get_conv_template), rebuilt as the API server does."""
    from fastchat.conversation import Conversation, SeparatorStyle

    return Conversation(
        name=d["name"], system_template=d["system_template"], system_message=d["system_message"],
        roles=tuple(d["roles"]), messages=[list(m) for m in d.get("messages", [])], offset=d.get("offset", 0),
        sep_style=SeparatorStyle(d["sep_style"]), sep=d["sep"], sep2=d.get("sep2"), stop_str=d.get("stop_str"),
        stop_token_ids=d.get("stop_token_ids"),
    )


class FrameDecoder:
    """FastChat's worker stream: JSON objects, each followed by a NUL byte, split anywhere by TCP."""

    def __init__(self):
        self._buf = b""

    def feed(self, chunk: bytes) -> list[dict]:
        self._buf += chunk
        *frames, self._buf = self._buf.split(b"\0")
        return [json.loads(f) for f in frames if f.strip()]

    @property
    def leftover(self) -> bytes:
        return self._buf


def _models(body: Any) -> list[str]:
    return sorted(body["models"])


def _address(model: str, body: Any) -> str:
    addr = body.get("address") if isinstance(body, dict) else None
    if not addr:
        raise ModelUnavailable(f"'{model}' has no registered worker now (it may have stopped)")
    return addr


def _unreachable(controller: str, e: Exception) -> ModelUnavailable:
    return ModelUnavailable(f"cannot reach the controller at {controller} ({type(e).__name__})")


_ERRORS = (httpx.HTTPError, ValueError, KeyError, TypeError)


# ---- blocking transport -------------------------------------------------------------------------
class FleetClient:
    def __init__(self, controller_url: str, timeout: float = 5):
        self.controller_url = controller_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _post(self, url: str, body: dict | None = None) -> Any:
        r = self.http.post(url, json=body)
        r.raise_for_status()
        return r.json()

    def list_models(self) -> list[str]:
        """Registered models whose workers answer (the controller checks them every second);
        raises ModelUnavailable if the controller does not answer."""
        try:
            return _models(self._post(self.controller_url + LIST_MODELS))
        except _ERRORS as e:
            raise _unreachable(self.controller_url, e) from None

    def registered(self) -> set[str]:
        """Registered models, or none when the controller is down (for polling loops)."""
        try:
            return set(self.list_models())
        except ModelUnavailable:
            return set()

    def worker_address(self, model: str) -> str:
        try:
            body = self._post(self.controller_url + GET_WORKER_ADDRESS, {"model": model})
        except _ERRORS as e:
            raise _unreachable(self.controller_url, e) from None
        return _address(model, body)

    def worker_info(self, addr: str) -> dict:
        """/fleet_info of one of our workers; {} for workers that are not ours."""
        try:
            info = self.http.get(addr + FLEET_INFO).json()
        except _ERRORS:
            return {}
        return info if isinstance(info, dict) else {}

    def workers(self) -> list[dict]:
        """Our controller's view of every worker: models, queue, heartbeat age, health."""
        try:
            r = self.http.get(self.controller_url + FLEET_WORKERS)
            r.raise_for_status()
            return r.json()["workers"]
        except _ERRORS:
            return []

    def conversation(self, model: str):
        addr = self.worker_address(model)
        try:
            return conversation_from_dict(self._post(addr + WORKER_GET_CONV_TEMPLATE)["conv"])
        except _ERRORS as e:
            raise ModelUnavailable(f"the worker of '{model}' does not answer ({type(e).__name__})") from None

    def stream(self, addr: str, params: dict, timeout: float = 600) -> Iterator[dict]:
        """The worker's frames (cumulative text, error_code, usage, finish_reason) as they come."""
        dec = FrameDecoder()
        with self.http.stream("POST", addr + WORKER_GENERATE_STREAM, json=params,
                              timeout=httpx.Timeout(timeout, connect=5)) as r:
            r.raise_for_status()
            for chunk in r.iter_raw():
                yield from dec.feed(chunk)

    def wait_registered(self, names, timeout: float, every: float = 0.5, on_poll=None) -> set[str]:
        """Poll until every name is registered or `timeout` passes; returns the registered set.
        `on_poll(registered)` may return True to stop early (e.g. a process died)."""
        t0 = time.monotonic()
        while True:
            got = self.registered()
            if set(names) <= got or time.monotonic() - t0 >= timeout or (on_poll and on_poll(got)):
                return got
            time.sleep(every)


# ---- async transport ----------------------------------------------------------------------------
class AsyncFleetClient:
    def __init__(self, controller_url: str, timeout: float = 5):
        self.controller_url = controller_url.rstrip("/")
        self.http = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _post(self, url: str, body: dict | None = None) -> Any:
        r = await self.http.post(url, json=body)
        r.raise_for_status()
        return r.json()

    async def list_models(self) -> list[str]:
        try:
            return _models(await self._post(self.controller_url + LIST_MODELS))
        except _ERRORS as e:
            raise _unreachable(self.controller_url, e) from None

    async def worker_address(self, model: str) -> str:
        try:
            body = await self._post(self.controller_url + GET_WORKER_ADDRESS, {"model": model})
        except _ERRORS as e:
            raise _unreachable(self.controller_url, e) from None
        return _address(model, body)

    async def worker_info(self, addr: str) -> dict:
        try:
            info = (await self.http.get(addr + FLEET_INFO)).json()
        except _ERRORS:
            return {}
        return info if isinstance(info, dict) else {}

    async def workers(self) -> list[dict]:
        try:
            r = await self.http.get(self.controller_url + FLEET_WORKERS)
            r.raise_for_status()
            return r.json()["workers"]
        except _ERRORS:
            return []

    async def conversation(self, model: str):
        addr = await self.worker_address(model)
        try:
            return conversation_from_dict((await self._post(addr + WORKER_GET_CONV_TEMPLATE))["conv"])
        except _ERRORS as e:
            raise ModelUnavailable(f"the worker of '{model}' does not answer ({type(e).__name__})") from None

    async def stream(self, addr: str, params: dict, timeout: float = 600) -> AsyncIterator[dict]:
        dec = FrameDecoder()
        async with self.http.stream("POST", addr + WORKER_GENERATE_STREAM, json=params,
                                    timeout=httpx.Timeout(timeout, connect=5)) as r:
            r.raise_for_status()
            async for chunk in r.aiter_raw():
                for frame in dec.feed(chunk):
                    yield frame

    async def register_worker(self, worker_url: str, status: dict, secret: str) -> None:
        """Join the controller (raises httpx.HTTPStatusError on 401/400, httpx errors if it is down)."""
        r = await self.http.post(self.controller_url + REGISTER_WORKER, headers={SECRET_HEADER: secret}, json={
            "worker_name": worker_url, "check_heart_beat": True, "worker_status": status, "multimodal": False})
        r.raise_for_status()

    async def heart_beat(self, worker_url: str, queue_length: int, secret: str) -> bool:
        """False when the controller does not know this worker (it must register again)."""
        r = await self.http.post(self.controller_url + RECEIVE_HEART_BEAT, headers={SECRET_HEADER: secret},
                                 json={"worker_name": worker_url, "queue_length": queue_length})
        r.raise_for_status()
        return bool(r.json().get("exist"))

    async def wait_registered(self, names, timeout: float, every: float = 0.5) -> set[str]:
        t0 = time.monotonic()
        while True:
            try:
                got = set(await self.list_models())
            except ModelUnavailable:
                got = set()
            if set(names) <= got or time.monotonic() - t0 >= timeout:
                return got
            await asyncio.sleep(every)
