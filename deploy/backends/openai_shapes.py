"""The OpenAI wire shapes both kinds of worker turn engine output into: per-token log-probabilities
(collected over a stream, given both ways FastChat's clients read them), embeddings replies, and
the last frame of a stream for the non-streaming call."""
from __future__ import annotations

import base64
import json
import struct


async def last_frame(stream) -> dict:
    """FastChat's generate (non-streaming): the stream's last frame, or its first error."""
    last = {"text": "", "error_code": 0}
    async for raw in stream:
        last = json.loads(raw[:-1])
        if last["error_code"]:
            break
    return last


def embeddings_reply(out: dict, encoding_format: str | None) -> dict:
    """An OpenAI /v1/embeddings answer as FastChat's embeddings protocol: float or base64 vectors."""
    vectors = [d["embedding"] for d in sorted(out["data"], key=lambda d: d["index"])]
    if encoding_format == "base64":
        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    return {"embedding": vectors, "token_num": (out.get("usage") or {}).get("prompt_tokens", 0)}


def per_token(lp) -> list[dict]:
    """Per-token log-probabilities from either shape an upstream sends: OpenAI's completions
    (tokens, token_logprobs, top_logprobs) or llama.cpp's (content: [{token, logprob, top_logprobs}]), as
    the chat shape's list."""
    if not lp:
        return []
    if isinstance(lp.get("content"), list):
        return [{**t, "top_logprobs": [dict(a) for a in t.get("top_logprobs") or []]} for t in lp["content"]]
    tops = lp.get("top_logprobs") or [{}] * len(lp.get("tokens") or [])
    return [{"token": t, "logprob": p, "top_logprobs": [{"token": k, "logprob": v} for k, v in (top or {}).items()]}
            for t, p, top in zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], tops)]


class TokenLogprobs:
    """The engine's per-token log-probabilities (OpenAI chat shape, one entry per token),
    collected over a stream and given both ways FastChat's clients read them: `logprobs` in the
    completions shape FastChat's API server passes on, `chat_logprobs` in the chat shape."""

    def __init__(self, offset: int, top_n):
        self.top_n = None if top_n is None else int(top_n)
        self.offset = offset
        self.content: list[dict] = []

    def add(self, logprobs) -> None:
        """One streamed chunk's log-probabilities, in either shape a server sends."""
        if self.top_n is None or not logprobs:
            return
        for tok in per_token(logprobs):
            self.content.append({**tok, "top_logprobs": tok["top_logprobs"][:self.top_n]})

    def fields(self) -> dict:
        if self.top_n is None:
            return {}
        offsets, at = [], self.offset
        for tok in self.content:
            offsets.append(at)
            at += len(tok["token"])
        return {
            "logprobs": {"text_offset": offsets, "tokens": [t["token"] for t in self.content],
                         "token_logprobs": [t["logprob"] for t in self.content],
                         "top_logprobs": [{a["token"]: a["logprob"] for a in t["top_logprobs"]} for t in self.content]},
            "chat_logprobs": {"content": self.content},
        }
