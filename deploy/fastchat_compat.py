"""The only place we patch FastChat 0.2.36 at run time. Each patch is narrow,
documented, and `check_upstream()` fails (and tests/test_compat.py with it)
the moment the upstream code we rely on changes.

1. Streaming in the OpenAI API server. Its stream generators call
   `chunk.json(exclude_unset=True, ensure_ascii=False)`; pydantic 2 raises
   "dumps_kwargs keyword arguments are no longer supported", the exception
   escapes the generator after the headers went out, and clients see an empty
   body. We rebind the two stream-response classes the generators construct
   to subclasses whose `.json()` accepts those keywords and emits raw UTF-8
   via `model_dump_json` (no \\uXXXX escapes for Chinese text).

2. Chat templates in the web UI. `gradio_web_server.State` looks a template up
   by *model name* through the adapter table and silently falls back to
   `one_shot` for names no adapter matches. We replace that lookup, in the
   web UI process only, with the template the model's worker reports, which
   is the one configured in model_paths.toml; the API server already asks
   the worker, so both paths now agree.
"""
from __future__ import annotations

import inspect
import logging

import requests

log = logging.getLogger("deploy.fastchat_compat")

STREAM_CLASSES = ("ChatCompletionStreamResponse", "CompletionStreamResponse")
_STREAM_CALL = "chunk.json(exclude_unset=True, ensure_ascii=False)"


class UpstreamChanged(RuntimeError):
    pass


def _pydantic1_json(self, *, ensure_ascii: bool = True, **kwargs) -> str:
    """pydantic-1 style `.json(**dumps_kwargs)` on a pydantic-2 model; output stays raw UTF-8."""
    return self.model_dump_json(**kwargs)


def check_upstream() -> None:
    """Fail loudly if the FastChat code these patches assume has changed."""
    from fastchat.serve import gradio_web_server, openai_api_server

    for gen in ("chat_completion_stream_generator", "generate_completion_stream_generator"):
        if _STREAM_CALL not in inspect.getsource(getattr(openai_api_server, gen)):
            raise UpstreamChanged(f"openai_api_server.{gen} no longer calls `{_STREAM_CALL}`; "
                                  f"re-check patch 1 in deploy/fastchat_compat.py")
    for name in STREAM_CLASSES:
        if not hasattr(openai_api_server, name):
            raise UpstreamChanged(f"openai_api_server no longer has {name}; re-check patch 1")
    state_src = inspect.getsource(gradio_web_server.State.__init__)
    if "get_conversation_template(model_name)" not in state_src:
        raise UpstreamChanged("gradio_web_server.State no longer calls get_conversation_template(model_name); "
                              "re-check patch 2 in deploy/fastchat_compat.py")


def patch_openai_streaming() -> None:
    from fastchat.serve import openai_api_server

    check_upstream()
    for name in STREAM_CLASSES:
        cls = getattr(openai_api_server, name)
        if getattr(cls, "_fleet_patched", False):
            continue
        patched = type(name, (cls,), {"json": _pydantic1_json, "_fleet_patched": True, "__module__": __name__})
        setattr(openai_api_server, name, patched)


class WorkerTemplates:
    """model name -> the Conversation its worker serves, fetched from the controller/worker."""

    def __init__(self, controller_url: str):
        self.controller_url = controller_url.rstrip("/")

    def __call__(self, model_name: str):
        from deploy.templates import conversation_from_dict

        addr = requests.post(f"{self.controller_url}/get_worker_address", json={"model": model_name},
                             timeout=10).json()["address"]
        if not addr:
            raise RuntimeError(f"model '{model_name}' has no registered worker; it may have stopped. "
                               f"Check `python -m deploy status` and the worker's log in logs/.")
        conv = requests.post(f"{addr}/worker_get_conv_template", timeout=10).json()["conv"]
        return conversation_from_dict(conv)


def patch_webui_templates(controller_url: str) -> None:
    from fastchat.serve import gradio_web_server

    check_upstream()
    gradio_web_server.get_conversation_template = WorkerTemplates(controller_url)


def apply_all(controller_url: str) -> None:
    patch_openai_streaming()
    patch_webui_templates(controller_url)
