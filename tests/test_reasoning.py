"""Thinking models end to end, offline: the default Qwen GGUF with DeepSeek-R1-Distill's published
template (which opens `<think>` in the prompt, so all the model writes is reasoning until
`</think>`) and with Qwen3's, and a tiny Qwen3 folder with R1's template on the transformers
backend, all with chat_template = "auto". A grammar makes the tiny model write a whole trace and
answer where the test needs exact text; budgets are checked in tokens of the model's own tokenizer."""
from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from conftest import DEFAULTS, QWEN, QWEN_HF, Stack, free_port
from tests.thinking_models import QWEN3, R1_DISTILL, trace_grammar, with_template
from tests.tiny_models import tiny_qwen3

pytestmark = pytest.mark.slow
R1, Q3, HF = "r1-distill", "qwen3-template", "tiny-qwen3-r1"
Q3_OFF, R1_CAPPED = "qwen3-thinking-off", "r1-budget-12"  # the same files, with an entry's thinking default
TRACE, ANSWER = "Two and two: count them, four.", "The answer is 4."
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    made = tmp_path_factory.mktemp("thinking")
    src = DEFAULTS[QWEN].resolved_path

    def gguf(name: str, template, **fields) -> dict:
        return {"name": name, "path": str(with_template(src, template, made)), "backend": "llama.cpp",
                "port": free_port(), "cores": [0], "memory_budget": "2GiB", "chat_template": "auto",
                "context_length": 2048, "concurrency": 2, **fields}

    folder = tiny_qwen3(made / "tiny", DEFAULTS[QWEN_HF].resolved_path, chat_template=R1_DISTILL.read_text())
    s = Stack(tmp_path_factory.mktemp("fleet"), [gguf(R1, R1_DISTILL), gguf(Q3, QWEN3),
                                                 gguf(Q3_OFF, QWEN3, thinking="off", concurrency=1),
                                                 gguf(R1_CAPPED, R1_DISTILL, reasoning_budget=12, concurrency=1), {
        "name": HF, "path": str(folder), "backend": "transformers", "port": free_port(), "cores": [1],
        "memory_budget": "2GiB", "chat_template": "auto", "context_length": 2048, "concurrency": 1,
        "dtype": "float32"}])
    try:
        s.start_fleet()
        s.wait_registered([R1, Q3, HF, Q3_OFF, R1_CAPPED], timeout=240)
        yield s
    finally:
        s.stop()


def tokens(fleet, model: str, text: str) -> int:
    """How many tokens `text` is in the model's own tokenizer (the API's /tokenize)."""
    r = httpx.post(fleet.api_base.removesuffix("/v1") + "/tokenize", json={"model": model, "prompt": text,
                                                                                  "add_special_tokens": False}, timeout=60)
    r.raise_for_status()
    return len(r.json()["tokens"])


def test_the_trace_comes_apart_from_the_answer_and_streams_first(fleet):
    client, grammar = fleet.openai(), trace_grammar(TRACE, ANSWER)
    r = client.chat.completions.create(model=R1, messages=QUESTION, max_tokens=64, temperature=0,
                                       extra_body={"grammar": grammar})
    msg = r.choices[0].message
    assert (msg.content, msg.reasoning_content, msg.reasoning) == (ANSWER, TRACE, TRACE)
    assert r.choices[0].finish_reason == "stop"
    kinds, text = [], {"reasoning_content": "", "content": ""}
    for chunk in client.chat.completions.create(model=R1, messages=QUESTION, max_tokens=64, temperature=0, stream=True,
                                                extra_body={"grammar": grammar}):
        for choice in chunk.choices:
            delta = choice.delta.model_dump(exclude_none=True)
            for key in text:
                if delta.get(key):
                    kinds.append(key)
                    text[key] += delta[key]
            if delta.get("reasoning_content"):
                assert delta["reasoning"] == delta["reasoning_content"]  # the newer name, the same text
    assert text == {"reasoning_content": TRACE, "content": ANSWER}
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning_content")


def test_a_trace_cut_off_by_max_tokens_is_reasoning_with_an_empty_answer(fleet):
    client, grammar = fleet.openai(), trace_grammar(TRACE, ANSWER)
    r = client.chat.completions.create(model=R1, messages=QUESTION, max_tokens=5, temperature=0,
                                       extra_body={"grammar": grammar})
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "length" and msg.content == ""
    assert msg.reasoning_content and TRACE.startswith(msg.reasoning_content)
    streamed = [c.choices[0].delta for c in client.chat.completions.create(
        model=R1, messages=QUESTION, max_tokens=5, temperature=0, stream=True, extra_body={"grammar": grammar})
        if c.choices]
    assert not any(d.content for d in streamed)
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in streamed) == msg.reasoning_content


def test_messages_give_a_thinking_block_and_responses_a_reasoning_item(fleet):
    # (this client no longer takes sampling settings; the API still does, as extra body)
    client = anthropic.Anthropic(base_url=fleet.api_base.removesuffix("/v1"), api_key="unused", max_retries=0)
    m = client.messages.create(model=R1, max_tokens=48, messages=QUESTION, extra_body={"temperature": 0},
                               thinking={"type": "enabled", "budget_tokens": 8})
    assert [b.type for b in m.content][:1] == ["thinking"] and m.content[0].thinking and m.content[0].signature
    assert m.content[-1].type == "text"  # the budget closed the trace, and the model answered after it
    with client.messages.stream(model=R1, max_tokens=48, messages=QUESTION, extra_body={"temperature": 0},
                                thinking={"type": "enabled", "budget_tokens": 8}) as stream:
        events = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in stream]
    deltas = [d for t, d in events if t == "content_block_delta"]
    assert "thinking_delta" in deltas and "signature_delta" in deltas
    assert deltas.index("signature_delta") > max(i for i, d in enumerate(deltas) if d == "thinking_delta")
    assert stream.get_final_message().content[0].thinking == m.content[0].thinking

    r = fleet.openai().responses.create(model=R1, input="What is 2+2?", max_output_tokens=48, temperature=0,
                                        reasoning={"effort": "minimal"})
    kinds = [item.type for item in r.output]
    assert kinds[0] == "reasoning" and r.output[0].content[0].type == "reasoning_text"
    assert "message" in kinds and r.output_text == next(i for i in r.output if i.type == "message").content[0].text


def test_a_budget_closes_the_trace_at_its_limit_and_the_model_answers(fleet):
    """R1's template opens the trace: a budget of 12 tokens ends it after 12 (llama.cpp and
    transformers alike), and the answer follows."""
    client = fleet.openai()
    for model in (R1, HF):
        r = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=40, temperature=0,
                                           extra_body={"reasoning_budget_tokens": 12})
        msg = r.choices[0].message
        assert msg.reasoning_content is not None, model
        assert abs(tokens(fleet, model, msg.reasoning_content) - 12) <= 2, (model, msg.reasoning_content)
        assert r.usage.completion_tokens == 40 or msg.content, model  # it answered, or wrote until max_tokens
        unbounded = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=40, temperature=0)
        assert len(unbounded.choices[0].message.reasoning_content) > len(msg.reasoning_content), model


def test_qwen3_template_takes_enable_thinking_and_reasoning_effort(fleet):
    """Qwen3's template writes an empty trace into the prompt when thinking is off: the prompt
    changes by exactly those tokens. reasoning_effort is accepted, and a budget closes a trace the
    model opened itself (asked to, the tiny model writes `<think>`)."""
    client = fleet.openai()
    on = client.chat.completions.create(model=Q3, messages=QUESTION, max_tokens=1, temperature=0)
    off = client.chat.completions.create(model=Q3, messages=QUESTION, max_tokens=1, temperature=0,
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert off.usage.prompt_tokens - on.usage.prompt_tokens == tokens(fleet, Q3, "<think>\n\n</think>\n\n")
    for effort in ("none", "minimal", "low", "medium", "high"):
        r = client.chat.completions.create(model=Q3, messages=QUESTION, max_tokens=2, temperature=0,
                                           reasoning_effort=effort)
        assert r.choices[0].finish_reason in ("length", "stop")
    ask = [{"role": "user", "content": "Begin your reply with the tag <think> and then think step by step about: "
                                       "what is 2+2?"}]
    free = client.chat.completions.create(model=Q3, messages=ask, max_tokens=40, temperature=0)
    bounded = client.chat.completions.create(model=Q3, messages=ask, max_tokens=40, temperature=0,
                                             extra_body={"reasoning_budget_tokens": 3})
    assert tokens(fleet, Q3, free.choices[0].message.reasoning_content) > 4
    assert tokens(fleet, Q3, bounded.choices[0].message.reasoning_content) <= 3
    assert bounded.choices[0].message.content  # made to close its trace, it answered


def test_an_earlier_answer_reaches_the_template_without_its_trace(fleet):
    """R1's template drops an earlier turn's reasoning: handing it back changes nothing in the prompt."""
    client = fleet.openai()
    turns = [*QUESTION, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": "And 3+3?"}]
    plain = client.chat.completions.create(model=R1, messages=turns, max_tokens=1, temperature=0)
    with_trace = [*QUESTION, {"role": "assistant", "content": ANSWER, "reasoning_content": TRACE},
                  {"role": "user", "content": "And 3+3?"}]
    handed = client.chat.completions.create(model=R1, messages=with_trace, max_tokens=1, temperature=0)
    assert handed.usage.prompt_tokens == plain.usage.prompt_tokens


def test_an_entrys_thinking_default_holds_until_a_request_says_otherwise(fleet):
    """thinking = "off" is Qwen3's switch off for a request that says nothing (its prompt is the one
    enable_thinking false gives), and a request's own enable_thinking wins; reasoning_budget = 12
    bounds a trace the request did not bound, and reasoning_effort "high" lifts it."""
    client = fleet.openai()

    def prompt_tokens(model: str, **extra) -> int:
        return client.chat.completions.create(model=model, messages=QUESTION, max_tokens=1, temperature=0,
                                              **extra).usage.prompt_tokens

    off = {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    on = {"extra_body": {"chat_template_kwargs": {"enable_thinking": True}}}
    assert prompt_tokens(Q3_OFF) == prompt_tokens(Q3, **off) != prompt_tokens(Q3)
    assert prompt_tokens(Q3_OFF, **on) == prompt_tokens(Q3)
    capped = client.chat.completions.create(model=R1_CAPPED, messages=QUESTION, max_tokens=40, temperature=0)
    assert abs(tokens(fleet, R1_CAPPED, capped.choices[0].message.reasoning_content) - 12) <= 2
    lifted = client.chat.completions.create(model=R1_CAPPED, messages=QUESTION, max_tokens=40, temperature=0,
                                            reasoning_effort="high")
    assert len(lifted.choices[0].message.reasoning_content) > len(capped.choices[0].message.reasoning_content)


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def test_tools_work_on_an_entry_with_the_models_own_template(fleet):
    """chat_template = "auto" (Qwen3's template, rendered by the engine's jinja) with tools: the
    tools are told in its system turn and the call comes back as OpenAI's tool_calls; the result
    goes back in a user turn and the model answers."""
    client = fleet.openai()
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    plain = client.chat.completions.create(model=Q3, messages=ask, max_tokens=1, temperature=0)
    r = client.chat.completions.create(model=Q3, messages=ask, tools=[WEATHER], tool_choice="required",
                                       max_tokens=128, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    told = r.usage.prompt_tokens - plain.usage.prompt_tokens
    assert told > tokens(fleet, Q3, json.dumps(WEATHER["function"]["parameters"])), told  # the tools are in the prompt
    follow = [*ask, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
              {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    answer = client.chat.completions.create(model=Q3, messages=follow, tools=[WEATHER], tool_choice="none",
                                            max_tokens=16, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content
