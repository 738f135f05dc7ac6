"""One shape for every error the API server sends: OpenAI's `{"error": {...}}`, with the HTTP status
OpenAI would use. Clients (the official one included) read `error.message` and decide on retries
by status, so a client's mistake must never look like our failure (5xx, which they retry)."""
from __future__ import annotations

import json


class ClientError(Exception):
    """A request we refuse, with the status, the field at fault and what to do instead."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}
        self.model = ""  # the model the refused request named, when its body said (for the metrics)

    def body(self) -> bytes:
        return error_body(self.message, self.kind, self.param, self.code)


RETRY_AFTER_S = 5  # what a 503 tells clients to wait: a worker restarts, or routing catches up, in seconds


def unavailable(message: str, code: str, param: str | None = None) -> ClientError:
    """A 503 that will pass: the official client (and ask_all) wait Retry-After and ask again."""
    return ClientError(503, message, param=param, code=code, kind="model_unavailable",
                       headers={"Retry-After": str(RETRY_AFTER_S)})


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}},
                      ensure_ascii=False).encode()


# FastChat's ErrorCode values (fastchat/constants.py) -> HTTP status and OpenAI type
_FASTCHAT_CODES = {
    40001: (400, "invalid_request_error"),   # VALIDATION_TYPE_ERROR
    40101: (401, "authentication_error"), 40102: (401, "authentication_error"), 40103: (403, "permission_error"),
    40301: (404, "invalid_request_error"),   # INVALID_MODEL
    40302: (400, "invalid_request_error"),   # PARAM_OUT_OF_RANGE
    40303: (400, "invalid_request_error"),   # CONTEXT_OVERFLOW
    42901: (429, "rate_limit_error"), 42902: (429, "rate_limit_error"), 42903: (503, "overloaded_error"),
    50005: (503, "model_unavailable"),       # CONTROLLER_NO_WORKER
    50006: (503, "model_unavailable"),       # CONTROLLER_WORKER_TIMEOUT
}


def status_of_worker_code(code) -> tuple[int, str]:
    """The HTTP status and OpenAI error type of a FastChat worker's error code."""
    return _FASTCHAT_CODES.get(code, (500, "server_error"))


_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
              422: "invalid_request_error", 429: "rate_limit_error", 503: "model_unavailable"}


def reshape(status: int, body: bytes) -> tuple[int, bytes]:
    """Any error response FastChat or Starlette produced -> (status, OpenAI-shaped body).
    FastChat answers every error with 400 and `{"object": "error", "code": 4xxxx}`; Starlette
    with `{"detail": ...}` or plain text."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and "message" in data["error"]:
        return status, body
    if isinstance(data, dict) and data.get("object") == "error":
        code = data.get("code")
        new_status, kind = status_of_worker_code(code)
        return new_status, error_body(str(data.get("message", "")), kind, code=str(code))
    if isinstance(data, dict) and "detail" in data:
        message = data["detail"] if isinstance(data["detail"], str) else json.dumps(data["detail"], ensure_ascii=False)
    else:
        message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    return status, error_body(message, _BY_STATUS.get(status, "server_error" if status >= 500 else
                                                       "invalid_request_error"))


# Anthropic's error types by HTTP status (its Messages API clients read these)
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 421: "permission_error",
                    429: "rate_limit_error", 503: "overloaded_error"}


def as_anthropic(status: int, body: bytes) -> bytes:
    """An OpenAI-shaped error body in Anthropic's shape: {"type": "error", "error": {type, message}}."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}, ensure_ascii=False).encode()
