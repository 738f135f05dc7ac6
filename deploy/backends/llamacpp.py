"""The llama.cpp backend: GGUF files, served by our worker on xllamacpp (llamacpp_worker)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from deploy.backends.base import Backend, ModelShape
from deploy.registry.options import BackendOptions
from deploy.registry.paths import expand_path


def quantisation(meta: dict) -> str | None:
    """'Q4_K_M' and the like, from the file's general.file_type (llama.cpp's llama_ftype)."""
    import gguf

    ftype = meta.get("general.file_type")
    try:
        return gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        return None


# Bytes per cached K or V value: f16, and llama.cpp's block formats (32 values in 34 and 18 bytes).
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
DRAFT_MAX = 8      # tokens a draft model proposes at a time (llama.cpp's default: 3)
NGRAM_MAX = 64     # the most an n-gram mode drafts at a time (llama.cpp's ngram-mod default)
BATCH = {True: 512, False: 2048}  # tokens per engine step, with embeddings on (n_ubatch) and off


def speculation_logits(opts, concurrency: int, n_vocab: int) -> int:
    """Speculation checks every drafted token, so the engine keeps logits for each: up to a step's
    tokens × vocabulary × 4 bytes (bench/speculation.py saw a worker killed by its budget without it)."""
    if opts.speculation == "off":
        return 0
    per_slot = (DRAFT_MAX if opts.speculation == "draft" else NGRAM_MAX) + 1
    return min(BATCH[opts.embeddings], concurrency * per_slot) * n_vocab * 4 + (
        DRAFT_RUNTIME if opts.speculation == "draft" else 0)


# A draft model's own context beside the model's: its compute buffers and its own logits, which the
# runtime overhead (one context) leaves out (tests/test_speculation.py loads one within its estimate).
DRAFT_RUNTIME = 256 * 1024**2


class LlamaCppOptions(BackendOptions):
    """The llama.cpp backend's own entry fields."""

    backend: ClassVar[str] = "llama.cpp"
    summary: ClassVar[str] = "GGUF files (quantised), batched in parallel slots"

    stream_interval_ms: int = Field(default=50, ge=0, le=1000,
                                    description="Send streamed text at most this often (0: every token).")
    mmap: bool = Field(default=False, description="Map the GGUF instead of reading it. Reading (the default) "
                       "keeps the weights once, in the worker's own memory; with mmap, llama.cpp's repacked copy and "
                       "the mapped file both count in the worker's memory, and decode is no faster. Set it so that "
                       "replicas of one file share its pages, or with repack = false for fast switches. Figures: "
                       "bench/README.md, 'Memory against the budgets'.")
    repack: bool = Field(default=True, description="Repack the weights for this CPU's kernels as they load (llama.cpp's "
                         "default). false (with mmap = true) loads much faster and may decode slower: set it for "
                         "models that are swapped in and out of a small memory pool often. Figures: "
                         "bench/README.md, 'What a load is made of'.")
    poll: int | None = Field(default=None, ge=0, le=100,
                             description="How hard waiting compute threads spin (0-100, llama.cpp's default 50); "
                                         "lower it for models that share cores.")
    flash_attention: Literal["auto", "on", "off"] = Field(
        default="auto", description="Flash attention; auto: llama.cpp's choice. Set \"off\" for a 7B model that "
        "answers several streams at once, where it can decode faster in aggregate; it costs prompt speed. Figures: "
        "bench/README.md, 'Concurrent streams on one 7B worker'.")
    embeddings: bool = Field(default=True, description="Also serve /v1/embeddings and /v1/rerank (mean-pooled, "
                             "L2-normed) from the same engine and weights; false turns it off. What it costs in "
                             "decode speed: bench/README.md, 'Embeddings'.")

    keep_conversations: bool = Field(
        default=True, description="When the model is unloaded to make room, save the conversations its slots hold "
        "(their KV cache, to a private temporary folder) and restore them when it loads again: a conversation that "
        "comes back after the swap does not process its prompt again. Costs disk while unloaded: the KV cache of "
        "each slot in use. Figures: bench/README.md, 'Slot save and restore'.")
    kv_unified: bool = Field(
        default=False, description="The slots share one KV cache of context_length tokens (llama.cpp's --kv-unified, "
        "its server's default when it picks the number of slots): any one request may use the whole context, for the "
        "memory of one context instead of one per slot; requests answered at once share it, and one that finds no "
        "room left ends with an error. Set it for long prompts (agents, long documents) on a model that is also "
        "asked short questions at once.")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field(
        default="f16", description="The KV cache's number format (K and V): q8_0 and q4_0 hold it in less memory, "
        "which the fit estimate counts; quantised V needs flash attention (auto or on). Speed, memory and changed "
        "puzzle answers per type: bench/README.md, 'KV cache types'.")

    speculation: Literal["off", "ngram-mod", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "draft"] = Field(
        default="off", description="Speculative decoding: the engine drafts tokens and the model checks several at "
        "once. The ngram modes need no second model: they draft from what the conversation already holds, and pay "
        "where an answer repeats its context (editing code, quoting a text); draft: a smaller model of the same "
        "vocabulary (draft_model) drafts, which on few cores competes with the model for them. What each mode does "
        "per workload: bench/speculation.py.")
    draft_model: str | None = Field(default=None, description="speculation = \"draft\": the draft model's GGUF "
                                    "(same tokenizer, e.g. Qwen2.5-0.5B for a Qwen2.5 model), counted by the fit "
                                    "estimate with its own KV cache. '$FLEET_CACHE' and '~' are expanded.")

    @model_validator(mode="after")
    def _combinations(self):
        if self.kv_cache_type != "f16" and self.flash_attention == "off":
            raise ValueError(f"kv_cache_type = \"{self.kv_cache_type}\" needs flash attention: llama.cpp quantises the "
                             f"V cache only with it. Fix: flash_attention = \"auto\", or kv_cache_type = \"f16\"")
        if (self.speculation == "draft") != bool(self.draft_model):
            raise ValueError("speculation = \"draft\" and draft_model go together. Fix: name the draft model's GGUF "
                             "in draft_model with speculation = \"draft\", or use an ngram mode without draft_model")
        return self

    def draft_path(self) -> Path | None:
        return expand_path(self.draft_model) if self.draft_model else None

    def location_problem(self, entry) -> str | None:
        draft = self.draft_path()
        if draft is not None and not draft.is_file():
            return f"draft_model {draft} is not a file. Fix: point it at the draft model's .gguf."
        return super().location_problem(entry)

    def shipped_template(self, entry) -> str | None:
        from deploy.backends.gguf import GGUFError, read_gguf

        try:
            return read_gguf(entry.resolved_path)[0].get("tokenizer.chat_template") or ""
        except (OSError, GGUFError):
            return None  # the path check says what is wrong with the file

    @property
    def flash_attention_on(self) -> bool | None:
        """True/False to set it, None for llama.cpp's own choice."""
        return None if self.flash_attention == "auto" else self.flash_attention == "on"

    def path_problem(self, path: Path) -> str | None:
        if path.is_file():
            return None
        return (f"the llama.cpp backend needs a .gguf file, {path} is a folder. Fix: point to the .gguf file "
                f"inside it, or use backend = \"transformers\".")


def gguf_shape(path: Path, kv_bytes: float, draft: ModelShape | None = None) -> ModelShape:
    """Weights and KV cache geometry from a GGUF's metadata."""
    from deploy.backends.gguf import read_gguf

    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    n_heads = int(meta.get(f"{arch}.attention.head_count"))
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv") or n_heads)
    key_len = meta.get(f"{arch}.attention.key_length")
    head_dim = int(key_len) if key_len else int(meta.get(f"{arch}.embedding_length")) // n_heads
    n_vocab = next((t["dims"][1] for t in tensors if t["name"] == "token_embd.weight"), 0)
    return ModelShape(path.stat().st_size, int(meta.get(f"{arch}.block_count")), n_kv, head_dim, kv_bytes, draft=draft,
                      n_vocab=int(n_vocab))


class LlamaCpp(Backend):
    options = LlamaCppOptions
    features = frozenset({"json", "grammar", "tools", "logprobs", "embeddings", "batching"})
    runtime_overhead = 300 * 1024**2
    # VSZ - RSS of a loaded idle worker is ~1.0 GB; 3 GiB leaves room for load-time mappings
    address_space_headroom = 3 * 1024**3

    def kv_tokens(self, entry) -> int:
        return entry.context_length * (1 if entry.options.kv_unified else entry.concurrency)

    def shape(self, entry) -> ModelShape:
        opts = entry.options
        draft = opts.draft_path()
        shape = gguf_shape(entry.resolved_path, KV_BYTES[opts.kv_cache_type],
                           gguf_shape(draft, KV_BYTES["f16"]) if draft else None)
        shape.extra_bytes = speculation_logits(opts, entry.concurrency, shape.n_vocab)
        return shape

    def describe(self, entry) -> dict:
        from deploy.backends.gguf import read_gguf

        try:
            quant = quantisation(read_gguf(entry.resolved_path)[0])
        except (OSError, ValueError):
            quant = None
        return {"backend": self.name, "quantisation": quant, "poll": entry.options.poll,
                "kv_cache_type": entry.options.kv_cache_type, "speculation": entry.options.speculation}

    def features_for(self, entry) -> frozenset[str]:
        return self.features if entry.options.embeddings else self.features - {"embeddings"}

    def takes_download(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".gguf"

    def build_worker(self, entry, controller_url: str, worker_url: str):
        from deploy.backends.llamacpp_worker import LlamaCppWorker

        return LlamaCppWorker(entry, controller_url, worker_url)
