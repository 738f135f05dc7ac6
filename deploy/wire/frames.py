"""FastChat's worker stream: JSON objects, each followed by a NUL byte. Workers write frames with
`frame`, readers split a byte stream with `FrameDecoder`, and the error codes FastChat's
clients read are named here."""
from __future__ import annotations

import json

# FastChat's ErrorCode values (fastchat/constants.py) that our workers send
VALIDATION_ERROR = 40001     # a bad request field
PARAM_OUT_OF_RANGE = 40302
CONTEXT_OVERFLOW = 40303
ENGINE_ERROR = 50001         # INTERNAL_ERROR: the engine failed
UNAVAILABLE = 50006          # CONTROLLER_WORKER_TIMEOUT: the model cannot be served now (no memory); retry


def frame(obj: dict) -> bytes:
    """One frame of the stream, raw UTF-8 (no \\uXXXX escapes for Chinese)."""
    return json.dumps(obj, ensure_ascii=False).encode() + b"\0"


def cached_tokens(usage: dict) -> int | None:
    """How many of the prompt's tokens a worker's KV cache already held, where its frame's usage
    says (OpenAI's usage.prompt_tokens_details.cached_tokens), else None."""
    n = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return None if n is None else int(n)


def error_frame(message: str, code: int = VALIDATION_ERROR) -> bytes:
    return frame({"text": message, "error_code": code})


class FrameDecoder:
    """Splits a stream of frames that TCP may cut anywhere."""

    def __init__(self):
        self._buf = b""

    def feed(self, chunk: bytes) -> list[dict]:
        self._buf += chunk
        *frames, self._buf = self._buf.split(b"\0")
        return [json.loads(f) for f in frames if f.strip()]

    @property
    def leftover(self) -> bytes:
        return self._buf
