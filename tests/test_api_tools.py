"""Tool calling with the real clients, on real models: the official `openai` client's two-step
loop (a call, the tool's result, the final answer) on chat completions and the Responses API,
streamed and not; the `anthropic` client's tool use; LangChain's bind_tools; tool_choice held by
the engine's grammar; and the 400 that names the models with tools on a model without them."""
import json

import anthropic
import jsonschema
import pytest

from conftest import QWEN_HF, SMALL, Stack, entry

pytestmark = pytest.mark.slow

CODER = "qwen2.5-coder-1.5b-instruct"  # the default model that answers after a tool's result
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
           "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers",
                                           "parameters": {"type": "object", "properties": {
                                               "a": {"type": "integer"}, "b": {"type": "integer"}},
                                               "required": ["a", "b"]}}}]
QUESTION = "What's the weather in Paris?"
RESULT = json.dumps({"temperature": 22, "sky": "sunny"})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    models = [entry(CODER), entry(SMALL), entry(QWEN_HF)]
    s = Stack(tmp_path_factory.mktemp("tools"), models)
    try:
        s.start_fleet()
        s.wait_registered([CODER, SMALL, QWEN_HF])
        yield s
    finally:
        s.stop()


@pytest.fixture
def oai(fleet):
    return fleet.openai()


def assert_weather_call(name: str, arguments: dict) -> None:
    assert name == "get_weather" and arguments["city"] == "Paris"
    jsonschema.validate(arguments, WEATHER)


def test_the_openai_two_step_loop(oai):
    messages = [{"role": "user", "content": QUESTION}]
    first = oai.chat.completions.create(model=CODER, messages=messages, tools=TOOLS, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert_weather_call(call.function.name, json.loads(call.function.arguments))
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    final = oai.chat.completions.create(model=CODER, messages=messages, tools=TOOLS, temperature=0)
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    assert "22" in final.choices[0].message.content


def test_a_streamed_call_and_a_streamed_answer(oai):
    chunks = list(oai.chat.completions.create(model=CODER, messages=[{"role": "user", "content": QUESTION}],
                                              tools=TOOLS, temperature=0, stream=True))
    calls = [c for ch in chunks for c in ch.choices[0].delta.tool_calls or ()]
    assert [ch.choices[0].finish_reason for ch in chunks][-1] == "tool_calls" and len(calls) == 1
    assert calls[0].index == 0 and calls[0].id
    assert_weather_call(calls[0].function.name, json.loads(calls[0].function.arguments))
    # tool_choice "none": the answer streams as text, as it grows (not one chunk at the end)
    ask = dict(model=CODER, messages=[{"role": "user", "content": "Write a haiku about the sea."}], tools=TOOLS,
               tool_choice="none", temperature=0, max_tokens=60, seed=1)  # seed: repeatable
    deltas = [ch.choices[0].delta.content for ch in oai.chat.completions.create(**ask, stream=True)
              if ch.choices[0].delta.content]
    whole = oai.chat.completions.create(**ask).choices[0].message.content
    assert len(deltas) > 3 and "".join(deltas) == whole and not whole.lstrip().startswith("{")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_tool_choice_is_held_by_the_grammar(oai, choice):
    """A 135M model asked for a haiku still calls: a tool (required) or the named one, with
    arguments that match the tool's schema, because the engine's grammar allows nothing else."""
    r = oai.chat.completions.create(model=SMALL, messages=[{"role": "user", "content": "Write a haiku about the sea."}],
                                    tools=TOOLS, tool_choice=choice, parallel_tool_calls=False, temperature=0)
    assert r.choices[0].finish_reason == "tool_calls"
    [call] = r.choices[0].message.tool_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    if isinstance(choice, dict):
        assert call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_the_responses_api_calls_tools(oai):
    tools = [{"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
              "parameters": WEATHER}]
    first = oai.responses.create(model=CODER, input=QUESTION, tools=tools, temperature=0)
    [call] = [o for o in first.output if o.type == "function_call"]
    assert_weather_call(call.name, json.loads(call.arguments))
    events = list(oai.responses.create(model=CODER, input=QUESTION, tools=tools, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.done" in kinds and "response.output_text.delta" not in kinds
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in done] == ["function_call"] and done[0].arguments == call.arguments
    final = oai.responses.create(model=CODER, tools=tools, temperature=0, input=[
        {"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": RESULT}])
    assert "22" in final.output_text and not [o for o in final.output if o.type == "function_call"]


def test_the_anthropic_client_uses_tools(fleet):
    claude = anthropic.Anthropic(base_url=fleet.api_base[: -len("/v1")], api_key="unused", max_retries=0)
    tools = [{"name": "get_weather", "description": "Get the current weather in a city", "input_schema": WEATHER}]
    ask = dict(model=CODER, max_tokens=100, tools=tools, extra_body={"temperature": 0})
    msg = claude.messages.create(messages=[{"role": "user", "content": QUESTION}], **ask)
    assert msg.stop_reason == "tool_use"
    [use] = [b for b in msg.content if b.type == "tool_use"]
    assert_weather_call(use.name, use.input)
    with claude.messages.stream(messages=[{"role": "user", "content": QUESTION}], **ask) as stream:
        kinds = [e.type for e in stream]
        streamed = stream.get_final_message()
    assert "input_json" in kinds and streamed.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in streamed.content if b.type == "tool_use"] == [(use.name, use.input)]
    final = claude.messages.create(messages=[
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": msg.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": RESULT}]}], **ask)
    assert final.stop_reason == "end_turn" and "22" in final.content[0].text


def test_langchain_bind_tools(fleet):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return RESULT

    llm = ChatOpenAI(model=CODER, base_url=fleet.api_base, api_key="unused", temperature=0, max_retries=0)
    msg = llm.bind_tools([get_weather]).invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_a_model_without_tools_names_those_with_them(oai):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as e:
        oai.chat.completions.create(model=QWEN_HF, messages=[{"role": "user", "content": QUESTION}], tools=TOOLS)
    assert f"model '{QWEN_HF}' does not support tool calling" in str(e.value)
    assert CODER in str(e.value) and SMALL in str(e.value)
