"""Tool calling's generic format without a model: the answer schema each tool_choice allows, the
conversation written in the model's own template (the plain-chat prompt unchanged), the answer
read as it streams, and every malformed tool request refused with a 400 that names the problem,
on chat, Responses and Anthropic Messages (tests/test_api_tools.py runs the real clients)."""
import asyncio
import json

import jsonschema
import pytest
from fastapi.encoders import jsonable_encoder
from starlette.testclient import TestClient

from deploy.api.app import ApiSettings, build_app
from deploy.api.gate import GateSettings
from deploy.api.protocol import ChatCompletionRequest
from deploy.api.tool_format import BadToolCall, Tool, ToolCall, ToolUse, answer_parts, partial_response
from deploy.registry.templates import known_templates
from deploy.wire.generation import Sampling, chat_params, conversation_from_messages
from fastchat.conversation import get_conv_template

NOWHERE = "http://127.0.0.1:9"
WEATHER = Tool("get_weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}},
                                                    "required": ["city"]})
ADD = Tool("add", "Add", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                          "required": ["a", "b"]})
PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}
SUM = {"name": "add", "arguments": {"a": 1, "b": 2}}


def allowed(use: ToolUse, answer) -> bool:
    try:
        jsonschema.validate(answer, use.schema())
        return True
    except jsonschema.ValidationError:
        return False


# ---- what each tool_choice lets the grammar produce ----------------------------------------------

def test_auto_allows_an_answer_or_calls_of_the_given_tools_only():
    use = ToolUse([WEATHER, ADD])
    assert allowed(use, {"response": "hi"}) and allowed(use, {"tool_calls": [PARIS, SUM]})
    assert not allowed(use, {"tool_calls": [{"name": "rm_rf", "arguments": {}}]})
    assert not allowed(use, {"tool_calls": []}) and not allowed(use, {"response": "hi", "tool_calls": [PARIS]})
    assert not allowed(use, {"tool_calls": [{"name": "add", "arguments": {"a": 1}}]})  # b is required
    assert not allowed(use, {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": "2"}}]})


def test_arguments_are_the_declared_ones_unless_the_schema_allows_more():
    use = ToolUse([ADD])
    assert not allowed(use, {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2, "c": 3}}]})
    open_ = Tool("add", "", {**ADD.parameters, "additionalProperties": True})
    assert allowed(ToolUse([open_]), {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2, "c": 3}}]})


@pytest.mark.parametrize("choice, answer, ok", [
    ("required", {"response": "hi"}, False), ("required", {"tool_calls": [SUM]}, True),
    ("add", {"tool_calls": [PARIS]}, False), ("add", {"tool_calls": [SUM]}, True),
    ("none", {"tool_calls": [SUM]}, False), ("none", {"response": "hi"}, True)])
def test_tool_choice(choice, answer, ok):
    assert allowed(ToolUse([WEATHER, ADD], choice), answer) is ok


def test_parallel_calls_only_when_allowed():
    assert not allowed(ToolUse([WEATHER, ADD], parallel=False), {"tool_calls": [PARIS, SUM]})
    assert allowed(ToolUse([WEATHER, ADD], parallel=False), {"tool_calls": [SUM]})


# ---- reading an answer ----------------------------------------------------------------------------

def test_a_whole_answer_is_read_and_checked():
    use = ToolUse([WEATHER, ADD])
    content, calls = use.read(json.dumps({"tool_calls": [PARIS, SUM]}))
    assert content is None and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                          ("add", {"a": 1, "b": 2})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert use.read('{"response": "Bonjour \\"toi\\"\\n"}') == ('Bonjour "toi"\n', [])
    assert use.read('{"response": "cut off by max_tok') == ("cut off by max_tok", [])  # finish_reason: length
    with pytest.raises(BadToolCall, match="do not match its schema"):
        use.read(json.dumps({"tool_calls": [{"name": "add", "arguments": {"a": "one", "b": 2}}]}))
    with pytest.raises(BadToolCall, match="none of the request's tools"):
        use.read(json.dumps({"tool_calls": [{"name": "rm_rf", "arguments": {}}]}))


TRICKY = 'He said "巴黎 😀" \\ and left.\n\tTab\u00e9'


@pytest.mark.parametrize("ascii_only", [False, True])
def test_a_streamed_answer_is_its_text_however_the_chunks_fall(ascii_only):
    """Cut at every character (escapes and surrogate pairs split too), the deltas join to the text."""
    written = json.dumps({"response": TRICKY}, ensure_ascii=ascii_only)
    for size in (1, 2, 3, 7):
        cumulative = [written[:i] for i in range(size, len(written) + size, size)]

        async def deltas():
            previous = ""
            for text in cumulative:
                yield "text", text[len(previous):], {"text": text}  # (kind, delta, frame): split_deltas' parts
                previous = text

        async def run():
            return [(k, d) async for k, d, _ in answer_parts(deltas(), ToolUse([WEATHER]))]

        parts = asyncio.run(run())
        assert {k for k, _ in parts} == {"text"} and "".join(d for _, d in parts) == TRICKY, size
        assert sum(1 for _, d in parts if d) > 5  # it streamed, not one piece at the end


def test_partial_response_stops_before_an_unfinished_escape():
    assert partial_response('{"response": "a\\') == "a"
    assert partial_response('{"response": "a\\u00') == "a"
    assert partial_response('{"response": "a\\ud83d') == "a"
    assert partial_response('{"response": "a\\ud83d\\ude00') == "a😀"
    assert partial_response('{"response": "done" }') == "done"


def test_streamed_calls_come_whole_at_the_end():
    written = json.dumps({"tool_calls": [PARIS]})

    async def deltas():
        for i in range(0, len(written), 4):
            yield "text", written[i:i + 4], {}

    async def run():
        return [(k, d) async for k, d, _ in answer_parts(deltas(), ToolUse([WEATHER]))]

    parts = asyncio.run(run())
    assert all(d == "" for k, d in parts if k == "text")
    [(kind, calls)] = [(k, d) for k, d in parts if k == "calls"]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]


# ---- the conversation, in the model's own template -------------------------------------------------

def template(name: str) -> dict:
    return jsonable_encoder(get_conv_template(name))  # what the worker serves


def prompt(name: str, messages: list[dict]) -> str:
    return chat_params("m", conversation_from_messages(template(name), messages), Sampling())["prompt"]


def test_the_plain_chat_prompt_is_unchanged():
    """No tools: the request's messages and the prompt are what FastChat's template makes of them."""
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}], "tool_choice": "none"})
    assert body.tool_use() is None
    for name in ("qwen2.5", "qwen-7b-chat", "chatglm3"):
        conv = get_conv_template(name)
        conv.set_system_message("Be brief.")
        for role, text in ((0, "Hi"), (1, "Hello"), (0, "Again"), (1, None)):
            conv.append_message(conv.roles[role], text)
        assert prompt(name, body.ask().messages()) == conv.get_prompt()


def test_tools_are_told_in_the_system_prompt_and_results_in_the_templates_own_turn():
    use = ToolUse([WEATHER])
    call = ToolCall("get_weather", {"city": "Paris"}, "call_1")
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "call_id": "call_1", "name": "get_weather", "content": "22 C"}]
    qwen = prompt("qwen2.5", use.conversation(messages, template("qwen2.5")))
    system = get_conv_template("qwen2.5").system_message
    assert qwen.startswith(f"<|im_start|>system\n{system}\n\n# Tools\n") and '"name": "get_weather"' in qwen
    assert ('<|im_start|>assistant\n{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
            '<|im_end|>\n<|im_start|>user\nResult of get_weather: 22 C<|im_end|>\n<|im_start|>assistant\n') in qwen
    glm = prompt("chatglm3", use.conversation([{"role": "system", "content": "Be brief."}] + messages,
                                              template("chatglm3")))
    assert glm.startswith("<|system|>\nBe brief.\n\n# Tools") and glm.endswith(
        "<|observation|>\n22 C<|assistant|>")  # ChatGLM3's own tool-result turn
    assert "qwen2.5" in known_templates()


# ---- malformed tool requests: a 400 that names the problem -----------------------------------------

def fn(name: str, parameters=None) -> dict:
    return {"type": "function", "function": {"name": name, **({"parameters": parameters} if parameters else {})}}


USER = {"role": "user", "content": "hi"}
CALL = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                             "function": {"name": "f", "arguments": "{}"}}]}


def chat(**over) -> dict:
    return {"model": "m", "messages": [USER], **over}


CHAT_BAD = [
    ("tool of another kind", chat(tools=[{"type": "retrieval"}]), "only kind of tool"),
    ("tool without a function", chat(tools=[{"type": "function"}]), "tools[0].function"),
    ("tool name with a space", chat(tools=[fn("get weather")]), "a tool's name"),
    ("tool name too long", chat(tools=[fn("f" * 65)]), "a tool's name"),
    ("parameters not an object", chat(tools=[fn("f", [1])]), "JSON schema object"),
    ("parameters of a string", chat(tools=[fn("f", {"type": "string"})]), "must describe an object"),
    ("parameters not a schema", chat(tools=[fn("f", {"type": "objekt"})]), "not a valid JSON schema"),
    ("a keyword the grammar cannot hold, in a required call", chat(tools=[fn("f", {"type": "object", "properties": {
        "n": {"type": "array", "uniqueItems": True}}})], tool_choice="required"), "'uniqueItems'"),
    ("it, in the one named tool", chat(tools=[fn("f", {"type": "object", "propertyNames": {"pattern": "^a"}})],
                                       tool_choice={"type": "function", "function": {"name": "f"}}), "'propertyNames'"),
    ("two tools of one name", chat(tools=[fn("f"), fn("f")]), "same tool twice"),
    ("too many tools", chat(tools=[fn(f"f{i}") for i in range(129)]), "tools"),
    ("tool_choice of no tool", chat(tools=[fn("f")], tool_choice={"type": "function", "function": {"name": "g"}}),
     "none of the tools"),
    ("tool_choice an unknown word", chat(tools=[fn("f")], tool_choice="sometimes"), "tool_choice"),
    ("tool_choice required without tools", chat(tool_choice="required"), "has no 'tools'"),
    ("a result of no call", chat(tools=[fn("f")], messages=[USER, {"role": "tool", "tool_call_id": "zz",
                                                                   "content": "1"}]), "no earlier tool call"),
    ("a result without its call's id", chat(tools=[fn("f")], messages=[USER, {"role": "tool", "content": "1"}]),
     "tool_call_id"),
    ("arguments not JSON", chat(tools=[fn("f")], messages=[USER, {**CALL, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]), "JSON object"),
    ("arguments an array", chat(tools=[fn("f")], messages=[USER, {**CALL, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]), "JSON object"),
    ("tool calls of a user", chat(tools=[fn("f")], messages=[{**USER, "tool_calls": CALL["tool_calls"]}]),
     "only an assistant message"),
    ("empty tool calls", chat(tools=[fn("f")], messages=[USER, {**CALL, "tool_calls": []}]), "tool_calls"),
    ("a call without an id", chat(tools=[fn("f")], messages=[USER, {**CALL, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]), "id"),
    ("results without tools", chat(messages=[USER, CALL, {"role": "tool", "tool_call_id": "c1", "content": "1"}]),
     "has no 'tools'"),
    ("tools and response_format", chat(tools=[fn("f")], response_format={"type": "json_object"}),
     "cannot go together"),
    ("tools and logprobs", chat(tools=[fn("f")], logprobs=True), "'logprobs' with 'tools'"),
    ("the older functions API", chat(functions=[{"name": "f"}]), "send them as 'tools'"),
    ("a function message", chat(messages=[USER, {"role": "function", "name": "f", "content": "1"}]),
     "older 'functions' API"),
    ("parallel_tool_calls not a boolean", chat(tools=[fn("f")], parallel_tool_calls=[1]), "parallel_tool_calls"),
    ("a description not text", chat(tools=[{"type": "function", "function": {"name": "f", "description": 5}}]),
     "description"),
]

FN = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
RESPONSES_BAD = [
    ("a tool without a type", {"tools": [{"name": "f"}]}, "needs a 'type'"),
    ("a tool without a name", {"tools": [{"type": "function"}]}, "name"),
    ("parameters not a schema", {"tools": [{**FN, "parameters": {"type": 5}}]}, "not a valid JSON schema"),
    ("tool_choice of no tool", {"tools": [FN], "tool_choice": {"type": "function", "name": "g"}}, "none of the tools"),
    ("an output of no call", {"tools": [FN], "input": [USER, {"type": "function_call_output", "call_id": "zz",
                                                               "output": "1"}]}, "no earlier tool call"),
    ("call arguments not JSON", {"tools": [FN], "input": [USER, {"type": "function_call", "call_id": "c", "name": "f",
                                                                  "arguments": "{oops"}]}, "JSON object"),
    ("tool_choice without tools", {"tool_choice": "required"}, "has no 'tools'"),
    ("call items without tools", {"input": [USER, {"type": "function_call", "call_id": "c", "name": "f",
                                                   "arguments": "{}"}]}, "has no 'tools'"),
    ("an unknown item", {"input": [USER, {"type": "local_shell_call", "call_id": "c"}]}, "'local_shell_call' items"),
]

TOOL = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
MESSAGES_BAD = [
    ("a tool without input_schema", {"tools": [{"name": "f"}]}, "input_schema"),
    ("a server tool chosen", {"tools": [TOOL, {"type": "web_search_20250305", "name": "web_search"}],
                              "tool_choice": {"type": "tool", "name": "web_search"}}, "none of the tools"),
    ("tool_choice tool without a name", {"tools": [TOOL], "tool_choice": {"type": "tool"}}, "needs the tool's 'name'"),
    ("tool_choice an unknown kind", {"tools": [TOOL], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ("tool_choice of no tool", {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "g"}}, "none of the tools"),
    ("a result of no call", {"tools": [TOOL], "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "zz", "content": "1"}]}]}, "no earlier tool call"),
    ("tool_use from the user", {"tools": [TOOL], "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}, "tool_use blocks go in assistant"),
    ("tool_result from the assistant", {"tools": [TOOL], "messages": [USER, {"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "1"}]}]}, "tool_use blocks go in assistant"),
    ("tool_use input not an object", {"tools": [TOOL], "messages": [USER, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]}, "input"),
    ("a keyword the grammar cannot hold, in a required call", {"tools": [{**TOOL, "input_schema": {
        "type": "object", "not": {}}}], "tool_choice": {"type": "any"}}, "'not'"),
    ("blocks without tools", {"messages": [USER, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}, "has no 'tools'"),
    ("a role of no model", {"messages": [USER, {"role": "tool", "content": "1"}]}, 'messages.1.role: Unexpected role "tool"'),
]


@pytest.fixture(scope="module")
def api():
    return TestClient(build_app(ApiSettings(NOWHERE, GateSettings())), raise_server_exceptions=False,
                      base_url="http://127.0.0.1")


@pytest.mark.parametrize("what, path, body, phrase", [
    *[(w, "/v1/chat/completions", b, p) for w, b, p in CHAT_BAD],
    *[(w, "/v1/responses", {"model": "m", "input": "hi", **b}, p) for w, b, p in RESPONSES_BAD],
    *[(w, "/v1/messages", {"model": "m", "max_tokens": 8, "messages": [USER], **b}, p) for w, b, p in MESSAGES_BAD]],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None)
def test_malformed_tool_requests_get_a_400_naming_the_problem(api, what, path, body, phrase):
    r = api.post(path, json=body)
    error = r.json()["error"]
    assert r.status_code == 400, (what, r.text)
    assert phrase in error["message"] or phrase == error.get("param"), (what, error)
    assert "cannot reach the controller" not in error["message"]  # refused before any worker was asked
    if path == "/v1/messages":
        assert r.json()["type"] == "error" and error["type"] == "invalid_request_error"  # Anthropic's shape
