"""Does a model fit its memory budget? Estimated before loading, from the files.

resident ≈ weights + KV cache (context × concurrency) + runtime overhead.
The overheads were measured on this project's 2-core/24 GiB machines
(see README, "What the memory budget enforces"): RSS of a loaded, idle worker
minus its weights.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from deploy.config import Backend, ModelEntry
from deploy.sizes import fmt_size

# Measured RSS of a worker process beyond weights + KV (Python, FastAPI, engine buffers).
RUNTIME_OVERHEAD = {
    Backend.LLAMACPP: 300 * 1024**2,
    Backend.TRANSFORMERS: 900 * 1024**2,
    Backend.VLLM: 2 * 1024**3,
}
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ModelShape:
    weight_bytes: int       # as they will sit in memory
    n_layers: int
    n_kv_heads: int
    head_dim: int
    kv_bytes_per_value: int  # f16 cache in llama.cpp, the compute dtype in torch


@dataclass
class FitEstimate:
    weights: int
    kv_cache: int
    overhead: int
    budget: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def describe(self) -> str:
        return (f"weights {fmt_size(self.weights)} + KV cache {fmt_size(self.kv_cache)} + runtime "
                f"{fmt_size(self.overhead)} = {fmt_size(self.total)} against a budget of {fmt_size(self.budget)}")


def gguf_shape(path: Path) -> ModelShape:
    from deploy.gguf_meta import read_gguf

    meta, _ = read_gguf(path)
    field = meta.get

    arch = field("general.architecture")
    n_layers = int(field(f"{arch}.block_count"))
    n_heads = int(field(f"{arch}.attention.head_count"))
    n_kv = int(field(f"{arch}.attention.head_count_kv") or n_heads)
    key_len = field(f"{arch}.attention.key_length")
    head_dim = int(key_len) if key_len else int(field(f"{arch}.embedding_length")) // n_heads
    return ModelShape(path.stat().st_size, n_layers, n_kv, head_dim, 2)


def hf_shape(folder: Path, dtype: str) -> ModelShape:
    cfg = json.loads((folder / "config.json").read_text())
    stored = _DTYPE_BYTES.get(str(cfg.get("torch_dtype", "float32")), 4)
    load = _DTYPE_BYTES.get(resolve_dtype(dtype), 4)
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    on_disk = sum(f.stat().st_size for f in files)
    n_layers = cfg.get("num_hidden_layers") or cfg.get("num_layers") or cfg.get("n_layer")
    n_heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    n_kv = cfg.get("num_key_value_heads") or cfg.get("multi_query_group_num") or n_heads
    head_dim = cfg.get("kv_channels") or cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    return ModelShape(on_disk * load // stored, int(n_layers), int(n_kv), int(head_dim), load)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(dtype: str) -> str:
    """'auto': bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX): measured here
    1.6x faster than float32 at half the memory (bench/bench.py); float32 elsewhere, where
    torch emulates bf16 slowly."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if cpu_has_bf16() else "float32"


def model_shape(entry: ModelEntry) -> ModelShape:
    p = entry.resolved_path
    return gguf_shape(p) if entry.backend is Backend.LLAMACPP else hf_shape(p, entry.dtype)


def estimate(entry: ModelEntry, shape: ModelShape | None = None) -> FitEstimate:
    shape = shape or model_shape(entry)
    tokens = entry.context_length * entry.concurrency
    kv = 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * shape.kv_bytes_per_value * tokens
    return FitEstimate(shape.weight_bytes, kv, RUNTIME_OVERHEAD[entry.backend], entry.memory_budget)


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
