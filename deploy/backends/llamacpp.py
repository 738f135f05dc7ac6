"""The llama.cpp backend: GGUF files, served by our worker on xllamacpp (llamacpp_worker)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from deploy.backends.base import Backend, ModelShape
from deploy.registry.options import BackendOptions


def quantisation(meta: dict) -> str | None:
    """'Q4_K_M' and the like, from the file's general.file_type (llama.cpp's llama_ftype)."""
    import gguf

    ftype = meta.get("general.file_type")
    try:
        return gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        return None


class LlamaCppOptions(BackendOptions):
    """The llama.cpp backend's own entry fields."""

    backend: ClassVar[str] = "llama.cpp"
    summary: ClassVar[str] = "GGUF files (quantised), batched in parallel slots"

    stream_interval_ms: int = Field(default=50, ge=0, le=1000,
                                    description="Send streamed text at most this often (0: every token).")
    mmap: bool = Field(default=False, description="Map the GGUF instead of reading it. Reading (the default) "
                       "keeps the weights once, in the worker's own memory: with mmap, llama.cpp's repacked copy and "
                       "the mapped file both count in RSS (1.79 vs 1.21 GiB for the 1.5B default), and decode was no "
                       "faster (reading: 1.03 and 1.15 times mmap's speed in two runs of bench/llamacpp_memory.py). "
                       "mmap lets replicas of one file share its pages.")
    poll: int | None = Field(default=None, ge=0, le=100,
                             description="How hard waiting compute threads spin (0-100, llama.cpp's default 50); "
                                         "lower it for models that share cores.")
    flash_attention: Literal["auto", "on", "off"] = Field(
        default="auto", description="Flash attention; auto: llama.cpp's choice (on, on this CPU). At 7B, "
        "two streams at once on the engine decoded 4.7-5.4 tok/s in aggregate with it on and 6.7-8.3 off (one "
        "stream: the same); through a worker the difference was within noise; off cost 16 and 29 percent of "
        "prompt speed at 0.5B in two runs (bench/llamacpp_batching.py, bench/seed_scale.py).")
    embeddings: bool = Field(default=True, description="Also serve /v1/embeddings and /v1/rerank (mean-pooled, "
                             "L2-normed) from the same engine and weights; bench/bench.py measures what it costs in "
                             "decode speed: 1 percent in the latest run (44.9 vs 45.3 tok/s), within noise in earlier "
                             "ones. false turns it off.")

    @property
    def flash_attention_on(self) -> bool | None:
        """True/False to set it, None for llama.cpp's own choice."""
        return None if self.flash_attention == "auto" else self.flash_attention == "on"

    def path_problem(self, path: Path) -> str | None:
        if path.is_file():
            return None
        return (f"the llama.cpp backend needs a .gguf file, {path} is a folder. Fix: point to the .gguf file "
                f"inside it, or use backend = \"transformers\".")


class LlamaCpp(Backend):
    options = LlamaCppOptions
    features = frozenset({"json", "logprobs", "embeddings", "batching"})
    runtime_overhead = 300 * 1024**2
    # VSZ - RSS of a loaded idle worker is ~1.0 GB; 3 GiB leaves room for load-time mappings
    address_space_headroom = 3 * 1024**3

    def shape(self, entry) -> ModelShape:
        from deploy.backends.gguf import read_gguf

        path = entry.resolved_path
        meta, _ = read_gguf(path)
        arch = meta.get("general.architecture")
        n_heads = int(meta.get(f"{arch}.attention.head_count"))
        n_kv = int(meta.get(f"{arch}.attention.head_count_kv") or n_heads)
        key_len = meta.get(f"{arch}.attention.key_length")
        head_dim = int(key_len) if key_len else int(meta.get(f"{arch}.embedding_length")) // n_heads
        return ModelShape(path.stat().st_size, int(meta.get(f"{arch}.block_count")), n_kv, head_dim, 2)

    def describe(self, entry) -> dict:
        from deploy.backends.gguf import read_gguf

        try:
            quant = quantisation(read_gguf(entry.resolved_path)[0])
        except (OSError, ValueError):
            quant = None
        return {"backend": self.name, "quantisation": quant, "poll": entry.options.poll}

    def features_for(self, entry) -> frozenset[str]:
        return self.features if entry.options.embeddings else self.features - {"embeddings"}

    def takes_download(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".gguf"

    def build_worker(self, entry, controller_url: str, worker_url: str):
        from deploy.backends.llamacpp_worker import LlamaCppWorker

        return LlamaCppWorker(entry, controller_url, worker_url)
