"""The API server's view of the fleet, one object on `app.state.workers`: which worker serves a
model (or why none can: 404 for a model nobody serves, 503 with Retry-After for one whose worker
is restarting, 400 for a feature its backend lacks), the worker's conversation template and
facts (cached), and its generation routes through the one fleet client, with a worker's own
refusals passed on as the client's 4xx."""
from __future__ import annotations

import time
from typing import AsyncIterator

import httpx

from deploy.backends.base import FEATURES
from deploy.wire import routes
from deploy.wire.client import AsyncFleetClient, ModelUnavailable
from deploy.wire.errors import RETRY_AFTER_S, ClientError, status_of_worker_code, unavailable
GENERATION_TIMEOUT = 3 * 3600  # FastChat's: a long answer on a CPU takes long
# A worker reading its model does not answer until it has (llama.cpp holds Python's lock while it
# loads); it stays in routing meanwhile (deploy/control/pool.py), so its calls may wait that long.
WORKER_TIMEOUT = 900.0


class Workers:
    def __init__(self, client: AsyncFleetClient, info_ttl: float = 5.0):
        self.client = client
        self.info_ttl = info_ttl
        self._templates: dict[tuple[str, str], dict] = {}
        self._info: dict[str, tuple[float, dict]] = {}

    async def route(self, model: str, needs: set[str] = frozenset()) -> str:
        """The address of a worker that serves `model` and can do what the request `needs`."""
        try:
            addr = await self.client.worker_address(model)
        except ModelUnavailable as e:
            if "cannot reach the controller" in str(e):
                raise unavailable(f"{e}; retry in a few seconds.", "controller_unreachable") from None
            raise await self.unavailable(model) from None
        if not needs:
            return addr
        # a worker reading its model answers nothing until it has: wait for its facts, as for its template
        missing = sorted(set(needs) - set((await self.info(addr, WORKER_TIMEOUT)).get("features") or []))
        if missing:
            raise await self.lacking(model, missing)
        return addr

    async def unavailable(self, model: str) -> ClientError:
        """503 with Retry-After while the model's worker is registered but not answering (it is
        restarting), else OpenAI's 404 model_not_found."""
        if any(model in w["models"] and not w["healthy"] for w in await self.client.workers()):
            return unavailable(f"model '{model}' is restarting (its worker stopped answering); retry in "
                               f"{RETRY_AFTER_S} s", "model_restarting", param="model")
        return ClientError(404, f"The model '{model}' does not exist: no worker serves it. GET /v1/models lists the "
                                f"models served now.", param="model", code="model_not_found")

    async def lacking(self, model: str, missing: list[str]) -> ClientError:
        """A 400 that names what the model cannot do, and the models that can."""
        able = []
        for other in await self.client.list_models():
            try:
                features = set((await self.info(await self.client.worker_address(other))).get("features") or [])
            except ModelUnavailable:
                continue
            if set(missing) <= features:
                able.append(other)
        what = " and ".join(FEATURES[m] for m in missing)
        fix = f"ask a model that supports it: {', '.join(able)}" if able else "no model here supports it now"
        return ClientError(400, f"model '{model}' does not support {what}. Fix: leave it out, or {fix}.",
                           param="model", code="unsupported_feature")

    async def info(self, addr: str, timeout: float | None = None) -> dict:
        """The worker's /fleet_info (backend, features, ...), cached for `info_ttl` seconds; a worker
        that did not answer in `timeout` gives {} and is asked again next time (its silence is no
        list of features: caching it refused a loading model's features for seconds)."""
        now = time.monotonic()
        cached = self._info.get(addr)
        if cached is None or now - cached[0] > self.info_ttl:
            got = await self.client.worker_info(addr, timeout=timeout)
            if not got:
                return {}
            cached = self._info[addr] = (now, got)
        return cached[1]

    async def template(self, addr: str, model: str) -> dict:
        """The worker's conversation template (FastChat's API server caches it the same way)."""
        key = (addr, model)
        if key not in self._templates:
            self._templates[key] = await self.client.conv_template(addr, model, timeout=WORKER_TIMEOUT)
        return self._templates[key]

    async def _post(self, addr: str, route: str, body: dict, timeout: float | None = None) -> dict:
        """A worker route's answer; the worker's own 4xx (a field it refuses) is the client's 4xx, and
        its 503 (its model could not get memory, or failed to load) a 503 with Retry-After."""
        try:
            return await self.client.worker_post(addr, route, body, timeout)
        except httpx.HTTPStatusError as e:
            status = e.response.status_code
            if status >= 500 and status != 503:
                raise
            try:
                reason = e.response.json().get("text") or e.response.text
            except ValueError:
                reason = e.response.text
            if status == 503:
                raise unavailable(reason, "model_not_loaded", param="model") from None
            raise ClientError(status, f"the worker refused the request: {reason}") from None

    async def max_new_tokens(self, addr: str, model: str, prompt: str, wanted: int | None) -> int:
        """What is left of the model's context after the prompt, at most `wanted`; a 400 if nothing is."""
        return self.room(*await self.count_tokens(addr, model, prompt), wanted)

    @staticmethod
    def room(tokens: int, context: int, wanted: int | None) -> int:
        """What a context leaves after a prompt of `tokens`, at most `wanted`; a 400 if nothing is."""
        room = context - tokens
        if room <= 0:
            raise ClientError(400, f"This model's maximum context length is {context} tokens. However, your messages "
                                   f"resulted in {tokens} tokens. Please reduce the length of the messages.",
                              param="messages", code="context_length_exceeded")
        return min(wanted, room) if wanted else room

    async def count_tokens(self, addr: str, model: str, prompt: str,
                           parts: list | None = None) -> tuple[int, int]:
        """(tokens of `prompt`, the model's context length); with its `parts` (a chat prompt), as the
        worker will feed them. Counting needs the model's tokenizer: a model that is not loaded loads
        now (the request waits; the worker bounds the wait)."""
        context = (await self._post(addr, routes.MODEL_DETAILS, {"model": model}, timeout=WORKER_TIMEOUT))[
            "context_length"]
        body = {"model": model, "prompt": prompt, **({"prompt_parts": parts} if parts is not None else {})}
        count = (await self._post(addr, routes.COUNT_TOKEN, body, timeout=WORKER_TIMEOUT + GENERATION_TIMEOUT))["count"]
        return count, context

    async def render(self, addr: str, model: str, messages: list[dict], kwargs: dict) -> dict:
        """The prompt of the model's own template (chat_template = "auto"): prompt, prompt_parts,
        opens_thinking, thinks. A template that cannot render the conversation is the client's 400."""
        return await self._post(addr, routes.WORKER_RENDER, {"model": model, "messages": messages,
                                                             "chat_template_kwargs": kwargs}, timeout=WORKER_TIMEOUT)

    async def token_ids(self, addr: str, params: dict) -> tuple[list[int], int]:
        """(the ids the model is fed for params' prompt, its context length)."""
        context = (await self._post(addr, routes.MODEL_DETAILS, {"model": params["model"]}, timeout=WORKER_TIMEOUT))[
            "context_length"]
        ids = (await self._post(addr, routes.WORKER_TOKENIZE, params, timeout=WORKER_TIMEOUT + GENERATION_TIMEOUT))
        return ids["tokens"], context

    def stream(self, addr: str, params: dict) -> AsyncIterator[dict]:
        return self.client.stream(addr, params, timeout=GENERATION_TIMEOUT)

    async def embed(self, addr: str, payload: dict) -> dict:
        return checked_frame(await self._post(addr, routes.WORKER_GET_EMBEDDINGS, payload,
                                              timeout=WORKER_TIMEOUT + GENERATION_TIMEOUT))


def checked_frame(frame: dict) -> dict:
    """A worker frame, or the ClientError (or 5xx) its error code stands for."""
    code = frame.get("error_code", 0)
    if code:
        status, kind = status_of_worker_code(code)
        raise ClientError(status, str(frame.get("text", "")), code=str(code), kind=kind)
    return frame
