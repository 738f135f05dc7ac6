"""The only place we patch FastChat 0.2.36 at run time. Each patch is narrow,
documented, and `check_upstream()` fails (and tests/test_compat.py with it)
the moment the upstream code we replace changes.

1. Streaming in the OpenAI API server. FastChat's two stream generators
   (`chat_completion_stream_generator`, `generate_completion_stream_generator`)
   call `chunk.json(exclude_unset=True, ensure_ascii=False)`; pydantic 2 raises
   "dumps_kwargs keyword arguments are no longer supported" after the headers
   went out, so clients see an empty body. We replace the two generators with
   versions that keep FastChat's event sequence and
   - encode with `model_dump_json` (raw UTF-8, no \\uXXXX escapes for Chinese);
   - put the request's token `usage` on the finishing chunk (the worker reports
     it; FastChat dropped it), so streaming clients get prompt/completion counts;
   - report a worker error, or a worker that vanished mid-answer, as an OpenAI
     `{"error": ...}` event, which the official client raises, instead of a
     chunk it silently ignores or a cut connection.

2. Sampling seed and exact prompts. FastChat's API server drops the OpenAI `seed` field. A
   small ASGI middleware reads it from the request body into a context variable, and a wrapper
   around `get_gen_params` adds it to the parameters sent to the worker (our llama.cpp worker and
   the transformers worker both honour it). The same wrapper renders the prompt with the model's
   own format for templates FastChat's separator styles cannot express byte-exactly
   (deploy/registry/templates.py, EXACT_PROMPTS: DeepSeek-LLM-Chat with a system message).
"""
from __future__ import annotations

import inspect
import json
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi.responses import JSONResponse

# sha256 of the upstream functions we replace or rely on; any change means re-checking the patch
UPSTREAM = {
    "openai_api_server.chat_completion_stream_generator":
        "a996d8825d1d1be8c499b1bed9765e1605f0b6f2f65569cd83d2c001dbfd1df8",
    "openai_api_server.generate_completion_stream_generator":
        "bbc20ccff152a7887ae9b7108ea288bb0102569fece50c08d84b94198bcd2c1e",
    "openai_api_server.get_gen_params": "cb39771052ec96e6775ac06142812291a69ee913992d65e6c47d95c1dae01137",
    # the worker's conversation, which the exact-prompt rendering rebuilds
    "openai_api_server.get_conv": "5816328d019f0b473a6e5fe7e6db3df7b1739a387f6c76780b912f91948c233f",
    "openai_api_server.check_model": "6b3491e87142a00e8bcc9b0d07f09a61ca5de28ec0f4817a355ffced24fc74ee",
}


class UpstreamChanged(RuntimeError):
    pass


def _source_sha(qualname: str) -> str:
    import hashlib

    from fastchat.serve import openai_api_server

    mod, _, attr = qualname.partition(".")
    obj = {"openai_api_server": openai_api_server}[mod]
    for part in attr.split("."):
        obj = getattr(obj, part)
    obj = getattr(obj, "_fleet_original", obj)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def check_upstream() -> None:
    """Fail loudly if the FastChat code these patches replace has changed."""
    for qualname, sha in UPSTREAM.items():
        if _source_sha(qualname) != sha:
            raise UpstreamChanged(f"FastChat's {qualname} changed since deploy/fastchat_compat.py was written; "
                                  f"re-check the patch that depends on it, then update UPSTREAM.")


def _sse(obj) -> str:
    data = obj if isinstance(obj, str) else obj.model_dump_json(exclude_none=True)
    return f"data: {data}\n\n"


def _error_event(message: str, code) -> str:
    return _sse(json.dumps({"error": {"message": message, "code": int(code), "type": "worker_error"}},
                           ensure_ascii=False))


def _usage(content: dict):
    from fastchat.protocol.openai_api_protocol import UsageInfo

    return UsageInfo.model_validate(content["usage"]) if content.get("usage") else None


class _StreamFailed(Exception):
    def __init__(self, event: str):
        self.event = event


async def _worker_deltas(gen_params: dict, worker_addr: str, model_name: str):
    """(new text, worker frame) per frame; a worker error, or a worker gone mid-answer, raises _StreamFailed."""
    from fastchat.constants import ErrorCode
    from fastchat.serve import openai_api_server as upstream

    previous = ""
    try:
        async for content in upstream.generate_completion_stream(gen_params, worker_addr):
            if content["error_code"] != 0:
                raise _StreamFailed(_error_event(content["text"], content["error_code"]))
            decoded = content["text"].replace("\ufffd", "")
            delta = decoded[len(previous):]
            previous = decoded if len(decoded) > len(previous) else previous
            yield delta, content
    except _StreamFailed:
        raise
    except Exception as e:
        raise _StreamFailed(_error_event(f"worker for '{model_name}' failed mid-answer: {type(e).__name__}: {e}",
                                         ErrorCode.INTERNAL_ERROR)) from None


async def chat_completion_stream_generator(model_name: str, gen_params: dict, n: int, worker_addr: str):
    """FastChat's generator, with the three changes listed in the module docstring."""
    import shortuuid
    from fastchat.protocol.openai_api_protocol import ChatCompletionResponseStreamChoice, DeltaMessage

    chunk_id = f"chatcmpl-{shortuuid.random()}"
    finish_events = []
    for i in range(n):
        yield _sse(ChatStreamChunk(id=chunk_id, model=model_name, choices=[
            ChatCompletionResponseStreamChoice(index=i, delta=DeltaMessage(role="assistant"), finish_reason=None)]))
        content = {}
        try:
            async for delta, content in _worker_deltas(gen_params, worker_addr, model_name):
                if delta:
                    yield _sse(ChatStreamChunk(id=chunk_id, model=model_name, choices=[
                        ChatCompletionResponseStreamChoice(index=i, delta=DeltaMessage(content=delta),
                                                           finish_reason=None)]))
        except _StreamFailed as f:
            yield f.event
            yield "data: [DONE]\n\n"
            return
        finish_events.append(ChatStreamChunk(id=chunk_id, model=model_name, usage=_usage(content), choices=[
            ChatCompletionResponseStreamChoice(index=i, delta=DeltaMessage(),
                                               finish_reason=content.get("finish_reason") or "stop")]))
    for chunk in finish_events:
        yield _sse(chunk)
    yield "data: [DONE]\n\n"


async def generate_completion_stream_generator(request, n: int, worker_addr: str):
    """FastChat's /v1/completions stream, with the same changes."""
    import shortuuid
    from fastchat.protocol.openai_api_protocol import CompletionResponseStreamChoice
    from fastchat.serve import openai_api_server as upstream

    chunk_id = f"cmpl-{shortuuid.random()}"
    finish_events = []
    for text in request.prompt:
        for i in range(n):
            gen_params = await upstream.get_gen_params(
                request.model, worker_addr, text, temperature=request.temperature, top_p=request.top_p,
                top_k=request.top_k, presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty, max_tokens=request.max_tokens,
                logprobs=request.logprobs, echo=request.echo, stop=request.stop)
            content = {}
            try:
                async for delta, content in _worker_deltas(gen_params, worker_addr, request.model):
                    if delta:
                        yield _sse(CompletionStreamChunk(id=chunk_id, model=request.model, choices=[
                            CompletionResponseStreamChoice(
                                index=i, text=delta, finish_reason=None,
                                logprobs=upstream.create_openai_logprobs(content.get("logprobs")))]))
            except _StreamFailed as f:
                yield f.event
                yield "data: [DONE]\n\n"
                return
            finish_events.append(CompletionStreamChunk(id=chunk_id, model=request.model, usage=_usage(content), choices=[
                CompletionResponseStreamChoice(index=i, text="", finish_reason=content.get("finish_reason") or "stop")]))
    for chunk in finish_events:
        yield _sse(chunk)
    yield "data: [DONE]\n\n"


def _stream_models():
    from typing import Optional

    from fastchat.protocol.openai_api_protocol import (
        ChatCompletionStreamResponse,
        CompletionStreamResponse,
        UsageInfo,
    )

    class _Chat(ChatCompletionStreamResponse):
        usage: Optional[UsageInfo] = None

    class _Completion(CompletionStreamResponse):
        usage: Optional[UsageInfo] = None

    return _Chat, _Completion


ChatStreamChunk, CompletionStreamChunk = _stream_models()


def patch_openai_streaming() -> None:
    from fastchat.serve import openai_api_server

    check_upstream()
    for fn in (chat_completion_stream_generator, generate_completion_stream_generator):
        current = getattr(openai_api_server, fn.__name__)
        if current is fn:
            continue
        fn._fleet_original = current
        setattr(openai_api_server, fn.__name__, fn)


_request_seed: ContextVar = ContextVar("fleet_request_seed", default=None)
SEED_PATHS = ("/v1/chat/completions", "/v1/completions")


class SeedFromBody:
    """ASGI middleware: remember the request's `seed` for get_gen_params, replay the body untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in SEED_PATHS:
            return await self.app(scope, receive, send)
        messages, body = [], b""
        while True:
            msg = await receive()
            messages.append(msg)
            body += msg.get("body", b"")
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break
        try:
            seed = json.loads(body or b"{}").get("seed")
        except (ValueError, AttributeError):
            seed = None  # FastChat's own validation answers malformed bodies
        token = _request_seed.set(int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None)

        async def replay():
            return messages.pop(0) if messages else await receive()

        try:
            await self.app(scope, replay, send)
        finally:
            _request_seed.reset(token)


def patch_seed_passthrough() -> None:
    from fastchat.serve import openai_api_server

    check_upstream()
    current = openai_api_server.get_gen_params
    if getattr(current, "_fleet_patched", False):
        return

    async def get_gen_params(model_name, worker_addr, messages, **kwargs):
        params = await current(model_name, worker_addr, messages, **kwargs)
        seed = _request_seed.get()
        if seed is not None:
            params["seed"] = seed
        if isinstance(messages, list):  # chat: the model's own format where FastChat's is inexact
            from deploy.fleet_client import conversation_from_messages
            from deploy.registry.templates import EXACT_PROMPTS, exact_prompt

            conv_dict = await openai_api_server.get_conv(model_name, worker_addr)  # cached by FastChat
            if conv_dict.get("name") in EXACT_PROMPTS:
                params["prompt"] = exact_prompt(conversation_from_messages(conv_dict, messages))
        return params

    get_gen_params._fleet_patched = True
    get_gen_params._fleet_original = current
    openai_api_server.get_gen_params = get_gen_params
    openai_api_server.app.add_middleware(SeedFromBody)


RETRY_AFTER_S = 5


def model_error(model: str, workers: list[dict]) -> JSONResponse:
    """A model the API cannot serve now: 503 with Retry-After while its worker is registered but
    not answering (it is restarting), else OpenAI's 404 model_not_found."""
    from fastapi.responses import JSONResponse

    if any(model in w["models"] and not w["healthy"] for w in workers):
        return JSONResponse({"error": {"message": f"model '{model}' is restarting (its worker stopped answering); "
                                                  f"retry in {RETRY_AFTER_S} s", "type": "model_unavailable",
                                       "param": "model", "code": "model_restarting"}},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse({"error": {"message": f"The model '{model}' does not exist: no worker serves it. "
                                              f"GET /v1/models lists the models served now.",
                                   "type": "invalid_request_error", "param": "model", "code": "model_not_found"}},
                        status_code=404)


def patch_check_model() -> None:
    """FastChat answers an unknown model with 400 listing every model, and a model whose worker is
    restarting the same way; clients (and OpenAI) expect 404 model_not_found, and 503 with
    Retry-After for a model that will be back."""
    from fastchat.serve import openai_api_server

    check_upstream()
    current = openai_api_server.check_model
    if getattr(current, "_fleet_patched", False):
        return

    async def check_model(request):
        if await current(request) is None:
            return None
        from deploy.fleet_client import AsyncFleetClient

        client = AsyncFleetClient(openai_api_server.app_settings.controller_address, timeout=3)
        try:
            workers = await client.workers()
        finally:
            await client.aclose()
        return model_error(request.model, workers)

    check_model._fleet_patched = True
    check_model._fleet_original = current
    openai_api_server.check_model = check_model


def patch_api_server() -> None:
    """Everything the API server process needs."""
    patch_openai_streaming()
    patch_seed_passthrough()
    patch_check_model()
