"""Does a model fit its memory budget? Estimated before loading, from the files.

resident ≈ weights + KV cache (context × concurrency, or one context where llama.cpp's slots share
it) + the backend's runtime overhead
(measured on this project's 2-core/24 GiB machines: RSS of a loaded, idle worker minus its
weights) + prompt processing (context × concurrency, where the runtime allocates it per
request), so that no request, however long its prompt, takes a worker over its budget.
The backend supplies the shape and the overhead; this module knows none by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from deploy import backends
from deploy.backends import ModelShape
from deploy.registry.config import ModelEntry
from deploy.registry.sizes import fmt_size


@dataclass
class FitEstimate:
    weights: int
    kv_cache: int
    overhead: int
    budget: int
    prefill: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead + self.prefill

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def describe(self) -> str:
        prefill = f" + prompt processing {fmt_size(self.prefill)}" if self.prefill else ""
        return (f"weights {fmt_size(self.weights)} + KV cache {fmt_size(self.kv_cache)} + runtime "
                f"{fmt_size(self.overhead)}{prefill} = {fmt_size(self.total)} against a budget of {fmt_size(self.budget)}")


def estimate(entry: ModelEntry, shape: ModelShape | None = None) -> FitEstimate:
    """A draft model for speculation counts with its weights and its own KV cache for every slot."""
    backend = backends.of(entry)
    shape = shape or backend.shape(entry)
    cached, prompts = backend.kv_tokens(entry), entry.context_length * entry.concurrency
    draft = shape.draft
    return FitEstimate(shape.weight_bytes + (draft.weight_bytes if draft else 0),
                       shape.kv_bytes(cached) + (draft.kv_bytes(cached) if draft else 0),
                       backend.runtime_overhead + shape.extra_bytes, entry.memory_budget,
                       shape.prefill_bytes_per_token * prompts)


def spare(entry: ModelEntry, shape: ModelShape | None = None) -> int:
    """What the budget leaves beyond the estimate: room for caches that grow with use (llama.cpp's
    prompt cache), which must never take the worker past its budget."""
    est = estimate(entry, shape)
    return max(0, est.budget - est.total)


class DoesNotFit(Exception):
    pass


def require_fit(entry: ModelEntry, shape: ModelShape | None = None) -> FitEstimate:
    est = estimate(entry, shape)
    if not est.fits:
        raise DoesNotFit(
            f"model '{entry.name}' does not fit its memory budget: {est.describe()}. "
            f"Fix: raise memory_budget to at least {fmt_size(est.total)}, or lower context_length "
            f"({entry.context_length}) or concurrency ({entry.concurrency}), or use a smaller quantisation."
        )
    return est


BUDGET_MARGIN = 1.15


def suggest_budget(raw: dict, margin: float = BUDGET_MARGIN) -> str:
    """A budget for an entry as written (a dict without one): the estimate plus `margin`,
    rounded up to 0.1 GiB, so the fit check passes and the cost is plain to see."""
    probe = ModelEntry.model_validate({**raw, "memory_budget": 1 << 40}, context={"catalogue": backends.catalogue()})
    return f"{math.ceil(estimate(probe).total * margin / 1024**3 * 10) / 10}GiB"
