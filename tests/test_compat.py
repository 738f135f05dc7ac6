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
from deploy.api.gate import current_extras
from deploy.api.validate import Extras


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


def run_generator(monkeypatch, frames, extras=None):
    """Drive our chat stream generator with worker frames (what generate_completion_stream yields),
    for a request whose gate-checked extras are `extras`."""
    from fastchat.serve import openai_api_server

    async def fake_stream(params, addr):
        for f in frames:
            if isinstance(f, Exception):
                raise f
            yield f

    monkeypatch.setattr(openai_api_server, "generate_completion_stream", fake_stream)

    async def collect():
        token = current_extras.set(extras or Extras())
        try:
            return [e async for e in fastchat_compat.chat_completion_stream_generator("m", {}, 1, "http://w")]
        finally:
            current_extras.reset(token)

    return asyncio.run(collect())


USAGE = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
FRAMES = [{"text": "北", "error_code": 0, "usage": USAGE},
          {"text": "北京", "error_code": 0, "usage": USAGE, "finish_reason": "stop"}]


def test_stream_is_raw_utf8_and_sends_usage_only_when_asked(monkeypatch):
    events = run_generator(monkeypatch, FRAMES)
    assert events[-1] == "data: [DONE]\n\n"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert "北" in events[1] and "\\u" not in "".join(events)
    assert [p["choices"][0]["delta"].get("content") for p in payloads] == [None, "北", "京", None]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in p for p in payloads)  # OpenAI: only with stream_options.include_usage

    payloads = [json.loads(e[6:]) for e in run_generator(monkeypatch, FRAMES, Extras(include_usage=True))[:-1]]
    assert not any("usage" in p for p in payloads[:-1])
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"] == USAGE


def test_stream_passes_each_token_logprob_once(monkeypatch):
    tok = [{"token": t, "logprob": -0.5, "top_logprobs": []} for t in ("北", "京")]
    frames = [{"text": "北", "error_code": 0, "chat_logprobs": {"content": tok[:1]}},
              {"text": "北京", "error_code": 0, "chat_logprobs": {"content": tok}, "finish_reason": "stop"}]
    payloads = [json.loads(e[6:]) for e in run_generator(monkeypatch, frames)[:-1]]
    sent = [t["token"] for p in payloads for t in (p["choices"][0].get("logprobs") or {}).get("content", [])]
    assert sent == ["北", "京"]


def test_worker_errors_become_openai_error_events(monkeypatch):
    events = run_generator(monkeypatch, [{"text": "北", "error_code": 0}, ConnectionError("worker gone")])
    err = json.loads(events[-2][6:])["error"]
    assert "failed mid-answer" in err["message"] and "worker gone" in err["message"]
    assert err["type"] == "worker_unavailable"  # a client may ask again once the worker is back
    events = run_generator(monkeypatch, [{"text": "llama.cpp engine error: boom", "error_code": 50001}])
    err = json.loads(events[-2][6:])["error"]
    assert err["message"] == "llama.cpp engine error: boom" and err["type"] == "worker_error"


def test_patch_is_applied_once(monkeypatch):
    from fastchat.serve import openai_api_server

    for name in ("chat_completion_stream_generator", "generate_completion_stream_generator"):
        monkeypatch.setattr(openai_api_server, name, getattr(openai_api_server, name))  # restored afterwards
    fastchat_compat.patch_openai_streaming()
    fastchat_compat.patch_openai_streaming()
    assert openai_api_server.chat_completion_stream_generator is fastchat_compat.chat_completion_stream_generator
    fastchat_compat.check_upstream()  # still checks the original it replaced


def test_extras_reach_the_worker_params(monkeypatch):
    """What the gate kept from the request (seed, JSON schema, logprobs) is added by the patched
    get_gen_params to what is sent to the worker; FastChat is restored afterwards."""
    from fastapi.encoders import jsonable_encoder
    from fastchat.conversation import get_conv_template
    from fastchat.serve import openai_api_server as upstream

    from deploy.registry import templates  # noqa: F401  (registers qwen2.5)

    monkeypatch.setattr(upstream, "get_gen_params", upstream.get_gen_params)  # restored after the test
    fastchat_compat.patch_gen_params()
    fastchat_compat.patch_gen_params()  # once only
    assert not getattr(upstream.get_gen_params._fleet_original, "_fleet_patched", False)

    async def get_conv(model_name, worker_addr):  # what a qwen2.5 worker's route sends
        return jsonable_encoder(get_conv_template("qwen2.5"))

    monkeypatch.setattr(upstream, "get_conv", get_conv)

    async def params(extras):
        token = current_extras.set(extras)
        try:
            return await upstream.get_gen_params(
                "m", "http://w", [{"role": "user", "content": "你好"}], temperature=0.0, top_p=1.0, top_k=-1,
                presence_penalty=0.0, frequency_penalty=0.0, max_tokens=8, echo=False, stop=None)
        finally:
            current_extras.reset(token)

    p = asyncio.run(params(Extras(seed=7, json_schema={"type": "object"}, logprobs=2)))
    assert p["seed"] == 7 and p["json_schema"] == {"type": "object"} and p["logprobs"] == 2 and "你好" in p["prompt"]
    p = asyncio.run(params(Extras()))
    assert "seed" not in p and "json_schema" not in p and p["logprobs"] is None
