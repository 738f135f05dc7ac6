"""The only place we patch FastChat 0.2.36 at run time. Each patch is narrow,
documented, and `check_upstream()` fails (and tests/test_compat.py with it)
the moment the upstream code we replace changes. Requests reach these patches through the
gate (deploy/api/gate.py), which has checked and normalised the body and kept the OpenAI
fields FastChat drops in `current_extras`.

1. Streaming. FastChat's two stream generators call `chunk.json(exclude_unset=True,
   ensure_ascii=False)`, which pydantic 2 rejects after the headers went out, so clients see an
   empty body. Ours keep FastChat's event sequence and
   - encode with `model_dump_json` (raw UTF-8, no \\uXXXX escapes for Chinese);
   - send the request's token usage in a last chunk when `stream_options.include_usage` asks;
   - pass on token log-probabilities, per chunk;
   - report a worker error, or a worker that vanished mid-answer, as an OpenAI `{"error": ...}`
     event, which the official client raises, instead of a chunk it ignores or a cut connection.
2. `get_gen_params` adds the request's seed, JSON schema (response_format) and logprobs to the
   worker's parameters, and renders the prompt in the model's own format where FastChat's
   separator styles cannot express it byte-exactly (deploy/registry/templates.py, EXACT_PROMPTS).
3. `check_model`: 404 model_not_found for an unknown model, 503 with Retry-After for one whose
   worker is restarting, 400 for a feature its backend lacks (FastChat: 400 listing every model).
4. The /v1/chat/completions handler: FastChat's, with log-probabilities kept on non-streamed
   answers.
5. `ClientError` raised in a handler becomes its OpenAI-shaped response.
"""
from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING

from deploy.api.errors import ClientError
from deploy.api.gate import current_extras

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
    # the handler patch 4 replaces (the module attribute of that name is /api/v1's handler)
    "route:/v1/chat/completions": "5e72bc484cafd917be9585b556fcdc031622f4780ee9c2725fffc6247c502ea1",
}


class UpstreamChanged(RuntimeError):
    pass


def _source_sha(qualname: str) -> str:
    import hashlib

    from fastchat.serve import openai_api_server

    if qualname.startswith("route:"):
        obj = _route(openai_api_server.app, qualname[len("route:"):]).endpoint
    else:
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


def _error_event(message: str, code, kind: str = "worker_error") -> str:
    """kind: worker_error (the worker reported it) or worker_unavailable (it went away mid-answer;
    asking again once it is back can succeed, and clients such as ask_all do)."""
    return _sse(json.dumps({"error": {"message": message, "code": int(code), "type": kind}}, ensure_ascii=False))


class _StreamFailed(Exception):
    def __init__(self, event: str):
        self.event = event


class _Usage:
    """The token counts of every choice of one request, summed (OpenAI sends one usage)."""

    def __init__(self):
        self.prompt = self.completion = 0

    def add(self, content: dict) -> None:
        u = content.get("usage") or {}
        self.prompt += int(u.get("prompt_tokens") or 0)
        self.completion += int(u.get("completion_tokens") or 0)

    def model(self):
        from fastchat.protocol.openai_api_protocol import UsageInfo

        return UsageInfo(prompt_tokens=self.prompt, completion_tokens=self.completion,
                         total_tokens=self.prompt + self.completion)


def _logprobs_delta(content: dict, key: str, sent: int):
    """The token log-probabilities not yet sent: (delta, tokens sent now). The worker's frames
    hold them cumulatively, like the text."""
    lp = content.get(key)
    if not lp:
        return None, sent
    if key == "chat_logprobs":
        tokens = lp["content"]
        return ({"content": tokens[sent:]} if len(tokens) > sent else None), len(tokens)
    n = len(lp["tokens"])
    return ({k: v[sent:] for k, v in lp.items()} if n > sent else None), n


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
                                         ErrorCode.INTERNAL_ERROR, "worker_unavailable")) from None


def _closing_events(finish_events: list, usage: _Usage, make_chunk, chunk_id: str, model: str):
    """The finish chunks, then (only when stream_options.include_usage asked for it, as OpenAI
    does) one chunk with no choices and the request's usage, then [DONE]."""
    for chunk in finish_events:
        yield _sse(chunk)
    extras = current_extras.get()
    extras.completion_tokens = usage.completion  # for the metrics
    if extras.include_usage:
        yield _sse(make_chunk(id=chunk_id, model=model, choices=[], usage=usage.model()))
    yield "data: [DONE]\n\n"


async def chat_completion_stream_generator(model_name: str, gen_params: dict, n: int, worker_addr: str):
    """FastChat's generator, with the changes listed in the module docstring."""
    import shortuuid
    from fastchat.protocol.openai_api_protocol import DeltaMessage

    chunk_id = f"chatcmpl-{shortuuid.random()}"
    finish_events, usage = [], _Usage()
    for i in range(n):
        yield _sse(ChatStreamChunk(id=chunk_id, model=model_name, choices=[
            ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant"), finish_reason=None)]))
        content, sent = {}, 0
        try:
            async for delta, content in _worker_deltas(gen_params, worker_addr, model_name):
                logprobs, sent = _logprobs_delta(content, "chat_logprobs", sent)
                if delta or logprobs:
                    yield _sse(ChatStreamChunk(id=chunk_id, model=model_name, choices=[
                        ChatStreamChoice(index=i, delta=DeltaMessage(content=delta), logprobs=logprobs,
                                         finish_reason=None)]))
        except _StreamFailed as f:
            yield f.event
            yield "data: [DONE]\n\n"
            return
        usage.add(content)
        finish_events.append(ChatStreamChunk(id=chunk_id, model=model_name, choices=[
            ChatStreamChoice(index=i, delta=DeltaMessage(), finish_reason=content.get("finish_reason") or "stop")]))
    for event in _closing_events(finish_events, usage, ChatStreamChunk, chunk_id, model_name):
        yield event


async def generate_completion_stream_generator(request, n: int, worker_addr: str):
    """FastChat's /v1/completions stream, with the same changes."""
    import shortuuid
    from fastchat.protocol.openai_api_protocol import CompletionResponseStreamChoice
    from fastchat.serve import openai_api_server as upstream

    chunk_id = f"cmpl-{shortuuid.random()}"
    finish_events, usage = [], _Usage()
    for text in request.prompt:
        for i in range(n):
            gen_params = await upstream.get_gen_params(
                request.model, worker_addr, text, temperature=request.temperature, top_p=request.top_p,
                top_k=request.top_k, presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty, max_tokens=request.max_tokens,
                logprobs=request.logprobs, echo=request.echo, stop=request.stop)
            content, sent = {}, 0
            try:
                async for delta, content in _worker_deltas(gen_params, worker_addr, request.model):
                    logprobs, sent = _logprobs_delta(content, "logprobs", sent)
                    if delta or logprobs:
                        yield _sse(CompletionStreamChunk(id=chunk_id, model=request.model, choices=[
                            CompletionResponseStreamChoice(index=i, text=delta, finish_reason=None,
                                                           logprobs=upstream.create_openai_logprobs(logprobs))]))
            except _StreamFailed as f:
                yield f.event
                yield "data: [DONE]\n\n"
                return
            usage.add(content)
            finish_events.append(CompletionStreamChunk(id=chunk_id, model=request.model, choices=[
                CompletionResponseStreamChoice(index=i, text="", finish_reason=content.get("finish_reason") or "stop")]))
    for event in _closing_events(finish_events, usage, CompletionStreamChunk, chunk_id, request.model):
        yield event


def _stream_models():
    from typing import Optional

    from fastchat.protocol.openai_api_protocol import (
        ChatCompletionResponseStreamChoice,
        ChatCompletionStreamResponse,
        CompletionStreamResponse,
        UsageInfo,
    )

    class _ChatChoice(ChatCompletionResponseStreamChoice):
        logprobs: Optional[dict] = None

    class _Chat(ChatCompletionStreamResponse):
        usage: Optional[UsageInfo] = None
        choices: list[_ChatChoice]

    class _Completion(CompletionStreamResponse):
        usage: Optional[UsageInfo] = None

    return _Chat, _ChatChoice, _Completion


ChatStreamChunk, ChatStreamChoice, CompletionStreamChunk = _stream_models()


def patch_openai_streaming() -> None:
    from fastchat.serve import openai_api_server

    check_upstream()
    for fn in (chat_completion_stream_generator, generate_completion_stream_generator):
        current = getattr(openai_api_server, fn.__name__)
        if current is fn:
            continue
        fn._fleet_original = current
        setattr(openai_api_server, fn.__name__, fn)


def patch_gen_params() -> None:
    """Patch 2: get_gen_params adds what the gate kept from the request (seed, response_format's
    schema, logprobs) and renders exact prompts."""
    from fastchat.serve import openai_api_server

    check_upstream()
    current = openai_api_server.get_gen_params
    if getattr(current, "_fleet_patched", False):
        return

    async def get_gen_params(model_name, worker_addr, messages, **kwargs):
        params = await current(model_name, worker_addr, messages, **kwargs)
        extras = current_extras.get()
        if extras.seed is not None:
            params["seed"] = extras.seed
        if extras.json_schema is not None:
            params["json_schema"] = extras.json_schema
        if extras.logprobs is not None:
            params["logprobs"] = extras.logprobs
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


async def _missing_features(model: str) -> str | None:
    """Why the model's worker cannot answer what the request needs (response_format, logprobs,
    embeddings), or None. Asked of the worker itself: its backend lists what it can do."""
    from fastchat.serve import openai_api_server

    from deploy.fleet_client import AsyncFleetClient

    needs = current_extras.get().needs
    if not needs:
        return None
    client = AsyncFleetClient(openai_api_server.app_settings.controller_address, timeout=3)
    try:
        info = await client.worker_info(await client.worker_address(model))
    except Exception:  # routing failed: FastChat's own path reports it
        return None
    finally:
        await client.aclose()
    missing = sorted(needs - set(info.get("features") or []))
    if not missing:
        return None
    return (f"model '{model}' ({info.get('backend', 'unknown backend')}) does not support "
            + "; ".join(f"{FEATURES[m][0]}. Fix: {FEATURES[m][1]}" for m in missing))


FEATURES = {  # what each worker feature is called for a client, and how to get it
    "json": ("response_format (JSON output)", "leave it out, or ask a llama.cpp model"),
    "logprobs": ("logprobs", "leave them out, or ask a llama.cpp model"),
    "embeddings": ("embeddings", "ask a model whose entry in model_paths.toml has embeddings = true "
                                 "(llama.cpp), or a transformers model"),
}


def patch_check_model() -> None:
    """Patch 3. FastChat answers an unknown model with 400 listing every model, and a model whose
    worker is restarting the same way; clients (and OpenAI) expect 404 model_not_found, and 503
    with Retry-After for a model that will be back. A known model whose backend cannot do what
    the request asks gets a 400 that says so, instead of an answer that silently ignores it."""
    from fastchat.serve import openai_api_server

    check_upstream()
    current = openai_api_server.check_model
    if getattr(current, "_fleet_patched", False):
        return

    async def check_model(request):
        if await current(request) is None:
            problem = await _missing_features(request.model)
            if problem:
                raise ClientError(400, problem, param="model", code="unsupported_feature")
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


async def create_chat_completion(request):
    """Patch 4: FastChat's /v1/chat/completions handler, step for step, except that a
    non-streamed answer keeps the worker's token log-probabilities (FastChat's response model
    has no field for them)."""
    import asyncio
    import time

    import shortuuid
    from fastapi.responses import JSONResponse, StreamingResponse
    from fastchat.serve import openai_api_server as upstream

    error = await upstream.check_model(request) or upstream.check_requests(request)
    if error is not None:
        return error
    worker_addr = await upstream.get_worker_address(request.model)
    gen_params = await upstream.get_gen_params(
        request.model, worker_addr, request.messages, temperature=request.temperature, top_p=request.top_p,
        top_k=request.top_k, presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
        max_tokens=request.max_tokens, echo=False, stop=request.stop)
    max_new_tokens, error = await upstream.check_length(request, gen_params["prompt"], gen_params["max_new_tokens"],
                                                        worker_addr)
    if error is not None:
        return error
    gen_params["max_new_tokens"] = max_new_tokens
    if request.stream:
        return StreamingResponse(upstream.chat_completion_stream_generator(request.model, gen_params, request.n,
                                                                           worker_addr),
                                 media_type="text/event-stream")
    # a worker that goes away raises here; the gate answers that with a 503 and Retry-After
    answers = await asyncio.gather(*(upstream.generate_completion(gen_params, worker_addr) for _ in range(request.n)))
    choices, usage = [], _Usage()
    for i, content in enumerate(answers):
        if content["error_code"] != 0:
            return upstream.create_error_response(content["error_code"], content["text"])
        choice = {"index": i, "message": {"role": "assistant", "content": content["text"]},
                  "finish_reason": content.get("finish_reason") or "stop"}
        if current_extras.get().chat_logprobs:
            choice["logprobs"] = content.get("chat_logprobs") or {"content": []}
        choices.append(choice)
        usage.add(content)
    return JSONResponse({"id": f"chatcmpl-{shortuuid.random()}", "object": "chat.completion",
                         "created": int(time.time()), "model": request.model, "choices": choices,
                         "usage": usage.model().model_dump()})


def _route(app, path: str):
    from fastapi.routing import APIRoute

    return next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == path and "POST" in r.methods)


def patch_chat_route() -> None:
    from fastapi import Depends
    from fastchat.protocol.openai_api_protocol import ChatCompletionRequest
    from fastchat.serve import openai_api_server

    check_upstream()
    app = openai_api_server.app
    old = _route(app, CHAT_PATH)
    if getattr(old.endpoint, "_fleet_patched", False):
        return
    app.router.routes.remove(old)

    async def endpoint(request):
        return await create_chat_completion(request)

    endpoint.__annotations__["request"] = ChatCompletionRequest  # the body model (this module defers annotations)

    endpoint._fleet_patched = True
    endpoint._fleet_original = old.endpoint
    app.post(CHAT_PATH, dependencies=[Depends(openai_api_server.check_api_key)])(endpoint)


CHAT_PATH = "/v1/chat/completions"


def patch_client_errors() -> None:
    """Patch 5: a ClientError raised inside FastChat's handlers (by patch 3) is the client's 4xx,
    in OpenAI's error shape, not Starlette's 500."""
    from fastapi.responses import Response
    from fastchat.serve import openai_api_server

    async def client_error(request, exc: ClientError):
        return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type="application/json")

    openai_api_server.app.add_exception_handler(ClientError, client_error)


def patch_api_server() -> None:
    """Everything the API server process needs."""
    patch_openai_streaming()
    patch_gen_params()
    patch_check_model()
    patch_chat_route()
    patch_client_errors()
