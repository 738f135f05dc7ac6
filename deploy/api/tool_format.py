"""Tool calling in one generic format, for every API (chat, Responses, Anthropic Messages).

The model is told its tools in the system message of its own template (the registry's one
template: no second, jinja, copy of it) and answers with one JSON object, either
`{"tool_calls": [{"name": ..., "arguments": {...}}]}` or `{"response": "..."}`. The worker's engine
constrains the answer with a grammar built from `schema()` (the json_schema path response_format
uses), so a call names a given tool and its arguments match that tool's schema; `jsonschema`
checks them once more. This is llama.cpp's old "generic" format: its current parsers read only
the formats a model's jinja template declares, and the default models (Qwen2.5-Coder) write their
calls as fenced JSON that the Hermes parser does not take (docs/api.md, "Tools").

A conversation's earlier calls are written back as the JSON the model wrote; tool results go in
the template's own tool-result role where it has one (ChatGLM3's <|observation|>), else as a user
turn that names the tool.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal

from deploy.registry.templates import TOOL_RESULT_ROLES

Choice = Literal["auto", "none", "required"] | str  # or the one tool's name that must be called


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # a JSON schema of the arguments object


@dataclass
class ToolCall:
    name: str
    arguments: dict
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


INSTRUCTIONS = ("\n\n# Tools\n\nYou can call these tools (each with a JSON schema of its arguments):\n{tools}\n\n"
                "Reply with one JSON object: {{\"tool_calls\": [{{\"name\": <tool name>, \"arguments\": <arguments "
                "object>}}]}} to call tools, or {{\"response\": <your answer>}} to answer the user directly. "
                "Tool results come back to you in the conversation.")


@dataclass
class ToolUse:
    """The tools of one request and how they may be used."""
    tools: list[Tool]
    choice: Choice = "auto"
    parallel: bool = True

    def instructions(self) -> str:
        listed = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                                      ensure_ascii=False) for t in self.tools)
        return INSTRUCTIONS.format(tools=listed)

    def schema(self) -> dict:
        """The answer's JSON schema: the engine's grammar allows exactly this."""
        callable_ = [t for t in self.tools if self.choice in ("auto", "required", t.name)]
        call = {"anyOf": [{"type": "object",
                           "properties": {"name": {"const": t.name}, "arguments": closed(enforced(t.parameters))},
                           "required": ["name", "arguments"], "additionalProperties": False} for t in callable_]}
        calls = {"type": "object", "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1,
                                                                 **({} if self.parallel else {"maxItems": 1})}},
                 "required": ["tool_calls"], "additionalProperties": False}
        response = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"],
                    "additionalProperties": False}
        if self.choice == "none":
            return response
        return {"anyOf": [calls, response]} if self.choice == "auto" else calls

    def conversation(self, messages: list[dict], template: dict) -> list[dict]:
        """`messages` (a system prompt first, if any) as the text turns of the worker's `template`,
        the tools told after the system prompt (the given one, else the template's own)."""
        given = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        system = (template.get("system_message") or "") if given is None else given
        turns = messages[1:] if given is not None else messages
        return [{"role": "system", "content": (system + self.instructions()).lstrip()}] + \
            text_turns(turns, template["name"])

    def by_name(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def read(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(the answer's text, its tool calls) from a whole answer. The grammar allows nothing but the
        format, so an answer that does not parse was cut off (max_tokens): the text it had begun, or,
        for a call cut off, no text and no call (never our format's JSON as the answer)."""
        try:
            answer = json.loads(text)
        except ValueError:
            return partial_response(text) if RESPONSE_START.match(text) else "", []
        if isinstance(answer, dict) and isinstance(answer.get("response"), str):
            return answer["response"], []
        calls = answer.get("tool_calls") if isinstance(answer, dict) else None
        if not isinstance(calls, list) or not calls:
            return text, []
        out = []
        for c in calls:
            tool = self.by_name(c.get("name")) if isinstance(c, dict) else None
            if tool is None or not isinstance(c.get("arguments"), dict):
                raise BadToolCall(f"the model called {c!r}, which is none of the request's tools")
            problem = schema_problem(c["arguments"], enforced(tool.parameters))
            if problem:
                raise BadToolCall(f"the model's arguments for '{tool.name}' do not match its schema: {problem}")
            out.append(ToolCall(tool.name, c["arguments"]))
        return None, out


# JSON schema keywords that constrain, but that the engine's grammar (llama.cpp's
# json-schema-to-grammar) cannot hold a model to: a call could break them. With tool_choice auto
# they reach the model in the prompt and are left out of the grammar (`enforced`).
UNENFORCEABLE = {"multipleOf", "uniqueItems", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
                 "patternProperties", "propertyNames", "minProperties", "maxProperties", "contains", "minContains",
                 "maxContains", "unevaluatedProperties", "unevaluatedItems"}


NAMED_SUBSCHEMAS = ("properties", "$defs", "definitions")  # name -> schema (the names are not keywords)
SUBSCHEMAS = ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems")  # a schema or a list


def _subschemas(schema: dict) -> list:
    out = [sub for k in NAMED_SUBSCHEMAS if isinstance(schema.get(k), dict) for sub in schema[k].values()]
    for k in SUBSCHEMAS:
        v = schema.get(k)
        out += v if isinstance(v, list) else [v]
    return out


def unenforceable(schema) -> str | None:
    """The first keyword of UNENFORCEABLE in `schema`, at any depth."""
    if not isinstance(schema, dict):
        return None
    found = next((k for k in schema if k in UNENFORCEABLE), None)
    return found or next((k for k in map(unenforceable, _subschemas(schema)) if k), None)


def enforced(schema):
    """`schema` without the keywords the grammar cannot enforce (UNENFORCEABLE), at any depth: what
    the grammar holds a call to, and what a call is checked against. The prompt shows it whole."""
    if isinstance(schema, list):
        return [enforced(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k in UNENFORCEABLE:
            continue
        if k in NAMED_SUBSCHEMAS and isinstance(v, dict):
            out[k] = {name: enforced(sub) for name, sub in v.items()}
        else:
            out[k] = enforced(v) if k in SUBSCHEMAS else v
    return out


def closed(parameters: dict) -> dict:
    """A tool's arguments as named by its schema only, unless the schema itself allows others: a
    function takes the arguments it declares (without this a small model adds "c", "d", ... to
    add(a, b) until max_tokens)."""
    return {**parameters, "additionalProperties": parameters.get("additionalProperties", False)}


class BadToolCall(Exception):
    """An answer whose calls the grammar should have ruled out (a schema it could not express)."""


def schema_problem(value, schema: dict) -> str | None:
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        return e.message
    return None


# ---- a conversation with tools, as text turns of the model's template --------------------------

def written_calls(calls: list[ToolCall]) -> str:
    """An earlier assistant turn that called tools, as the model writes one."""
    return json.dumps({"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls]}, ensure_ascii=False)


def text_turns(messages: list[dict], template: str) -> list[dict]:
    """OpenAI-style messages with tool calls ({"role": "assistant", "tool_calls": [ToolCall]}) and
    results ({"role": "tool", "name": ..., "content": ...}) as the text turns of `template`:
    consecutive results are one turn, in the template's tool-result role or as a user turn."""
    role = TOOL_RESULT_ROLES.get(template)
    out: list[dict] = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            out.append({"role": "assistant", "content": written_calls(m["tool_calls"])})
        elif m["role"] == "tool":
            text = m["content"] if role else f"Result of {m['name']}: {m['content']}"
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "tool" if role else "user", "content": text, "tool_results": True})
        else:
            out.append({"role": m["role"], "content": m["content"] or ""})
    return [{k: v for k, v in m.items() if k != "tool_results"} for m in out]


# ---- reading an answer as it streams --------------------------------------------------------------

RESPONSE_START = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_HIGH_SURROGATE = re.compile(r'u[dD][89abAB]')


def partial_response(text: str) -> str:
    """The text of `{"response": "...` as far as it has been written: its JSON string up to the
    closing quote, or up to the last escape sequence that is complete (a surrogate pair whole)."""
    body = text[RESPONSE_START.match(text).end():]
    i = 0
    while i < len(body) and body[i] != '"':
        if body[i] != "\\":
            i += 1
            continue
        size = 2 if body[i + 1:i + 2] != "u" else (12 if _HIGH_SURROGATE.match(body, i + 1) else 6)
        if i + size > len(body):
            break
        i += size
    try:
        return json.loads(f'"{body[:i]}"')
    except ValueError:
        return ""


async def answer_parts(deltas: AsyncIterator[tuple[str, str, dict]], tools: ToolUse | None):
    """("reasoning", new trace, frame) and ("text", new text, frame) as the answer grows (`deltas`:
    (kind, delta, frame), streaming.split_deltas), then, with tools, ("calls", [ToolCall], frame) if
    it called any (BadToolCall for an impossible call)."""
    if tools is None:
        async for part in deltas:
            yield part
        return
    sent, text, frame = "", "", {}
    async for kind, delta, frame in deltas:
        if kind == "reasoning":
            yield kind, delta, frame
            continue
        text += delta
        if RESPONSE_START.match(text):
            now = partial_response(text)
            if len(now) > len(sent):
                yield "text", now[len(sent):], frame
                sent = now
    content, calls = tools.read(text)
    if calls:
        yield "calls", calls, frame
    elif content is not None and len(content) > len(sent) and content.startswith(sent):
        yield "text", content[len(sent):], frame
    elif not sent and content:
        yield "text", content, frame
    else:
        yield "text", "", frame
