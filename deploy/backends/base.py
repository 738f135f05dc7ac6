"""The one protocol every backend implements. The launcher, the fit estimate, the memory
limits, the registry's path check and status reports ask the backend object; none of them
knows a backend by name."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.registry.config import ModelEntry


@dataclass
class ModelShape:
    """What the memory estimate needs to know about a model."""
    weight_bytes: int        # as they will sit in memory
    n_layers: int
    n_kv_heads: int
    head_dim: int
    kv_bytes_per_value: int  # f16 cache in llama.cpp, the compute dtype in torch
    # Transient memory of one request's prompt processing, per prompt token (0 where the
    # runtime allocates its compute buffers at load, as llama.cpp does).
    prefill_bytes_per_token: int = 0


class ConfigProblem(Exception):
    """The entry cannot work as written (the message names the fix); the worker exits 78."""


class Backend(ABC):
    name: str                      # the value of `backend` in model_paths.toml
    summary: str                   # one line for the README's field table and `check`
    runtime_overhead: int          # measured RSS of a loaded, idle worker beyond weights + KV
    address_space_headroom: int    # RLIMIT_AS beyond the budget (runtimes reserve more than they touch)
    # What its workers can do beyond plain generation ("json": response_format, "logprobs",
    # "embeddings"); the API gate refuses a request that needs more with a 400 that says so.
    features: frozenset[str] = frozenset()

    @abstractmethod
    def path_problem(self, path: Path) -> str | None:
        """Why `path` cannot be this backend's model (with the fix), or None if it can."""

    @abstractmethod
    def shape(self, entry: ModelEntry) -> ModelShape:
        """The model's shape, read from its files, for the fit estimate."""

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """Backend-specific facts for status and reports (dtype, quantisation, ...)."""
        return {"backend": self.name}

    def features_for(self, entry: ModelEntry) -> frozenset[str]:
        """What this entry's worker can do (its /fleet_info lists it for the API gate)."""
        return self.features

    def host_warnings(self, entry: ModelEntry) -> list[str]:
        """What may stop it on this host without being an error in the file."""
        return []

    def takes_download(self, path: Path) -> bool:
        """Whether a freshly downloaded file or folder should be served by this backend."""
        return False

    @abstractmethod
    def build_worker(self, entry: ModelEntry, controller_url: str, worker_url: str):
        """The FastChat worker object (served by deploy.worker.app); a backend that runs a
        program of its own replaces the process instead (os.exec) and never returns."""
