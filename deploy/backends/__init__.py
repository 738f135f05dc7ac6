"""Backends: one module per way of running a model, each a `base.Backend` (its entry options, the
shape for the fit estimate, runtime overhead, address-space headroom, features, building the
worker). Nothing outside this package and the registry's catalogue knows a backend by name.

Adding a backend is one module and one line in BACKENDS below. The registry validates each entry
with the options class of its backend, from `catalogue()`: load the file with `load_registry`.

May import: deploy.registry, deploy.wire; heavy imports (torch, xllamacpp, FastChat's worker)
happen inside build_worker, so validating a registry stays fast.
"""
from __future__ import annotations

import os
from pathlib import Path

from deploy.backends.base import FEATURES, Backend, ConfigProblem, FleetWorker, ModelShape
from deploy.backends.llamacpp import LlamaCpp
from deploy.backends.transformers import Transformers
from deploy.backends.upstream import Upstream
from deploy.registry import config
from deploy.registry.config import ModelEntry, Registry
from deploy.registry.options import Catalogue

BACKENDS: dict[str, Backend] = {b.name: b for b in (LlamaCpp(), Transformers(), Upstream())}

# Backends an older model_paths.toml may name, and what to do instead.
RETIRED = {
    "vllm": "FastChat's vLLM worker registered without the fleet secret, so the controller refused it. Fix: "
            "run `vllm serve` on the GPU host and add it as backend = \"openai\" (python -m deploy add-model "
            "--upstream URL --upstream-model NAME ...; docs/multi-host.md, 'A GPU host running vLLM')",
}

__all__ = ["Backend", "ConfigProblem", "FleetWorker", "ModelShape", "FEATURES", "BACKENDS", "catalogue", "get",
           "of", "names", "for_download", "load_registry", "parse_registry"]


def catalogue() -> Catalogue:
    return Catalogue({name: b.options for name, b in BACKENDS.items()}, RETIRED)


def names() -> list[str]:
    return list(BACKENDS)


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend '{name}'; use one of: {', '.join(BACKENDS)}") from None


def of(entry: ModelEntry) -> Backend:
    """The backend object that sizes and runs this entry."""
    return get(entry.backend)


def for_download(path: Path) -> Backend | None:
    """The backend that serves a freshly downloaded file or folder as it is."""
    return next((b for b in BACKENDS.values() if b.takes_download(path)), None)


def parse_registry(data: dict, source: str = "model_paths.toml") -> Registry:
    return config.parse_registry(data, catalogue(), source)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """model_paths.toml (--registry, $FLEET_REGISTRY or the repository's), validated with every
    backend's options."""
    return config.load_registry(path, catalogue())
