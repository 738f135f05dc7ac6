"""Reading a worker's answer, for every API: its frames as text deltas, tool calls and a failure
(`answer_stream`), the same told as the Responses and Messages APIs tell an answer
(`answer_blocks`), or whole (`collect`, for answers that are not streamed). Each marks the request's
first generated token on its notes, where the gate's metrics read it, and raw UTF-8 server-sent
events (no \\uXXXX escapes for Chinese) carry what each API makes of it. A worker error, or a worker
that vanished mid-answer, becomes one failure the route words in its API's error shape, instead of
a chunk clients ignore or a cut connection.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from deploy.api.tool_format import BadToolCall, ToolCall, ToolUse, answer_parts
from deploy.wire.errors import ClientError, status_of_worker_code, unavailable
from deploy.wire.frames import ENGINE_ERROR, cached_tokens
from deploy.wire.reasoning import ThinkSplit


@dataclass
class Notes:
    """What a request's handler tells the gate's metrics: the model, the tokens generated and when
    the first of them arrived (monotonic time)."""
    model: str = ""
    completion_tokens: int = 0
    first_token_at: float | None = None

    def token_seen(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()


def notes_of(request) -> Notes:
    """The request's notes, set by the gate (a fresh one when the app runs without it)."""
    notes = getattr(request.state, "notes", None)
    return notes if isinstance(notes, Notes) else Notes()


def sse(obj, event: str | None = None) -> str:
    """One server-sent event: a typed object (dumped as it was built: the fields it was given), a
    dict, or a literal string; `event` names it (the Responses and Messages APIs do)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", exclude_unset=True)
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


DONE = "data: [DONE]\n\n"
COMMENT = ": keep-alive\n\n"  # an SSE comment: every client's parser skips it
KEEPALIVE_S = 10.0  # a long prompt on a CPU takes minutes before the first token; clients hang up on silence


async def kept_alive(events: AsyncIterator[str], keepalive: str, every: float) -> AsyncIterator[str]:
    """`events`, with `keepalive` sent whenever `every` seconds pass without one: clients (Claude
    Code: 5 minutes; Codex CLI: its stream_idle_timeout_ms) give up on a silent stream and ask
    again, which makes a CPU process the same long prompt twice."""
    it = events.__aiter__()
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield keepalive
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None and not pending.done():
            pending.cancel()  # the client left while the answer was still coming: stop it
            await asyncio.gather(pending, return_exceptions=True)
        await it.aclose()


def sse_response(events: AsyncIterator[str], keepalive: str = COMMENT, every: float = KEEPALIVE_S):
    """A streamed answer, kept alive while the model reads a long prompt."""
    return StreamingResponse(kept_alive(events, keepalive, every), media_type="text/event-stream")


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

    def client_error(self) -> ClientError:
        """The failure of an answer that was not streamed, as the HTTP error it is."""
        if self.kind == "tool_call_invalid":
            return ClientError(502, f"{self.message}. Retry, or simplify the tool's schema.", code="tool_call_invalid",
                               kind="server_error")
        if self.kind == "worker_unavailable":
            return unavailable(self.message, "worker_unreachable")
        status, kind = status_of_worker_code(self.code)
        return ClientError(status, self.message, code=str(self.code), kind=kind)


class StreamFailed(Exception):
    def __init__(self, failed: Failed):
        self.failed = failed


@dataclass
class Usage:
    """Token counts: one answer's, or every choice of a request summed (OpenAI sends one usage)."""
    prompt: int = 0
    completion: int = 0
    cached: int | None = None  # prompt tokens served from a KV cache, where the worker says
    reasoning: int | None = None  # of the completion's, the trace's (split_deltas counts them)

    def add(self, frame: dict) -> "Usage":
        u = frame.get("usage") or {}
        self.prompt += int(u.get("prompt_tokens") or 0)
        self.completion += int(u.get("completion_tokens") or 0)
        cached = cached_tokens(u)
        if cached is not None:
            self.cached = (self.cached or 0) + cached
        traced = (u.get("completion_tokens_details") or {}).get("reasoning_tokens")
        if traced is not None:
            self.reasoning = (self.reasoning or 0) + int(traced)
        return self

    @classmethod
    def of(cls, frame: dict) -> "Usage":
        return cls().add(frame)

    def as_dict(self) -> dict:
        out = {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
               "total_tokens": self.prompt + self.completion}
        if self.cached is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached}
        if self.reasoning is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning}
        return out


def new_id(prefix: str, sep: str = "-") -> str:
    """An id as each API spells them: chatcmpl-..., resp_..., msg_..."""
    return f"{prefix}{sep}{uuid.uuid4().hex[:24]}"


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


async def text_deltas(frames: AsyncIterator[dict], model: str, notes: Notes):
    """(new text, frame) per worker frame; a worker error, or a worker gone mid-answer, raises
    StreamFailed. The first frame that carries a generated token marks the request's first token."""
    previous = ""
    try:
        async for frame in frames:
            if frame.get("error_code", 0) != 0:
                raise StreamFailed(Failed(frame.get("text", ""), int(frame["error_code"]), "worker_error"))
            decoded = frame["text"].replace("\ufffd", "")
            delta = decoded[len(previous):]
            previous = decoded if len(decoded) > len(previous) else previous
            if delta or (frame.get("usage") or {}).get("completion_tokens"):
                notes.token_seen()
            yield delta, frame
    except StreamFailed:
        raise
    except Exception as e:
        raise StreamFailed(Failed(f"worker for '{model}' failed mid-answer: {type(e).__name__}: {e}",
                                  ENGINE_ERROR, "worker_unavailable")) from None


async def split_deltas(deltas: AsyncIterator[tuple[str, dict]], opened: bool):
    """(kind, new text, frame): the answer's trace ("reasoning", between <think> and </think>, from the
    start when the prompt `opened` it) apart from its text ("text"), as it streams. The last frame's
    usage gets the trace's tokens (completion_tokens_details.reasoning_tokens): the completion's
    count at the frame in which the trace ended (a frame may hold a few tokens of both)."""
    split, frame, traced = ThinkSplit(opened), {}, 0
    async for delta, frame in deltas:
        inside = split.in_reasoning
        pieces = split.feed(delta)
        if inside or split.in_reasoning or any(kind == "reasoning" for kind, _ in pieces):
            traced = int((frame.get("usage") or {}).get("completion_tokens") or traced)
        for kind, text in pieces:
            yield ("reasoning" if kind == "reasoning" else "text"), text, frame
        if not pieces:
            yield "text", "", frame  # every frame goes on: the last one carries the usage
    for kind, text in split.end():
        yield ("reasoning" if kind == "reasoning" else "text"), text, frame
    if split.thought and isinstance(frame.get("usage"), dict):
        frame["usage"]["completion_tokens_details"] = {"reasoning_tokens": traced}


async def answer_stream(frames: AsyncIterator[dict], model: str, tools: ToolUse | None, notes: Notes,
                        opened: bool = False):
    """tool_format.answer_parts over one worker's frames (their trace apart: split_deltas), ending, if
    the answer failed, with one ("failed", Failed, {}) part: the caller words it in its API's error
    shape and stops."""
    try:
        async for part in answer_parts(split_deltas(text_deltas(frames, model, notes), opened), tools):
            yield part
    except StreamFailed as f:
        yield "failed", f.failed, {}
    except BadToolCall as e:
        yield "failed", Failed(str(e), ENGINE_ERROR, "tool_call_invalid"), {}


@dataclass
class Answer:
    """One whole answer: its text (None when it only called tools), its calls, its last frame, and
    its trace (None when the model did not think)."""
    text: str | None
    calls: list[ToolCall] = field(default_factory=list)
    frame: dict = field(default_factory=dict)
    reasoning: str | None = None

    @property
    def finish_reason(self) -> str:
        """OpenAI's: tool_calls, length (max_tokens stopped it) or stop."""
        return "tool_calls" if self.calls else self.frame.get("finish_reason") or "stop"

    @property
    def usage(self) -> Usage:
        return Usage.of(self.frame)


async def collect(frames: AsyncIterator[dict], model: str, tools: ToolUse | None, notes: Notes,
                  opened: bool = False) -> Answer:
    """A whole answer from its stream (so its first token is timed like a streamed one's); a failure
    raises the HTTP error it is."""
    text, calls, frame, reasoning = "", [], {}, None
    async for kind, x, frame in answer_stream(frames, model, tools, notes, opened):
        if kind == "failed":
            raise x.client_error()
        if kind == "calls":
            calls = x
        elif kind == "reasoning":
            reasoning = (reasoning or "") + x
        else:
            text += x
    if opened and reasoning is None:
        reasoning = ""  # the template opened a trace the model closed at once
    return Answer(None if calls and not text else text, calls, frame, reasoning)


async def answer_blocks(frames: AsyncIterator[dict], model: str, tools: ToolUse | None, notes: Notes,
                        thinking: bool = False):
    """An answer told as the Responses and Messages APIs stream it: ("reasoning", new trace) as the
    trace grows (it comes first), ("open", None) before its first text (or at the end, for an answer
    with neither text nor calls: still one text block), ("text", new text) as it grows, then ("end",
    Answer, whether text was opened); a failure ends it as ("failed", Failed) instead; an answer cut
    off inside its trace is the trace alone. `thinking`:
    the prompt opened the trace."""
    opened, text, calls, frame, reasoning = False, "", [], {}, "" if thinking else None
    async for kind, delta, frame in answer_stream(frames, model, tools, notes, thinking):
        if kind == "failed":
            yield "failed", delta, False
            return
        if kind == "calls":
            calls = delta
        elif kind == "reasoning":
            reasoning = (reasoning or "") + delta
            yield "reasoning", delta, False
        elif delta:
            if not opened:
                opened = True
                yield "open", None, False
            text += delta
            yield "text", delta, False
    if not opened and not calls and not reasoning:  # an empty answer is one empty text block; a trace alone is not
        opened = True
        yield "open", None, False
    yield "end", Answer(text if opened else None, calls, frame, reasoning), opened


def closing_events(head: dict, finish: list, usage: Usage, notes: Notes, include_usage: bool, chunk_type):
    """The finish chunks of a chat or completion stream, then (only when stream_options.include_usage
    asked, as OpenAI does) one chunk with no choices and the request's usage, then [DONE]."""
    for choices in finish:
        yield sse(chunk_type(**head, choices=choices))
    notes.completion_tokens = usage.completion
    if include_usage:
        yield sse(chunk_type(**head, choices=[], usage=usage.as_dict()))
    yield DONE
