"""The generation fields the API and the workers both check, each type and range defined once, and
how a pydantic validation error becomes the 400 a client reads (naming the field and the fix).

JSON numbers are checked strictly: a boolean or a string is not a number (pydantic's lax mode
would take "3" and true), an integral float is an integer (3.0 -> 3), 1.5 is not.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_core import PydanticCustomError

from deploy.wire.errors import ClientError
from deploy.wire.strict_json import type_name

INT64 = 2 ** 63
MAX_TOKENS = 1 << 20      # what any request may ask for; a worker holds it to its context
MAX_TOP_LOGPROBS = 20     # as OpenAI (chat); completions allow 5
MAX_STOP = 4              # as OpenAI


def _real(v: Any) -> Any:
    if v is None:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PydanticCustomError("number_type", "must be a number, not {kind}", {"kind": type_name(v)})
    return v


def _integer(v: Any) -> Any:
    if v is None:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PydanticCustomError("int_type", "must be an integer, not {kind}", {"kind": type_name(v)})
    if isinstance(v, float):
        if not v.is_integer():
            raise PydanticCustomError("int_from_float", "must be an integer, not {value}", {"value": v})
        return int(v)
    return v


def _boolean(v: Any) -> Any:
    if v is not None and not isinstance(v, bool):
        raise PydanticCustomError("bool_type", "must be true or false, not {kind}", {"kind": type_name(v)})
    return v


def _text(v: Any) -> Any:
    if v is not None and not isinstance(v, str):
        raise PydanticCustomError("string_type", "must be a string, not {kind}", {"kind": type_name(v)})
    return v


Real = Annotated[float, BeforeValidator(_real)]
Integer = Annotated[int, BeforeValidator(_integer)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]
Text = Annotated[str, BeforeValidator(_text)]

# ---- the sampling ranges: the API's request models and the workers' parameter check use these ---
Temperature = Annotated[Real, Field(ge=0, le=2)]
TopP = Annotated[Real, Field(ge=0, le=1)]
TopK = Annotated[Integer, Field(ge=-1, le=MAX_TOKENS)]          # -1: off (FastChat's convention)
Penalty = Annotated[Real, Field(ge=-2, le=2)]                    # presence_penalty, frequency_penalty
RepetitionPenalty = Annotated[Real, Field(ge=0.01, le=10)]
Seed = Annotated[Integer, Field(ge=-INT64, le=INT64 - 1)]        # OpenAI's seed is an int64
MaxTokens = Annotated[Integer, Field(ge=1, le=MAX_TOKENS)]
TopLogprobs = Annotated[Integer, Field(ge=0, le=MAX_TOP_LOGPROBS)]
TokenId = Annotated[Integer, Field(ge=0, lt=1 << 31)]


def where(loc: tuple) -> str:
    """A pydantic location as a client writes it: messages[0].content."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(e: dict) -> str:
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "missing":
        return "is required"
    if e["type"] == "extra_forbidden":
        return "is not a field this route takes"
    if e["type"] in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
        return f"is {e['input']!r}, outside the allowed range: {msg[0].lower()}{msg[1:]}"
    return msg[0].lower() + msg[1:] if msg[:1].isupper() and not msg[1:2].isupper() else msg


# error types that are OpenAI error codes a client may act on (deploy/api/protocol.py raises them)
CODES = {"images_not_supported", "unsupported_parameter", "unsupported_content"}


def client_error(err: ValidationError | list[dict], skip: int = 0) -> ClientError:
    """The first problem of a validation error as a 400 naming the field (OpenAI's `param`);
    `skip` drops leading location parts (FastAPI's 'body')."""
    e = (err.errors() if isinstance(err, ValidationError) else err)[0]
    name = where(tuple(e["loc"])[skip:])
    code = e["type"] if e["type"] in CODES else None
    msg = e["msg"].removeprefix("Value error, ")
    if not name or msg.startswith("'"):  # a rule about the request as a whole, which names its fields itself
        return ClientError(400, msg.rstrip(".") + ".", param=name or None, code=code)
    return ClientError(400, f"'{name}' {_describe(e)}.", param=name, code=code)
