"""The three chat APIs as their own clients read them (the official `openai` and `anthropic`
packages), against the real API app and a worker whose answer each test scripts
(tests/scripted_fleet.py): OpenAI's ids and one creation time per response, the first token timed
where it came on every route, Anthropic's usage from the first event, a tool call cut off by
max_tokens, and what today's agent clients send (a system message among the messages, schemas
with keywords no grammar enforces, namespaced and hosted tools, count_tokens)."""
import json
import re

import anthropic
import httpx
import pytest
from openai import OpenAI

from tests.scripted_fleet import ScriptedFleet


@pytest.fixture(scope="module")
def fleet():
    with ScriptedFleet() as f:
        yield f


@pytest.fixture(autouse=True)
def fresh_script(fleet):
    fleet.scripts.clear()


@pytest.fixture(scope="module")
def http(fleet):
    with httpx.Client(base_url=fleet.api_url, timeout=30) as client:
        yield client


@pytest.fixture
def oai(fleet):
    return OpenAI(base_url=fleet.api_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def claude(fleet):
    return anthropic.Anthropic(base_url=fleet.api_url, api_key="unused", max_retries=0)


USER = [{"role": "user", "content": "hi"}]


def test_responses_have_openai_ids_and_one_creation_time(fleet, oai):
    fleet.answer("Hel", "Hello", "Hello!")
    r = oai.responses.create(model="m", input="hi")
    assert r.id.startswith("resp_") and r.output[0].id.startswith("msg_") and r.output[0].id[4:] != r.id[5:]
    assert r.output_text == "Hello!" and r.status == "completed"
    fleet.answer("Hel", "Hello", "Hello!", pause=0.3)  # so that a clock read per event would differ
    events = list(oai.responses.create(model="m", input="hi", stream=True))
    made = {e.response.created_at for e in events if hasattr(e, "response")}
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert len(made) == 1 and len(ids) == 1 and ids.pop().startswith("resp_")
    items = {e.item_id for e in events if hasattr(e, "item_id")} | {e.item.id for e in events if hasattr(e, "item")}
    assert len(items) == 1 and items.pop() == events[-1].response.output[0].id


def _metric(http, name: str, model: str = "m") -> float:
    """A metric's value for the model (0 before its first sample)."""
    found = re.search(rf'^{name}{{model="{model}"}} (\S+)$', http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("route", ["chat", "chat-stream", "responses", "responses-stream", "messages",
                                   "messages-stream", "completions"])
def test_the_first_token_is_timed_where_it_came_on_every_route(fleet, http, oai, claude, route):
    """The first token comes at once, the rest over 1.2 s of the worker's pauses, so time to first
    token is the request's duration less those pauses. Half of them is asked for: on a loaded
    machine the API may read the first frame late, while the worker already waits out its pauses
    (the fault measured the whole duration: 23.05 s of 23.06)."""
    fleet.answer("a", "ab", "abc", "abcd", pause=0.4)
    before = {n: _metric(http, n) for n in ("fleet_time_to_first_token_seconds_sum",
                                            "fleet_request_duration_seconds_sum", "fleet_time_to_first_token_seconds_count")}
    stream = route.endswith("-stream")
    if route.startswith("chat"):
        r = oai.chat.completions.create(model="m", messages=USER, stream=stream)
        list(r) if stream else r
    elif route.startswith("responses"):
        r = oai.responses.create(model="m", input="hi", stream=stream)
        list(r) if stream else r
    elif route.startswith("messages"):
        if stream:
            with claude.messages.stream(model="m", max_tokens=16, messages=USER) as s:
                s.get_final_message()
        else:
            claude.messages.create(model="m", max_tokens=16, messages=USER)
    else:
        oai.completions.create(model="m", prompt="hi", max_tokens=8)
    ttft = _metric(http, "fleet_time_to_first_token_seconds_sum") - before["fleet_time_to_first_token_seconds_sum"]
    took = _metric(http, "fleet_request_duration_seconds_sum") - before["fleet_request_duration_seconds_sum"]
    assert _metric(http, "fleet_time_to_first_token_seconds_count") == before[
        "fleet_time_to_first_token_seconds_count"] + 1
    assert 0 < ttft and ttft + 0.6 <= took, (ttft, took)


def test_a_streamed_message_tells_its_input_tokens_from_the_start(fleet, claude):
    fleet.answer("Hi", "Hi there")
    events = []
    with claude.messages.stream(model="m", max_tokens=16, messages=USER) as s:
        for e in s:
            events.append(e)
        final = s.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens == fleet.prompt_tokens
    assert final.usage.input_tokens == fleet.prompt_tokens and final.usage.output_tokens == 2
    assert claude.messages.create(model="m", max_tokens=16, messages=USER).usage.input_tokens == fleet.prompt_tokens


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CUT = ['{"tool', '{"tool_calls": [{"name": "get_weather", "argu']  # max_tokens stopped it mid-call


def test_a_tool_call_cut_off_by_max_tokens_is_no_text_of_our_format(fleet, oai, claude):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    fleet.answer(*CUT, finish="length")
    r = oai.chat.completions.create(model="m", messages=USER, tools=tools, max_tokens=8)
    assert r.choices[0].finish_reason == "length" and not r.choices[0].message.tool_calls
    assert r.choices[0].message.content == ""
    fleet.answer(*CUT, finish="length")
    chunks = list(oai.chat.completions.create(model="m", messages=USER, tools=tools, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "length"
    fleet.answer(*CUT, finish="length")
    resp = oai.responses.create(model="m", input="hi", max_output_tokens=8,
                                tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER}])
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert "tool_calls" not in resp.output_text
    fleet.answer(*CUT, finish="length")
    m = claude.messages.create(model="m", max_tokens=8, messages=USER,
                               tools=[{"name": "get_weather", "input_schema": WEATHER}])
    assert m.stop_reason == "max_tokens" and all("tool_calls" not in getattr(b, "text", "") for b in m.content)


def test_claude_codes_first_request_shape_is_accepted(fleet, http, caplog):
    """What Claude Code sends first (captured from it): a system message after the user's, system
    blocks with cache_control, thinking, context_management, metadata, schemas using keywords no
    grammar holds (propertyNames) with tool_choice auto, a deferred tool; and ?beta=true. Its web
    search (a server tool) is skipped, and what nothing here reads is named in the log."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
              "properties": {"command": {"type": "string", "maxLength": 100}, "env": {
                  "type": "object", "propertyNames": {"pattern": "^[A-Z_]+$"}}}, "required": ["command"]}
    body = {"model": "m", "max_tokens": 32000, "stream": True, "thinking": {"type": "adaptive", "display": "omitted"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "high"}, "metadata": {"user_id": "{}"},
            "system": [{"type": "text", "text": "You are Claude Code."},
                       {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                                      {"type": "text", "text": "say hi"}]},
                         {"role": "system", "content": [{"type": "text", "text": "Today is Monday.",
                                                         "cache_control": {"type": "ephemeral"}}]}],
            "tools": [{"name": "Bash", "description": "Run a command", "input_schema": schema},
                      {"name": "Placeholder", "description": "", "input_schema": {}, "defer_loading": True},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}
    fleet.answer('{"response": "hi"}')
    with caplog.at_level("WARNING", logger="deploy.api"):
        r = http.post("/v1/messages?beta=true", json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    assert "skipped a 'web_search_20250305' tool" in caplog.text
    assert "ignored in MessagesRequest: 'context_management', 'output_config'" in caplog.text
    assert "ignored in TextIn: 'cache_control'" in caplog.text and "'defer_loading'" in caplog.text
    assert "'metadata'" not in caplog.text and "'max_tokens'" not in caplog.text  # fields it reads are not named
    assert '"text":"hi"' in r.text.replace(" ", "")
    sent = fleet.sent[-1]
    system = sent["prompt"].split("<|im_start|>user")[0]
    assert "You are Claude Code." in system and "Be brief." in system and "Today is Monday." in system
    assert "propertyNames" in sent["prompt"]  # the model reads the whole schema
    assert "propertyNames" not in json.dumps(sent["json_schema"])  # the grammar holds what it can enforce
    # named, the same tool must be enforced: refused with the reason
    r = http.post("/v1/messages", json={**body, "stream": False, "tool_choice": {"type": "tool", "name": "Bash"}})
    assert r.status_code == 400 and "'propertyNames'" in r.json()["error"]["message"]
    r = http.post("/v1/messages/count_tokens", json={k: v for k, v in body.items() if k not in ("max_tokens", "stream")})
    assert r.status_code == 200 and r.json() == {"input_tokens": fleet.prompt_tokens}


def test_codexs_tools_namespaced_flattened_hosted_skipped(fleet, oai, caplog):
    """What Codex CLI sends first (captured from it): developer messages, a namespace of functions,
    a hosted web_search tool, include and store; a call of a namespaced function names its namespace."""
    spawn = {"type": "function", "name": "spawn_agent", "description": "Spawn", "parameters": {
        "type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"], "additionalProperties": False}}
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}},
              "strict": False},
             {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents", "tools": [spawn]},
             {"type": "web_search", "external_web_access": False}]
    fleet.answer('{"tool_calls": [{"name": "spawn_agent", "arguments": {"task": "look"}}]}')
    with caplog.at_level("WARNING", logger="deploy.api"):
        r = oai.responses.create(model="m", tools=tools, store=False, include=["reasoning.encrypted_content"],
                                 reasoning={"summary": "auto"}, parallel_tool_calls=True, tool_choice="auto",
                                 input=[{"type": "message", "role": "developer", "content": [
                                     {"type": "input_text", "text": "You are Codex."}]},
                                        {"type": "message", "role": "user", "content": [
                                            {"type": "input_text", "text": "say hi"}]}])
    call = r.output[0]
    assert call.type == "function_call" and call.name == "spawn_agent" and call.namespace == "multi_agent_v1"
    assert json.loads(call.arguments) == {"task": "look"}
    assert "spawn_agent" in fleet.sent[-1]["prompt"] and "You are Codex." in fleet.sent[-1]["prompt"]
    assert "skipped a 'web_search' tool" in caplog.text
    assert "ignored in ResponsesRequest: 'include', 'store'" in caplog.text


def test_a_silent_stream_is_kept_alive_and_closing_it_stops_the_answer():
    """While the model reads a long prompt, nothing else is sent: the stream carries a keep-alive every
    `every` seconds, and a client that leaves still stops the answer it was waiting for."""
    import asyncio

    from deploy.api.streaming import COMMENT, kept_alive

    stopped = []

    async def slow():
        try:
            await asyncio.sleep(0.35)
            yield "data: first\n\n"
            await asyncio.sleep(10)
            yield "data: never\n\n"
        finally:
            stopped.append(True)

    async def read(n):
        out, gen = [], kept_alive(slow(), COMMENT, 0.1)
        async for e in gen:
            out.append(e)
            if len(out) == n:
                break
        await gen.aclose()
        return out

    got = asyncio.run(read(6))
    assert got.count(COMMENT) >= 5 and "data: first\n\n" in got  # kept alive before it, and after
    assert got.index("data: first\n\n") >= 2 and stopped == [True]
