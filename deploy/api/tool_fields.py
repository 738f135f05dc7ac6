"""Tool fields every API's request model shares (chat, Responses, Anthropic Messages): a tool's
name, its arguments' schema (checked as JSON schema, and refused where it uses a keyword the
engine's grammar cannot hold a model to), the checks across a request's tools, and tool results
named after the calls they answer. Problems raise pydantic errors: a 400 naming the field."""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from deploy.api.tool_format import Choice, Tool, ToolUse
from deploy.wire.fields import Text

MAX_TOOLS = 128  # as OpenAI
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _tool_name(v: Any) -> Any:
    if not isinstance(v, str) or not _TOOL_NAME.fullmatch(v):
        raise PydanticCustomError("tool_name", "must be 1 to 64 letters, digits, '_' or '-' (a tool's name)")
    return v


# JSON schema keywords that constrain, but that the engine's grammar (llama.cpp's
# json-schema-to-grammar) cannot hold a model to: a call could break them.
UNENFORCEABLE = {"multipleOf", "uniqueItems", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
                 "patternProperties", "propertyNames", "minProperties", "maxProperties", "contains", "minContains",
                 "maxContains", "unevaluatedProperties", "unevaluatedItems"}


def _unenforceable(schema: Any) -> str | None:
    """The first keyword of UNENFORCEABLE in `schema` (property names are names, not keywords)."""
    if not isinstance(schema, dict):
        return None
    found = next((k for k in schema if k in UNENFORCEABLE), None)
    subs = [*(schema.get("properties") or {}).values(), *(schema.get("$defs") or {}).values(),
            *(schema.get("definitions") or {}).values(), schema.get("items"), schema.get("additionalProperties"),
            *[s for k in ("anyOf", "oneOf", "allOf", "prefixItems") for s in schema.get(k) or ()]]
    return found or next((k for k in map(_unenforceable, subs) if k), None)


def _arguments_schema(v: Any) -> Any:
    """A tool's arguments: a JSON schema of an object (none given: no arguments) whose every
    constraint the engine's grammar can enforce."""
    import jsonschema

    if v is None:
        return {"type": "object", "properties": {}}
    if not isinstance(v, dict):
        raise PydanticCustomError("tool_schema", "must be a JSON schema object")
    try:
        jsonschema.validators.validator_for(v).check_schema(v)
    except jsonschema.SchemaError as e:
        raise PydanticCustomError("tool_schema", "is not a valid JSON schema: {why}", {"why": e.message}) from None
    if v.get("type", "object") != "object":
        raise PydanticCustomError("tool_schema", "must describe an object (\"type\": \"object\"): a tool's "
                                                 "arguments are named")
    keyword = _unenforceable(v)
    if keyword:
        raise PydanticCustomError("tool_schema", "uses '{k}', which the grammar that holds the model to the schema "
                                                 "cannot enforce. Fix: leave it out and check that yourself",
                                  {"k": keyword})
    return v


ToolName = Annotated[str, BeforeValidator(_tool_name)]
CallId = Annotated[Text, Field(min_length=1, max_length=256)]  # a tool call's id, as the client got it
ArgumentsSchema = Annotated[dict, BeforeValidator(_arguments_schema)]
Description = Annotated[Text, Field(max_length=1 << 16)]


def tool_use(tools: list[Tool], choice: Choice, parallel: bool | None) -> ToolUse:
    """The request's tools, checked: names unique, a named choice among them."""
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise PydanticCustomError("tools", "name the same tool twice; each tool needs its own name")
    if choice not in ("auto", "none", "required") and choice not in names:
        raise PydanticCustomError("tool_choice", "names '{name}', which is none of the tools ({names})",
                                  {"name": choice, "names": ", ".join(names)})
    return ToolUse(tools, choice, True if parallel is None else parallel)


def named_results(messages: list[dict]) -> list[dict]:
    """Tool results ({"role": "tool", "call_id": ...}) with the name of the call each answers."""
    calls = {c.id: c.name for m in messages for c in m.get("tool_calls") or ()}
    for m in messages:
        if m["role"] == "tool":
            if m["call_id"] not in calls:
                raise PydanticCustomError("tool_call_id", "a tool result answers '{id}', which no earlier tool call "
                                                          "has as its id", {"id": m["call_id"]})
            m["name"] = calls[m["call_id"]]
    return messages
