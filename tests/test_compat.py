"""The FastChat shims: needed (upstream still fails without them), narrow, and watched."""
import json

import pytest
from fastchat.protocol.openai_api_protocol import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)

from deploy import fastchat_compat


def chunk(cls):
    return cls(id="x", model="m", choices=[ChatCompletionResponseStreamChoice(
        index=0, delta=DeltaMessage(content="北京"), finish_reason=None)])


def test_upstream_is_what_the_patches_assume():
    fastchat_compat.check_upstream()


def test_upstream_stream_chunks_still_fail_under_pydantic2():
    """If this starts passing, upstream fixed it and patch 1 can go."""
    with pytest.raises(TypeError, match="dumps_kwargs"):
        chunk(ChatCompletionStreamResponse).json(exclude_unset=True, ensure_ascii=False)


def test_patched_stream_chunks_are_raw_utf8():
    from fastchat.serve import openai_api_server

    fastchat_compat.patch_openai_streaming()
    fastchat_compat.patch_openai_streaming()  # idempotent
    patched = openai_api_server.ChatCompletionStreamResponse
    assert issubclass(patched, ChatCompletionStreamResponse)
    out = chunk(patched).json(exclude_unset=True, ensure_ascii=False)
    assert "北京" in out and "\\u" not in out
    assert json.loads(out)["choices"][0]["delta"]["content"] == "北京"
    assert "object" not in json.loads(out)  # exclude_unset still honoured
    comp = openai_api_server.CompletionStreamResponse
    assert getattr(comp, "_fleet_patched", False)


def test_check_upstream_detects_a_change(monkeypatch):
    from fastchat.serve import openai_api_server

    async def rewritten(*a, **k):  # an upstream that no longer calls chunk.json(...)
        yield "data: {}\n\n"

    monkeypatch.setattr(openai_api_server, "chat_completion_stream_generator", rewritten)
    with pytest.raises(fastchat_compat.UpstreamChanged):
        fastchat_compat.check_upstream()


def test_webui_template_lookup_replaced():
    from fastchat.serve import gradio_web_server

    original = gradio_web_server.get_conversation_template
    try:
        fastchat_compat.patch_webui_templates("http://127.0.0.1:1")
        assert isinstance(gradio_web_server.get_conversation_template, fastchat_compat.WorkerTemplates)
    finally:
        gradio_web_server.get_conversation_template = original
    # what the web UI did before: an unknown name silently becomes one_shot
    assert original("smollm2-135m-instruct").name == "one_shot"
