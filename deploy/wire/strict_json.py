"""RFC 8259 JSON only, for every body a fleet service reads: UTF-8, finite numbers (no NaN or
Infinity, which Python's json accepts), no lone surrogates, nesting at most MAX_DEPTH levels.
A violation is a 400 that says what is wrong, never a 500 from deep inside an engine."""
from __future__ import annotations

import json
import math
from typing import Any

from deploy.wire.errors import ClientError

MAX_DEPTH = 64  # a json_schema is the deepest thing a client has reason to send


def type_name(value: Any) -> str:
    """JSON's name for a value's type, as error messages say it."""
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _no_constant(name: str):
    raise ClientError(400, f"invalid JSON: {name} is not a number JSON allows. Fix: send a finite number.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ClientError(400, f"invalid JSON: the number {text[:40]} is out of range. Fix: send a finite number.")
    return value


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClientError(400, f"the request body is not UTF-8 (byte {e.start}). Fix: send UTF-8 JSON.") from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ClientError(400, f"the JSON is nested too deeply (more than {MAX_DEPTH} levels).") from None
    except ClientError:
        raise
    except ValueError as e:  # JSONDecodeError, or an integer with thousands of digits
        raise ClientError(400, f"invalid JSON: {e}. Fix: send a JSON object.") from None
    _walk(data)
    return data


def parse_object(body: bytes) -> dict:
    """parse_json for bodies that must be a JSON object."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ClientError(400, f"the request body must be a JSON object, not {type_name(data)}.")
    return data


def _walk(data: Any) -> None:
    stack = [(data, 1, "body")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise ClientError(400, f"the JSON is nested too deeply (more than {MAX_DEPTH} levels, at {where}).")
        if isinstance(value, str):
            _utf8(value, where)
        elif isinstance(value, dict):
            for k, v in value.items():
                _utf8(k, where)
                stack.append((v, depth + 1, f"{where}.{k}" if where != "body" else k))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))


def _utf8(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError(400, f"'{where}' holds a lone UTF-16 surrogate (\\ud800-\\udfff escape without its pair), "
                               f"which is not text. Fix: send valid Unicode.", param=where) from None
