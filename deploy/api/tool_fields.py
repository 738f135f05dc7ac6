"""Tool fields every API's request model shares (chat, Responses, Anthropic Messages): a tool's
name, its arguments' schema (checked as JSON schema), the checks across a request's tools (a schema
keyword the engine's grammar cannot hold a model to is refused only where the request asks us to
enforce the schema: a required or named tool), and tool results named after the calls they answer.
Problems raise pydantic errors: a 400 naming the field."""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from deploy.api.tool_format import Choice, Tool, ToolUse, unenforceable
from deploy.wire.fields import Text

MAX_TOOLS = 128  # as OpenAI
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _tool_name(v: Any) -> Any:
    if not isinstance(v, str) or not _TOOL_NAME.fullmatch(v):
        raise PydanticCustomError("tool_name", "must be 1 to 64 letters, digits, '_' or '-' (a tool's name)")
    return v


def _arguments_schema(v: Any) -> Any:
    """A tool's arguments: a JSON schema of an object (none given: no arguments)."""
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
    return v


ToolName = Annotated[str, BeforeValidator(_tool_name)]
CallId = Annotated[Text, Field(min_length=1, max_length=256)]  # a tool call's id, as the client got it
ArgumentsSchema = Annotated[dict, BeforeValidator(_arguments_schema)]
Description = Annotated[Text, Field(max_length=1 << 16)]


def tool_use(tools: list[Tool], choice: Choice, parallel: bool | None) -> ToolUse:
    """The request's tools, checked: names unique, a named choice among them, and, where the call
    must be made (required, or a named tool), schemas whose every keyword the grammar enforces."""
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise PydanticCustomError("tools", "name the same tool twice; each tool needs its own name")
    if choice not in ("auto", "none", "required") and choice not in names:
        raise PydanticCustomError("tool_choice", "names '{name}', which is none of the tools ({names})",
                                  {"name": choice, "names": ", ".join(names)})
    if choice != "auto" and choice != "none":
        for t in tools:
            keyword = unenforceable(t.parameters) if choice in ("required", t.name) else None
            if keyword:
                raise PydanticCustomError(
                    "tool_schema", "tool '{name}' uses '{k}' in its schema, which the grammar that holds a required "
                    "call to the schema cannot enforce. Fix: leave '{k}' out and check it yourself, or use tool_choice "
                    "auto (the schema then reaches the model as written, unenforced)", {"name": t.name, "k": keyword})
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
