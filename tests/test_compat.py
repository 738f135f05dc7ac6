"""The FastChat shims: needed (upstream still fails without them), narrow, and watched."""
import asyncio
import json

import pytest
from fastchat.protocol.openai_api_protocol import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)

from deploy import fastchat_compat


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


def test_patch_is_applied_once():
    from fastchat.serve import openai_api_server

    fastchat_compat.patch_openai_streaming()
    fastchat_compat.patch_openai_streaming()
    assert openai_api_server.chat_completion_stream_generator is fastchat_compat.chat_completion_stream_generator
    fastchat_compat.check_upstream()  # still checks the original it replaced


def test_seed_reaches_the_worker_params():
    from fastchat.serve import openai_api_server

    fastchat_compat.patch_seed_passthrough()
    fastchat_compat.patch_seed_passthrough()  # once only
    seen = {}

    async def app(scope, receive, send):
        seen["body"] = (await receive())["body"]
        seen["seed"] = fastchat_compat._request_seed.get()

    async def go(body):
        msgs = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return msgs.pop(0)

        await fastchat_compat.SeedFromBody(app)({"type": "http", "method": "POST", "path": "/v1/chat/completions"},
                                                receive, None)

    asyncio.run(go(b'{"model": "m", "seed": 7}'))
    assert seen == {"body": b'{"model": "m", "seed": 7}', "seed": 7}
    asyncio.run(go(b"not json"))
    assert seen["seed"] is None and seen["body"] == b"not json"
    assert openai_api_server.get_gen_params._fleet_patched
