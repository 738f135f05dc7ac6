"""Where we depart from FastChat, and why: its code we bypass is watched (deploy/fastchat_compat.py),
its stream generators still fail under pydantic 2 (so our routers replace them), and ours keep
FastChat's events while adding what clients need (deploy/api/streaming.py)."""
import asyncio
import json
import threading

import pytest
from fastchat.protocol.openai_api_protocol import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)

from deploy import fastchat_compat
from deploy.api.protocol import ChatCompletionRequest
from deploy.api.chat import chat_stream
from deploy.api.streaming import Notes
from deploy.wire.generation import chat_params, conversation_from_messages


def test_upstream_is_what_the_compat_module_was_written_against():
    fastchat_compat.check_upstream()


def test_check_upstream_detects_a_change(monkeypatch):
    from fastchat.serve.controller import Controller

    def rewritten(self, dispatch_method):  # an upstream whose __init__ changed
        self.worker_info = {}

    monkeypatch.setattr(Controller, "__init__", rewritten)
    with pytest.raises(fastchat_compat.UpstreamChanged, match="Controller.__init__ changed"):
        fastchat_compat.check_upstream()
    with pytest.raises(fastchat_compat.UpstreamChanged):
        fastchat_compat.init_controller(object.__new__(Controller))  # the bypass refuses to run on it


def test_our_controller_starts_no_thread_and_routes_like_fastchat():
    from fastchat.serve.controller import DispatchMethod

    from deploy.control.controller import FleetController

    before = threading.active_count()
    c = FleetController()
    assert threading.active_count() == before  # FastChat's __init__ starts a heart-beat thread
    assert c.worker_info == {} and c.dispatch_method == DispatchMethod.SHORTEST_QUEUE


def test_upstream_stream_chunks_still_fail_under_pydantic2():
    """If this starts passing, FastChat fixed its streaming and its chat route could serve again."""
    chunk = ChatCompletionStreamResponse(model="m", choices=[ChatCompletionResponseStreamChoice(
        index=0, delta=DeltaMessage(content="北京"), finish_reason=None)])
    with pytest.raises(TypeError, match="dumps_kwargs"):
        chunk.json(exclude_unset=True, ensure_ascii=False)


def run_stream(frames, include_usage=False, n=1):
    """Our chat stream over worker frames (an Exception in them: the worker went away there)."""
    async def worker_frames():
        for f in frames:
            if isinstance(f, Exception):
                raise f
            yield f

    async def collect():
        notes = Notes()
        events = [e async for e in chat_stream([worker_frames] * n, "m", notes, include_usage)]
        return events, notes

    return asyncio.run(collect())


USAGE = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
FRAMES = [{"text": "北", "error_code": 0, "usage": USAGE},
          {"text": "北京", "error_code": 0, "usage": USAGE, "finish_reason": "stop"}]


def test_stream_is_raw_utf8_and_sends_usage_only_when_asked():
    events, notes = run_stream(FRAMES)
    assert events[-1] == "data: [DONE]\n\n" and notes.completion_tokens == 2
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert "北" in events[1] and "\\u" not in "".join(events)
    assert [p["choices"][0]["delta"].get("content") for p in payloads] == [None, "北", "京", None]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in p for p in payloads)  # OpenAI: only with stream_options.include_usage

    payloads = [json.loads(e[6:]) for e in run_stream(FRAMES, include_usage=True)[0][:-1]]
    assert not any("usage" in p for p in payloads[:-1])
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"] == USAGE


def test_stream_passes_each_token_logprob_once():
    tok = [{"token": t, "logprob": -0.5, "top_logprobs": []} for t in ("北", "京")]
    frames = [{"text": "北", "error_code": 0, "chat_logprobs": {"content": tok[:1]}},
              {"text": "北京", "error_code": 0, "chat_logprobs": {"content": tok}, "finish_reason": "stop"}]
    payloads = [json.loads(e[6:]) for e in run_stream(frames)[0][:-1]]
    sent = [t["token"] for p in payloads for t in (p["choices"][0].get("logprobs") or {}).get("content", [])]
    assert sent == ["北", "京"]


def test_worker_errors_become_openai_error_events():
    events, _ = run_stream([{"text": "北", "error_code": 0}, ConnectionError("worker gone")])
    err = json.loads(events[-2][6:])["error"]
    assert "failed mid-answer" in err["message"] and "worker gone" in err["message"]
    assert err["type"] == "worker_unavailable"  # a client may ask again once the worker is back
    events, _ = run_stream([{"text": "llama.cpp engine error: boom", "error_code": 50001}])
    err = json.loads(events[-2][6:])["error"]
    assert err["message"] == "llama.cpp engine error: boom" and err["type"] == "worker_error"


def test_n_choices_stream_one_after_another_each_with_its_index():
    events, notes = run_stream(FRAMES, n=2)
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert [p["choices"][0]["index"] for p in payloads if p["choices"][0].get("finish_reason")] == [0, 1]
    assert notes.completion_tokens == 4


def test_what_a_request_asks_reaches_the_worker_params():
    """The seed, response_format's schema and logprobs a request carries are in what the worker
    gets; a request without them sends none."""
    from fastapi.encoders import jsonable_encoder
    from fastchat.conversation import get_conv_template

    from deploy.registry import templates  # noqa: F401  (registers qwen2.5)

    conv_dict = jsonable_encoder(get_conv_template("qwen2.5"))  # what a qwen2.5 worker's route sends

    def params(**extra):
        req = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "你好"}],
                                                    **extra})
        return chat_params("m", conversation_from_messages(conv_dict, req.ask().messages()), req.sampling())

    p = params(seed=7, response_format={"type": "json_object"}, logprobs=True, top_logprobs=2)
    assert p["seed"] == 7 and p["json_schema"] == {"type": "object"} and p["logprobs"] == 2 and "你好" in p["prompt"]
    p = params()
    assert "seed" not in p and "json_schema" not in p and p["logprobs"] is None


class DyingWorkers:
    """Where an API's stream reads its worker's frames (Workers.stream): these frames, an Exception
    among them being the worker gone at that point."""
    def __init__(self, frames):
        self.frames = frames

    async def stream(self, addr, params):
        for f in self.frames:
            if isinstance(f, Exception):
                raise f
            yield f


def api_events(module, body: dict, frames) -> list[tuple[str, dict]]:
    """(event name, data) of /v1/messages' or /v1/responses' stream (module: deploy.api.messages
    or deploy.api.responses) over these worker frames."""
    request = (module.MessagesRequest if hasattr(module, "MessagesRequest") else module.ResponsesRequest)
    parsed = request.model_validate(body)

    async def collect():
        shape = module.Shaper(parsed, 0) if hasattr(module, "MessagesRequest") else module.Shaper(parsed)
        return [e async for e in module._events(shape, DyingWorkers(frames).stream("addr", {}), Notes())]

    out = []
    for e in asyncio.run(collect()):
        name, data = e.split("\n", 2)[:2]
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
MESSAGES = {"model": "m", "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "m", "stream": True, "input": "hi"}
TOOLS = {"messages": {"tools": [{"name": "weather", "description": "The weather in a city",
                                 "input_schema": CITY}], "tool_choice": {"type": "any"}},
         "responses": {"tools": [{"type": "function", "name": "weather", "parameters": CITY}],
                       "tool_choice": "required"}}


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_a_worker_failing_mid_answer_ends_each_apis_stream_with_its_own_error_event(api):
    import importlib

    module = importlib.import_module(f"deploy.api.{api}")
    body = MESSAGES if api == "messages" else RESPONSES
    gone = api_events(module, body, [{"text": "北", "error_code": 0}, ConnectionError("worker gone")])
    engine = api_events(module, body, [{"text": "llama.cpp engine error: boom", "error_code": 50001}])
    # a tool call the answer could not make: a call of no given tool
    bad_call = api_events(module, {**body, **TOOLS[api]},
                          [{"text": '{"tool_calls": [{"name": "nothing", "arguments": {}}]}', "error_code": 0,
                            "finish_reason": "stop"}])
    for events, said in ((gone, "worker gone"), (engine, "boom"), (bad_call, "nothing")):
        name, data = events[-1]
        assert name == "error" and data["type"] == "error", events[-1]
        if api == "messages":  # Anthropic's error event
            assert data["error"]["type"] == "api_error" and said in data["error"]["message"], data
        else:  # the Responses API's
            assert said in data["message"] and data["code"] == (
                "tool_call_invalid" if said == "nothing" else "worker_error"), data
        assert [n for n, _ in events].count("error") == 1
    if api == "messages":
        assert ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "北"}}) in gone


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_an_answer_is_one_text_block_even_empty_and_calls_alone_are_none(api):
    import importlib

    module = importlib.import_module(f"deploy.api.{api}")
    body = MESSAGES if api == "messages" else RESPONSES
    opens = "content_block_start" if api == "messages" else "response.output_item.added"
    empty = api_events(module, body, [{"text": "", "error_code": 0, "finish_reason": "stop"}])
    call = '{"tool_calls": [{"name": "weather", "arguments": {"city": "北京"}}]}'
    calls = api_events(module, {**body, **TOOLS[api]}, [{"text": call, "error_code": 0, "finish_reason": "stop"}])
    kinds = lambda events: [d.get("content_block", d.get("item", {})).get("type") for n, d in events if n == opens]  # noqa: E731
    text = api_events(module, body, FRAMES)  # 北, then 京: one block
    assert kinds(empty) == kinds(text) == (["text"] if api == "messages" else ["message"])
    assert kinds(calls) == (["tool_use"] if api == "messages" else ["function_call"])
