"""What each API's thinking controls ask of a thinking model, and what an entry's default (the
fields thinking and reasoning_budget) fills in where a request says nothing: a request's own
word always wins, "high" effort included (no budget, not the entry's)."""
from __future__ import annotations

from deploy.api.messages import MessagesRequest
from deploy.api.protocol import ChatCompletionRequest
from deploy.api.responses import ResponsesRequest

OFF = {"enabled": False, "budget": None}    # thinking = "off"
CAPPED = {"enabled": None, "budget": 12}   # reasoning_budget = 12


def chat(**fields):
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **fields).thinking()


def test_a_request_that_says_nothing_gets_the_entrys_default():
    plain = chat()
    assert (plain.enabled, plain.budget) == (None, None)
    off = plain.defaulted(OFF)
    assert (off.enabled, off.budget, off.kwargs()) == (False, 0, {"enable_thinking": False})
    capped = chat().defaulted(CAPPED)
    assert (capped.enabled, capped.budget, capped.kwargs()) == (None, 12, {})
    assert chat().defaulted(None).budget is None  # a worker without a default (an older one, an upstream)


def test_a_requests_own_word_wins_over_the_default():
    on = chat(chat_template_kwargs={"enable_thinking": True}).defaulted(OFF)
    assert (on.enabled, on.budget) == (True, None)
    high = chat(reasoning_effort="high").defaulted(CAPPED)
    assert (high.enabled, high.budget) == (True, None)
    low = chat(reasoning_effort="low").defaulted(CAPPED)
    assert low.budget == 512
    own = chat(reasoning_budget_tokens=30).defaulted(CAPPED)
    assert own.budget == 30
    unlimited = chat(reasoning_budget_tokens=-1).defaulted(CAPPED)
    assert unlimited.budget is None
    switched_on = chat(chat_template_kwargs={"enable_thinking": True}).defaulted(CAPPED)
    assert switched_on.budget == 12  # on, within the entry's budget


def test_messages_and_responses_controls_too():
    msgs = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert MessagesRequest(**msgs).thinking().defaulted(CAPPED).budget == 12
    enabled = MessagesRequest(**msgs, thinking={"type": "enabled", "budget_tokens": 2048}).thinking()
    assert enabled.defaulted(OFF).enabled is True and enabled.defaulted(CAPPED).budget == 2048
    assert MessagesRequest(**msgs, thinking={"type": "disabled"}).thinking().defaulted(CAPPED).budget == 0
    resp = ResponsesRequest(model="m", input="hi", reasoning={"effort": "medium"}).thinking()
    assert resp.defaulted(OFF).enabled is True and resp.defaulted(CAPPED).budget == 2048
    assert ResponsesRequest(model="m", input="hi").thinking().defaulted(OFF).budget == 0
