"""Server-sent events for streamed answers, in OpenAI's chunk shapes. FastChat's own generators
(which our routers replace) sent an empty body under pydantic 2; these keep FastChat's event
order and add what clients expect:
- raw UTF-8 (no \\uXXXX escapes for Chinese);
- the request's token usage in a last chunk when `stream_options.include_usage` asks (as OpenAI);
- token log-probabilities, each token once;
- a worker error, or a worker that vanished mid-answer, as an OpenAI `{"error": ...}` event the
  official client raises, instead of a chunk it ignores or a cut connection.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from deploy.api.tool_format import BadToolCall, ToolUse, answer_parts
from deploy.wire.frames import ENGINE_ERROR, cached_tokens


@dataclass
class Notes:
    """What a request's handler tells the gate's metrics: the model and the tokens generated."""
    model: str = ""
    completion_tokens: int = 0


def notes_of(request) -> Notes:
    """The request's notes, set by the gate (a fresh one when the app runs without it)."""
    notes = getattr(request.state, "notes", None)
    return notes if isinstance(notes, Notes) else Notes()


def sse(obj) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


def error_event(message: str, code, kind: str = "worker_error") -> str:
    """kind: worker_error (the worker reported it) or worker_unavailable (it went away mid-answer;
    asking again once it is back can succeed, and clients such as ask_all do)."""
    return sse({"error": {"message": message, "code": int(code), "type": kind}})


@dataclass(frozen=True)
class Failed:
    """Why an answer stopped short: kind is worker_error, worker_unavailable (see error_event) or
    tool_call_invalid (the answer called no tool it could). Each API words it in its own error
    shape; `event` is OpenAI's."""
    message: str
    code: int
    kind: str

    @property
    def event(self) -> str:
        return error_event(self.message, self.code, self.kind)


class StreamFailed(Exception):
    def __init__(self, failed: Failed):
        self.failed = failed


class Usage:
    """The token counts of every choice of one request, summed (OpenAI sends one usage)."""

    def __init__(self):
        self.prompt = self.completion = 0
        self.cached: int | None = None  # prompt tokens served from a KV cache, where the worker says

    def add(self, frame: dict) -> None:
        u = frame.get("usage") or {}
        self.prompt += int(u.get("prompt_tokens") or 0)
        self.completion += int(u.get("completion_tokens") or 0)
        cached = cached_tokens(u)
        if cached is not None:
            self.cached = (self.cached or 0) + cached

    def as_dict(self) -> dict:
        out = {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
               "total_tokens": self.prompt + self.completion}
        if self.cached is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached}
        return out


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:22]}"


def logprobs_delta(frame: dict, key: str, sent: int):
    """The token log-probabilities not yet sent: (delta, tokens sent now). The worker's frames
    hold them cumulatively, like the text."""
    lp = frame.get(key)
    if not lp:
        return None, sent
    if key == "chat_logprobs":
        tokens = lp["content"]
        return ({"content": tokens[sent:]} if len(tokens) > sent else None), len(tokens)
    n = len(lp["tokens"])
    return ({k: v[sent:] for k, v in lp.items()} if n > sent else None), n


async def text_deltas(frames: AsyncIterator[dict], model: str):
    """(new text, frame) per worker frame; a worker error, or a worker gone mid-answer, raises StreamFailed."""
    previous = ""
    try:
        async for frame in frames:
            if frame.get("error_code", 0) != 0:
                raise StreamFailed(Failed(frame.get("text", ""), int(frame["error_code"]), "worker_error"))
            decoded = frame["text"].replace("\ufffd", "")
            delta = decoded[len(previous):]
            previous = decoded if len(decoded) > len(previous) else previous
            yield delta, frame
    except StreamFailed:
        raise
    except Exception as e:
        raise StreamFailed(Failed(f"worker for '{model}' failed mid-answer: {type(e).__name__}: {e}",
                                  ENGINE_ERROR, "worker_unavailable")) from None


async def answer_stream(frames: AsyncIterator[dict], model: str, tools: ToolUse | None):
    """tool_format.answer_parts over one worker's frames, ending, if the answer failed, with one
    ("failed", Failed, {}) part: the caller words it in its API's error shape and stops."""
    try:
        async for part in answer_parts(text_deltas(frames, model), tools):
            yield part
    except StreamFailed as f:
        yield "failed", f.failed, {}
    except BadToolCall as e:
        yield "failed", Failed(str(e), ENGINE_ERROR, "tool_call_invalid"), {}


async def answer_blocks(frames: AsyncIterator[dict], model: str, tools: ToolUse | None):
    """An answer told as the Responses and Messages APIs stream it: ("open", None) before its first
    text (or at the end, for an answer with neither text nor calls: still one text block), ("text",
    new text) as it grows, then ("end", (calls, last frame, whether text was opened)); a failure
    ends it as ("failed", Failed) instead."""
    opened, calls, frame = False, [], {}
    async for kind, delta, frame in answer_stream(frames, model, tools):
        if kind == "failed":
            yield "failed", delta
            return
        if kind == "calls":
            calls = delta
        elif delta:
            if not opened:
                opened = True
                yield "open", None
            yield "text", delta
    if not opened and not calls:
        opened = True
        yield "open", None
    yield "end", (calls, frame, opened)


def _closing(finish: list[dict], usage: Usage, notes: Notes, include_usage: bool, last: dict):
    """The finish chunks, then (only when stream_options.include_usage asked, as OpenAI does) one
    chunk with no choices and the request's usage, then [DONE]."""
    for chunk in finish:
        yield sse(chunk)
    notes.completion_tokens = usage.completion
    if include_usage:
        yield sse({**last, "choices": [], "usage": usage.as_dict()})
    yield DONE


def chat_tool_calls(calls, streamed: bool) -> list[dict]:
    """Tool calls in a chat answer's shape (a stream sends each whole, with its index)."""
    return [{**({"index": k} if streamed else {}), "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments_json}} for k, c in enumerate(calls)]


async def chat_stream(streams, model: str, notes: Notes, include_usage: bool,
                      tools: ToolUse | None = None) -> AsyncIterator[str]:
    """`streams`: one async iterator of worker frames per choice, started lazily in order. With
    `tools`, the answer's text is read from the generic format as it grows, and its calls sent whole."""
    head = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    finish, usage = [], Usage()
    for i, frames in enumerate(streams):
        yield sse({**head, "choices": [{"index": i, "delta": {"role": "assistant"}, "finish_reason": None}]})
        frame, sent, reason = {}, 0, None
        async for kind, delta, frame in answer_stream(frames(), model, tools):
            if kind == "failed":
                yield delta.event
                yield DONE
                return
            if kind == "calls":
                reason = "tool_calls"
                yield sse({**head, "choices": [{"index": i, "delta": {"tool_calls": chat_tool_calls(delta, True)},
                                                "finish_reason": None}]})
                continue
            logprobs, sent = logprobs_delta(frame, "chat_logprobs", sent)
            if delta or logprobs:
                choice = {"index": i, "delta": {"content": delta}, "finish_reason": None}
                if logprobs:
                    choice["logprobs"] = logprobs
                yield sse({**head, "choices": [choice]})
        usage.add(frame)
        finish.append({**head, "choices": [{"index": i, "delta": {},
                                            "finish_reason": reason or frame.get("finish_reason") or "stop"}]})
    for event in _closing(finish, usage, notes, include_usage, head):
        yield event


async def completion_stream(streams, model: str, notes: Notes, include_usage: bool) -> AsyncIterator[str]:
    """`streams`: (choice index, a function that starts that choice's worker frames), in order."""
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model}
    finish, usage = [], Usage()
    for i, frames in streams:
        frame, sent = {}, 0
        try:
            async for delta, frame in text_deltas(frames(), model):
                logprobs, sent = logprobs_delta(frame, "logprobs", sent)
                if delta or logprobs:
                    yield sse({**head, "choices": [{"index": i, "text": delta, "logprobs": logprobs,
                                                    "finish_reason": None}]})
        except StreamFailed as f:
            yield f.failed.event
            yield DONE
            return
        usage.add(frame)
        finish.append({**head, "choices": [{"index": i, "text": "", "logprobs": None,
                                            "finish_reason": frame.get("finish_reason") or "stop"}]})
    for event in _closing(finish, usage, notes, include_usage, head):
        yield event
