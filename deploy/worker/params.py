"""The worker protocol's request bodies, checked before a worker tokenises or allocates.

A worker's routes can be reached directly on loopback, not only through the API gate, so the
same strict JSON and the same ranges hold here: a bad field is a 400 that names it, never a
500 from deep inside an engine, and never a generation longer than the model's context.
"""
from __future__ import annotations

from deploy.api.errors import ClientError
from deploy.api.validate import bad, number, parse_json

OPTIONAL_TYPES = {"stop": (str, list), "stop_token_ids": (list,), "json_schema": (dict,), "echo": (bool,),
                  "ignore_eos": (bool,), "images": (list,)}


def worker_params(raw: bytes, context_len: int, need_prompt: bool = True, features: set[str] = frozenset()) -> dict:
    """`features`: what this worker's backend can do (deploy/backends: features_for)."""
    params = parse_json(raw)
    if not isinstance(params, dict):
        raise bad("the body must be a JSON object of generation parameters.")
    if need_prompt and not isinstance(params.get("prompt"), str):
        raise bad("'prompt' must be a string.", "prompt")
    if params.get("images"):
        raise bad("this worker's model takes no images.", "images")
    number(params, "max_new_tokens", 1, context_len, integer=True)
    number(params, "temperature", 0, 2)
    number(params, "top_p", 0, 1)
    number(params, "top_k", -1, 1 << 20, integer=True)
    number(params, "presence_penalty", -2, 2)
    number(params, "frequency_penalty", -2, 2)
    number(params, "repetition_penalty", 0.01, 10)
    number(params, "seed", -(2 ** 63), 2 ** 64, integer=True)
    number(params, "logprobs", 0, 20, integer=True)
    for feature, name in (("logprobs", "logprobs"), ("json", "json_schema")):
        if params.get(name) is not None and feature not in features:
            raise bad(f"this worker's backend does not support '{name}'. Fix: leave it out, or ask a "
                      f"llama.cpp worker.", name)
    for name, types in OPTIONAL_TYPES.items():
        if params.get(name) is not None and not isinstance(params[name], types):
            raise bad(f"'{name}' has the wrong type ({type(params[name]).__name__}).", name)
    ids = params.get("stop_token_ids") or []
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 31 for i in ids):
        raise bad("'stop_token_ids' must be token ids (integers from 0).", "stop_token_ids")
    return params


def error_frame(e: ClientError) -> dict:
    """FastChat's worker error shape (VALIDATION_TYPE_ERROR), which its API server and web UI read."""
    return {"text": e.message, "error_code": 40001}


def check_embedding_input(params: dict) -> None:
    inputs = params.get("input")
    items = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise bad("'input' must be a string or a non-empty array of strings.", "input")
