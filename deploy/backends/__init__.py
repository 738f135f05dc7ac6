"""Backends: one module per way of running a model, each implementing `base.Backend` (path
check, shape for the fit estimate, runtime overhead, address-space headroom, description,
building the worker). Nothing outside this package knows a backend by name.

Adding a backend is one module and one line in BACKENDS below.

May import: deploy.registry (types only); heavy imports (torch, xllamacpp, FastChat's worker)
happen inside build_worker, so validating a registry stays fast.
"""
from __future__ import annotations

from pathlib import Path

from deploy.backends.base import Backend, ConfigProblem, ModelShape
from deploy.backends.llamacpp import LlamaCpp
from deploy.backends.transformers import Transformers
from deploy.backends.vllm import Vllm

BACKENDS: dict[str, Backend] = {b.name: b for b in (LlamaCpp(), Transformers(), Vllm())}

__all__ = ["Backend", "ConfigProblem", "ModelShape", "BACKENDS", "get", "names", "for_download"]


def names() -> list[str]:
    return list(BACKENDS)


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend '{name}'; use one of: {', '.join(BACKENDS)}") from None


def for_download(path: Path) -> Backend | None:
    """The backend that serves a freshly downloaded file or folder as it is."""
    return next((b for b in BACKENDS.values() if b.takes_download(path)), None)
