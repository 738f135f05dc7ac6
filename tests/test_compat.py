"""The FastChat shims: needed (upstream still fails without them), narrow, and watched."""
import asyncio
import json

import pytest
from fastchat.protocol.openai_api_protocol import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)

from deploy.api import fastchat_compat


def test_upstream_is_what_the_patches_were_written_against():
    fastchat_compat.check_upstream()


def test_upstream_stream_chunks_still_fail_under_pydantic2():
    """If this starts passing, upstream fixed its streaming and patch 1 should shrink."""
    chunk = ChatCompletionStreamResponse(model="m", choices=[ChatCompletionResponseStreamChoice(
        index=0, delta=DeltaMessage(content="北京"), finish_reason=None)])
    with pytest.raises(TypeError, match="dumps_kwargs"):
        chunk.json(exclude_unset=True, ensure_ascii=False)


def test_check_upstream_detects_a_change(monkeypatch):
    from fastchat.serve import openai_api_server

    async def rewritten(*a, **k):  # an upstream that changed its generator
        yield "data: {}\n\n"

    monkeypatch.setattr(openai_api_server, "generate_completion_stream_generator", rewritten)
    with pytest.raises(fastchat_compat.UpstreamChanged, match="generate_completion_stream_generator changed"):
        fastchat_compat.check_upstream()


def run_generator(monkeypatch, frames):
    """Drive our chat stream generator with worker frames (what generate_completion_stream yields)."""
    from fastchat.serve import openai_api_server

    async def fake_stream(params, addr):
        for f in frames:
            if isinstance(f, Exception):
                raise f
            yield f

    monkeypatch.setattr(openai_api_server, "generate_completion_stream", fake_stream)

    async def collect():
        return [e async for e in fastchat_compat.chat_completion_stream_generator("m", {}, 1, "http://w")]

    return asyncio.run(collect())


def test_stream_is_raw_utf8_and_carries_usage(monkeypatch):
    usage = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    events = run_generator(monkeypatch, [
        {"text": "北", "error_code": 0, "usage": usage},
        {"text": "北京", "error_code": 0, "usage": usage, "finish_reason": "stop"},
    ])
    assert events[-1] == "data: [DONE]\n\n"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert "北" in events[1] and "\\u" not in "".join(events)
    assert [p["choices"][0]["delta"].get("content") for p in payloads] == [None, "北", "京", None]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop" and payloads[-1]["usage"] == usage


def test_worker_errors_become_openai_error_events(monkeypatch):
    events = run_generator(monkeypatch, [{"text": "北", "error_code": 0}, ConnectionError("worker gone")])
    err = json.loads(events[-2][6:])["error"]
    assert "failed mid-answer" in err["message"] and "worker gone" in err["message"]
    events = run_generator(monkeypatch, [{"text": "llama.cpp engine error: boom", "error_code": 50001}])
    assert json.loads(events[-2][6:])["error"]["message"] == "llama.cpp engine error: boom"


def test_patch_is_applied_once(monkeypatch):
    from fastchat.serve import openai_api_server

    for name in ("chat_completion_stream_generator", "generate_completion_stream_generator"):
        monkeypatch.setattr(openai_api_server, name, getattr(openai_api_server, name))  # restored afterwards
    fastchat_compat.patch_openai_streaming()
    fastchat_compat.patch_openai_streaming()
    assert openai_api_server.chat_completion_stream_generator is fastchat_compat.chat_completion_stream_generator
    fastchat_compat.check_upstream()  # still checks the original it replaced


def test_seed_reaches_the_worker_params(monkeypatch):
    """The middleware reads `seed` from the body (replaying the body untouched) and the patched
    get_gen_params adds it to what is sent to the worker; FastChat is restored afterwards."""
    from fastchat.serve import openai_api_server as upstream

    monkeypatch.setattr(upstream, "get_gen_params", upstream.get_gen_params)  # restored after the test
    monkeypatch.setattr(upstream.app, "user_middleware", list(upstream.app.user_middleware))
    fastchat_compat.patch_seed_passthrough()
    fastchat_compat.patch_seed_passthrough()  # once only
    assert sum(m.cls is fastchat_compat.SeedFromBody for m in upstream.app.user_middleware) == 1

    async def get_conv(model_name, worker_addr):  # what a qwen2.5 worker would send
        from fastchat.conversation import get_conv_template

        from deploy.registry import templates  # noqa: F401

        from fastapi.encoders import jsonable_encoder

        return jsonable_encoder(get_conv_template("qwen2.5"))  # what the worker's route sends

    monkeypatch.setattr(upstream, "get_conv", get_conv)
    seen = {}

    async def app(scope, receive, send):  # stands for the API server's route
        seen["body"] = (await receive())["body"]
        seen["params"] = await upstream.get_gen_params(
            "m", "http://w", [{"role": "user", "content": "你好"}], temperature=0.0, top_p=1.0, top_k=-1,
            presence_penalty=0.0, frequency_penalty=0.0, max_tokens=8, echo=False, stop=None)

    async def go(body):
        msgs = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return msgs.pop(0)

        await fastchat_compat.SeedFromBody(app)({"type": "http", "method": "POST", "path": "/v1/chat/completions"},
                                                receive, None)

    asyncio.run(go(b'{"model": "m", "seed": 7}'))
    assert seen["body"] == b'{"model": "m", "seed": 7}'
    assert seen["params"]["seed"] == 7 and "你好" in seen["params"]["prompt"]
    asyncio.run(go(b"not json"))
    assert seen["body"] == b"not json" and "seed" not in seen["params"]
