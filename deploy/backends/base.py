"""The one protocol every backend implements, and the one every worker it builds implements. The
launcher, the fit estimate, the memory limits, the worker app and status reports ask these
objects; none of them knows a backend by name."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Iterator, Protocol, runtime_checkable

from deploy.registry.options import BackendOptions

if TYPE_CHECKING:
    from deploy.registry.config import ModelEntry

# What a worker can do beyond plain generation; the API refuses a request that needs a feature its
# model lacks with a 400 naming the feature, and the web UI reads them too.
FEATURES = {
    "json": "response_format (JSON output)",
    "grammar": "'grammar' (llama.cpp's GBNF, its server's extension)",
    "tools": "tool calling ('tools')",
    "logprobs": "logprobs",
    "embeddings": "embeddings",
    "batching": "concurrent requests batched in parallel slots",
}


@dataclass
class ModelShape:
    """What the memory estimate needs to know about a model."""
    weight_bytes: int        # as they will sit in memory
    n_layers: int
    n_kv_heads: int
    head_dim: int
    kv_bytes_per_value: float  # llama.cpp: its kv_cache_type (2 for f16); torch: the compute dtype
    # Transient memory of one request's prompt processing, per prompt token (0 where the
    # runtime allocates its compute buffers at load, as llama.cpp does).
    prefill_bytes_per_token: int = 0
    draft: ModelShape | None = None  # a draft model loaded beside it for speculation (same slots)
    # Buffers the entry's options add beyond the runtime overhead (speculation's logits).
    extra_bytes: int = 0
    n_vocab: int = 0

    def kv_bytes(self, tokens: int) -> int:
        """K and V, per layer, per KV head, per head dimension, per token."""
        return math.ceil(2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_bytes_per_value * tokens)


class ConfigProblem(Exception):
    """The entry cannot work as written (the message names the fix); the worker exits 78."""


@runtime_checkable
class FleetWorker(Protocol):
    """What deploy.worker.app serves FastChat's worker protocol with (FastChat's BaseModelWorker
    provides the status half). A worker is built asleep: the model-free parts answer at once, and
    the app calls `load` (in a thread) before the first request that needs the model, and `unload`
    when its host's memory pool needs the room. Frames are NUL-terminated JSON
    (deploy.wire.frames): cumulative `text`, `error_code` (0, or FastChat's code with the reason in
    `text`), `usage`, `finish_reason`, and `logprobs`/`chat_logprobs` when asked."""

    model_names: list[str]
    context_len: int
    limit_worker_concurrency: int

    def load(self) -> None:
        """Read the model into memory (blocking; raises if it cannot)."""

    def unload(self) -> None:
        """Drop the model and give its memory back to the system; the worker stays up."""

    def get_status(self) -> dict: ...

    def get_queue_length(self) -> int: ...

    def get_conv_template(self) -> dict: ...

    def generate_stream_gate(self, params: dict) -> AsyncIterator[bytes] | Iterator[bytes]:
        """The answer as frames; async or blocking (the app runs a blocking one off its loop)."""

    def generate_gate(self, params: dict) -> dict | Awaitable[dict]:
        """The last frame of the same answer, as a dict."""

    def count_token(self, params: dict) -> dict | Awaitable[dict]:
        """{"count": tokens the engine will process for params["prompt"], "error_code": 0}."""

    # Optional, for a worker with a tokenizer of its own (not an upstream server's):
    # prompt_ids(params) -> list[int] (or awaitable): the ids the model is fed for params["prompt"]
    # (with "prompt_parts": a chat prompt, each message's text tokenised as text); /worker_tokenize.

    def text_for_tokenizer(self, prompt: str) -> str:
        """The text this worker's tokenizer gets for a prompt, so that the tokens begin with the
        model's own prefix once (deploy/registry/templates.py: text_for_tokenizer)."""


class Backend(ABC):
    """How models of one kind run: its entry options class (what the registry validates), its
    features, and the worker it builds."""

    options: type[BackendOptions]  # its own entry fields and entry checks
    runtime_overhead: int          # measured RSS of a loaded, idle worker beyond weights + KV
    address_space_headroom: int    # RLIMIT_AS beyond the budget (runtimes reserve more than they touch)
    features: frozenset[str] = frozenset()  # keys of FEATURES

    @property
    def name(self) -> str:
        return self.options.backend

    @property
    def summary(self) -> str:
        return self.options.summary

    @abstractmethod
    def shape(self, entry: ModelEntry) -> ModelShape:
        """The model's shape, read from its files, for the fit estimate."""

    def kv_tokens(self, entry: ModelEntry) -> int:
        """The most tokens its KV cache holds at once: a context per request it answers at once."""
        return entry.context_length * entry.concurrency

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """Backend-specific facts for status and reports (dtype, quantisation, ...)."""
        return {"backend": self.name}

    def features_for(self, entry: ModelEntry) -> frozenset[str]:
        """What this entry's worker can do (its /fleet_info lists it for the API and the web UI)."""
        return self.features

    def takes_download(self, path) -> bool:
        """Whether a freshly downloaded file or folder should be served by this backend."""
        return False

    @abstractmethod
    def build_worker(self, entry: ModelEntry, controller_url: str, worker_url: str) -> FleetWorker:
        """The worker, asleep (deploy.worker.app loads it when it is needed), served by deploy.worker.app."""


def return_memory_to_the_system() -> None:
    """After the model's tensors are freed: collect what refers to them, and ask glibc to give the
    freed heap back (free() keeps it for reuse, so RSS would stay at the loaded size)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps what it keeps
        pass
