"""The `openai` backend: a model served by an OpenAI-compatible server that already runs elsewhere
(vLLM or SGLang on a GPU host, llama.cpp's server, Ollama, another fleet's API). The entry's
`path` is the server's base URL (…/v1); our worker (upstream_worker) registers with the controller
like any other and answers FastChat's worker protocol by calling it. The prompt is rendered with
the entry's chat template, as every worker does, and sent to the upstream's /v1/completions.

Its memory budget and cores describe the proxy, not the remote model: there is nothing to load.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from deploy.backends.base import Backend, ModelShape
from deploy.registry.host import is_loopback
from deploy.registry.options import BackendOptions
from deploy.registry.paths import expand_path

PROXY_OVERHEAD = 160 * 1024**2  # measured RSS of an idle proxy worker (FastChat, httpx): 0.15 GiB


class UpstreamOptions(BackendOptions):
    """The openai backend's own entry fields."""

    backend: ClassVar[str] = "openai"
    summary: ClassVar[str] = ("an OpenAI-compatible server running elsewhere (vLLM, SGLang, llama.cpp's server, "
                              "Ollama, another fleet); `path` is its base URL, e.g. http://gpu-host:8000/v1")

    upstream_model: str = Field(min_length=1, description="The model's name on the upstream server (its /v1/models).")
    upstream_key_file: str | None = Field(
        default=None, description="A file holding the upstream's API key (mode 600; never logged or shown).")

    upstream_route: Literal["auto", "completions", "chat"] = Field(
        default="auto", description="How prompts reach the upstream. completions: rendered with this entry's "
        "chat_template and sent to /v1/completions (one template source for the whole fleet); chat: the messages "
        "sent to /v1/chat/completions, rendered by the upstream's own template; auto: completions, or chat where "
        "the upstream has no completions route.")

    @field_validator("upstream_key_file")
    @classmethod
    def _file(cls, v):
        return v or None

    def key_path(self) -> Path | None:
        return expand_path(self.upstream_key_file) if self.upstream_key_file else None

    def location_problem(self, entry) -> str | None:
        """`path` is a URL here, not a file."""
        parts = urlsplit(entry.path)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return (f"'{entry.path}' is not a server's URL. Fix: give the OpenAI-compatible server's base URL, e.g. "
                    f"http://gpu-host:8000/v1")
        key = self.key_path()
        if key and not key.is_file():
            return f"upstream_key_file {key} does not exist. Fix: write the upstream's API key there (chmod 600)."
        return None

    def host_warnings(self, entry) -> list[str]:
        url = urlsplit(entry.path)
        if url.scheme == "http" and url.hostname and not is_loopback(url.hostname):
            return [f"the upstream {entry.path} is plain http beyond loopback: prompts, answers and its key cross "
                    f"the network in the clear. Fix: use https, or run the fleet over a VPN or SSH tunnel."]
        return []


class Upstream(Backend):
    options = UpstreamOptions
    features = frozenset({"logprobs", "embeddings", "batching"})
    runtime_overhead = PROXY_OVERHEAD
    address_space_headroom = 2 * 1024**3

    def shape(self, entry) -> ModelShape:
        """Nothing of the remote model is in this machine's memory: the fit check sees the proxy."""
        return ModelShape(weight_bytes=0, n_layers=0, n_kv_heads=0, head_dim=0, kv_bytes_per_value=0)

    def describe(self, entry) -> dict:
        return {"backend": self.name, "upstream": entry.path, "upstream_model": entry.options.upstream_model}

    def build_worker(self, entry, controller_url: str, worker_url: str):
        from deploy.backends.upstream_worker import UpstreamWorker

        return UpstreamWorker(entry, controller_url, worker_url)
