"""Check and normalise OpenAI request bodies before FastChat sees them.

FastChat 0.2.36 trusts its pydantic models, which accept NaN, Infinity, content given as a list
of parts, and roles it then fails on with a 500. Here every body is parsed strictly and every
field the routes read is checked, with a 400 that names the field. What real clients send is
made into what FastChat understands: text parts joined, `developer` read as `system`,
`max_completion_tokens` as `max_tokens`. What no model here can do (images, tools, token-id
prompts) is refused, never silently dropped. The OpenAI extras FastChat drops (seed,
response_format, logprobs, stream_options) are returned in `Extras` for the patched FastChat
code to pass on.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from deploy.api.errors import ClientError

MAX_DEPTH = 64          # a json_schema is the deepest thing a client has reason to send
MAX_N = 4               # choices per request: each one is a full generation on a CPU
MAX_PROMPTS = 16        # prompts per /v1/completions request
MAX_EMBED_INPUTS = 256
MAX_STOP = 4            # as OpenAI
MAX_TOP_LOGPROBS = 20   # as OpenAI (chat); completions allow 5
INT64 = 2 ** 63


def bad(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> ClientError:
    return ClientError(status, message, param=param, code=code)


def unsupported(feature: str, param: str, fix: str) -> ClientError:
    return ClientError(400, f"{feature} is not supported by this deployment. {fix}", param=param,
                       code="unsupported_parameter")


@dataclass
class Extras:
    """What a request asks for beyond the fields FastChat reads; `needs` lists the worker
    features (deploy/backends: Backend.features) the request cannot be answered without."""
    seed: int | None = None
    include_usage: bool = False
    json_schema: dict | None = None   # response_format json_object / json_schema
    logprobs: int | None = None       # top alternatives per token (0: only the chosen token's)
    chat_logprobs: bool = False
    needs: set[str] = field(default_factory=set)
    model: str = ""                # for the metrics
    completion_tokens: int = 0     # set when a streamed answer ends (the metrics read it)


# ---- strict JSON -------------------------------------------------------------------------

def _no_constant(name: str):
    raise bad(f"invalid JSON: {name} is not a number JSON allows. Fix: send a finite number.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise bad(f"invalid JSON: the number {text[:40]} is out of range. Fix: send a finite number.")
    return value


def parse_json(body: bytes) -> Any:
    """RFC 8259 JSON only: UTF-8, finite numbers, no lone surrogates, nesting at most MAX_DEPTH."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"the request body is not UTF-8 (byte {e.start}). Fix: send UTF-8 JSON.") from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise bad(f"the JSON is nested too deeply (more than {MAX_DEPTH} levels).") from None
    except ClientError:
        raise
    except ValueError as e:  # JSONDecodeError, or an integer with thousands of digits
        raise bad(f"invalid JSON: {e}. Fix: send a JSON object.") from None
    _walk(data)
    return data


def _walk(data: Any) -> None:
    stack = [(data, 1, "body")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise bad(f"the JSON is nested too deeply (more than {MAX_DEPTH} levels, at {where}).")
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
        raise bad(f"'{where}' holds a lone UTF-16 surrogate (\\ud800-\\udfff escape without its pair), "
                  f"which is not text. Fix: send valid Unicode.", param=where) from None


# ---- fields ------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def number(body: dict, name: str, lo: float, hi: float, integer: bool = False) -> None:
    """Check an optional numeric field in place; null means 'use the default' (removed)."""
    if name not in body:
        return
    value = body[name]
    if value is None:
        del body[name]
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"'{name}' must be {'an integer' if integer else 'a number'}, not {_type_name(value)}.", name)
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise bad(f"'{name}' must be an integer, not {value}.", name)
        body[name] = value = int(value)
    if not lo <= value <= hi:
        raise bad(f"'{name}' is {value}, outside the allowed range {lo} to {hi}.", name)


def boolean(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        body.pop(name, None)
        return False
    if not isinstance(value, bool):
        raise bad(f"'{name}' must be true or false, not {_type_name(value)}.", name)
    return value


def string(body: dict, name: str, required: bool = False, max_len: int = 256) -> None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad(f"'{name}' is required.", name)
        body.pop(name, None)
        return
    if not isinstance(value, str) or (required and not value):
        raise bad(f"'{name}' must be a non-empty string, not {_type_name(value)}.", name)
    if len(value) > max_len:
        raise bad(f"'{name}' is longer than {max_len} characters.", name)


def _stop(body: dict) -> None:
    value = body.get("stop")
    if value is None:
        body.pop("stop", None)
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad("'stop' must be a string or an array of strings.", "stop")
    if len(items) > MAX_STOP:
        raise bad(f"'stop' has {len(items)} sequences; at most {MAX_STOP} are allowed.", "stop")


def _sampling(body: dict, extras: Extras) -> None:
    """The fields chat and completions share."""
    string(body, "model", required=True)
    if "max_completion_tokens" in body:  # the newer name for max_tokens (o1 and later clients)
        body.setdefault("max_tokens", body.pop("max_completion_tokens"))
    number(body, "max_tokens", 1, 1 << 20, integer=True)
    number(body, "temperature", 0, 2)
    number(body, "top_p", 0, 1)
    number(body, "top_k", -1, 1 << 20, integer=True)
    number(body, "n", 1, MAX_N, integer=True)
    number(body, "presence_penalty", -2, 2)
    number(body, "frequency_penalty", -2, 2)
    number(body, "repetition_penalty", 0.01, 10)
    number(body, "seed", -INT64, INT64 - 1, integer=True)
    extras.seed = body.get("seed")
    _stop(body)
    string(body, "user")
    stream = boolean(body, "stream")
    options = body.pop("stream_options", None)
    if options is not None:
        if not isinstance(options, dict):
            raise bad("'stream_options' must be an object.", "stream_options")
        if not stream:
            raise bad("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        extras.include_usage = boolean(options, "include_usage")
    if body.get("logit_bias"):
        raise unsupported("'logit_bias'", "logit_bias", "Fix: leave it out.")
    body.pop("logit_bias", None)
    _response_format(body, extras)


def _response_format(body: dict, extras: Extras) -> None:
    fmt = body.pop("response_format", None)
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        extras.json_schema = {"type": "object"}
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad("'response_format.json_schema' must be an object with a 'schema' object.",
                      "response_format.json_schema")
        extras.json_schema = spec.get("schema") or {}
    else:
        raise bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'.", "response_format.type")
    extras.needs.add("json")


# ---- chat ---------------------------------------------------------------------------------

IMAGE_PARTS = {"image_url", "input_image", "image"}
TOOL_FIELDS = ("tools", "functions")


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"'{where}' must be a string or an array of content parts, not {_type_name(content)}.", where)
    texts = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise bad(f"'{at}.{kind}' must be a string.", f"{at}.{kind}")
            texts.append(text)
        elif kind in IMAGE_PARTS:
            raise bad(f"'{at}' is an image, and the models of this deployment take no images. "
                      f"Fix: send text parts only.", at, code="images_not_supported")
        elif isinstance(kind, str):
            raise bad(f"'{at}' is a '{kind}' part; only text parts are supported.", at,
                      code="unsupported_content")
        else:
            raise bad(f"'{at}' must be an object with a 'type' (text).", at)
    return "\n".join(texts)


def _messages(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty array of {role, content} objects.", "messages")
    out, system = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"'{where}' must be an object with 'role' and 'content'.", where)
        role = m.get("role")
        if role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
            raise unsupported(f"'{where}': tool and function calls", f"{where}.role",
                              "No model here calls tools. Fix: send user, assistant and system messages only.")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad(f"'{where}.role' must be 'system', 'developer', 'user' or 'assistant', not {role!r}.",
                      f"{where}.role")
        content = m.get("content")
        if content is None and role != "assistant":
            raise bad(f"'{where}.content' is missing.", f"{where}.content")
        text = _content(content if content is not None else "", f"{where}.content")
        if role in ("system", "developer"):  # developer is the newer name for system
            system.append(text)
            continue
        msg = {"role": role, "content": text}
        if isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        out.append(msg)
    if not any(m["role"] == "user" for m in out):
        raise bad("'messages' has no user message. Fix: add {\"role\": \"user\", \"content\": ...}.", "messages")
    # FastChat's templates hold one system prompt, at the start: several are joined there
    body["messages"] = ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + out


def check_chat(body: dict) -> Extras:
    extras = Extras()
    _messages(body)
    _sampling(body, extras)
    for name in TOOL_FIELDS:
        if body.get(name):
            raise unsupported(f"'{name}' (tool calling)", name, f"No model here calls tools. Fix: leave '{name}' out.")
        body.pop(name, None)
    for name in ("tool_choice", "function_call", "parallel_tool_calls"):
        body.pop(name, None)
    if boolean(body, "logprobs"):
        extras.chat_logprobs = True
        extras.logprobs = 0
        extras.needs.add("logprobs")
    number(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, integer=True)
    if body.get("top_logprobs"):
        if not extras.chat_logprobs:
            raise bad("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
        extras.logprobs = body["top_logprobs"]
    body.pop("top_logprobs", None)
    body.pop("logprobs", None)
    return extras


# ---- completions and embeddings ----------------------------------------------------------

def _texts(body: dict, name: str, limit: int) -> None:
    value = body.get(name)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise bad(f"'{name}' must be a string or a non-empty array of strings.", name)
    if any(isinstance(x, (int, list)) and not isinstance(x, bool) for x in items):
        raise unsupported(f"'{name}' given as token ids", name,
                          f"Each model has its own tokenizer. Fix: send '{name}' as text.")
    if not all(isinstance(x, str) for x in items):
        raise bad(f"'{name}' must be a string or an array of strings.", name)
    if len(items) > limit:
        raise bad(f"'{name}' has {len(items)} items; at most {limit} are allowed per request.", name)


def check_completion(body: dict) -> Extras:
    extras = Extras()
    _texts(body, "prompt", MAX_PROMPTS)
    _sampling(body, extras)
    boolean(body, "echo")
    number(body, "best_of", 1, 1, integer=True)
    number(body, "logprobs", 0, 5, integer=True)
    if "logprobs" in body:
        extras.logprobs = body["logprobs"]
        extras.needs.add("logprobs")
    if body.get("suffix"):
        raise unsupported("'suffix' (fill in the middle)", "suffix", "Fix: leave it out.")
    body.pop("suffix", None)
    return extras


def check_embeddings(body: dict) -> Extras:
    extras = Extras(needs={"embeddings"})
    string(body, "model", required=True)
    _texts(body, "input", MAX_EMBED_INPUTS)
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise bad("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    if body.get("dimensions") is not None:
        raise unsupported("'dimensions'", "dimensions", "Embeddings have the model's own size. Fix: leave it out.")
    body.pop("dimensions", None)
    string(body, "user")
    return extras


def check_token_check(body: dict) -> Extras:
    prompts = body.get("prompts")
    if not isinstance(prompts, list) or not prompts or len(prompts) > MAX_PROMPTS:
        raise bad(f"'prompts' must be an array of 1 to {MAX_PROMPTS} {{model, prompt, max_tokens}} objects.",
                  "prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, dict):
            raise bad(f"'prompts[{i}]' must be an object.", f"prompts[{i}]")
        string(p, "model", required=True)
        if not isinstance(p.get("prompt"), str):
            raise bad(f"'prompts[{i}].prompt' must be a string.", f"prompts[{i}].prompt")
        number(p, "max_tokens", 1, 1 << 20, integer=True)
        p.setdefault("max_tokens", 1)
    return Extras()


def checker_for(path: str) -> Callable[[dict], Extras] | None:
    """The check for a POST route; None for routes that take no body we read."""
    if path in ("/v1/chat/completions", "/api/v1/chat/completions"):
        return check_chat
    if path == "/v1/completions":
        return check_completion
    if path == "/v1/embeddings" or (path.startswith("/v1/engines/") and path.endswith("/embeddings")):
        return check_embeddings
    if path == "/api/v1/token_check":
        return check_token_check
    return None


def check_body(path: str, raw: bytes) -> tuple[bytes, Extras] | None:
    """(normalised body, extras) for a route we check; None for other routes."""
    check = checker_for(path)
    if check is None:
        return None
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise bad(f"the request body must be a JSON object, not {_type_name(body)}.")
    if path.startswith("/v1/engines/"):
        body.setdefault("model", path.split("/")[3])
    try:
        extras = check(body)
    except ClientError as e:
        e.model = body.get("model") if isinstance(body.get("model"), str) else ""
        raise
    extras.model = str(body.get("model", ""))
    return json.dumps(body, ensure_ascii=False).encode(), extras
