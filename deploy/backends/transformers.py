"""The transformers backend: Hugging Face folders (the seed models as downloaded), served by
FastChat's own ModelWorker loaded the way the entry says (transformers_worker)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from deploy.backends.base import Backend, ModelShape
from deploy.registry.options import BackendOptions

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The runtime for models whose own code (trust_remote_code) was written for transformers before 4.42:
# ChatGLM3-6B's breaks from 4.42, Qwen-7B-Chat's from 4.57 (deploy/provision/runtimes.py builds it).
REMOTE_CODE_RUNTIME = "transformers-4.41"
REMOTE_CODE_BEFORE = (4, 42)


def _version(text) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def runtime_for(folder: Path) -> str:
    """The runtime a folder's model needs, from its config.json: remote code saved with a transformers
    older than REMOTE_CODE_BEFORE (its `transformers_version`) runs in REMOTE_CODE_RUNTIME; anything
    else, remote code of today included, in the main one."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "main"
    saved_with = _version(cfg.get("transformers_version"))
    old = "auto_map" in cfg and saved_with is not None and saved_with < REMOTE_CODE_BEFORE
    return REMOTE_CODE_RUNTIME if old else "main"


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


def hf_weights(folder: Path) -> tuple[int, int]:
    """(bytes of weights on disk, bytes per stored value from config.json's torch_dtype)."""
    cfg = json.loads((folder / "config.json").read_text())
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files), _DTYPE_BYTES.get(str(cfg.get("torch_dtype", "float32")), 4)


def hf_shape(folder: Path, dtype: str) -> ModelShape:
    """From config.json and the weight files' sizes, scaled from the stored to the loaded dtype."""
    cfg = json.loads((folder / "config.json").read_text())
    on_disk, stored = hf_weights(folder)
    load = _DTYPE_BYTES.get(resolve_dtype(dtype), 4)
    n_layers = cfg.get("num_hidden_layers") or cfg.get("num_layers") or cfg.get("n_layer")
    n_heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    n_kv = cfg.get("num_key_value_heads") or cfg.get("multi_query_group_num") or n_heads
    head_dim = cfg.get("kv_channels") or cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    ffn = cfg.get("intermediate_size") or cfg.get("ffn_hidden_size") or 4 * cfg["hidden_size"]
    # FastChat runs the whole prompt in one forward pass: its activations are about 12 FFN-wide
    # vectors per token (measured: 931 MiB over the idle worker for a 4,000-token prompt on
    # Qwen2.5-0.5B in fp32, FFN 4,864; 398 MiB for 2,000 tokens)
    return ModelShape(on_disk * load // stored, int(n_layers), int(n_kv), int(head_dim), load,
                      prefill_bytes_per_token=12 * int(ffn) * load)


class TransformersOptions(BackendOptions):
    """The transformers backend's own entry fields."""

    backend: ClassVar[str] = "transformers"
    summary: ClassVar[str] = "Hugging Face folders, FastChat's own generation code (the seed models as downloaded)"

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; auto: bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), "
                                    "else float32.")
    trust_remote_code: bool = Field(
        default=False, description="Allow the model folder's own Python code (Qwen-7B-Chat, ChatGLM3 need it).")
    runtime: Literal["auto", "main", "transformers-4.41"] = Field(
        default="auto", description="The Python environment the worker runs in. auto: transformers-4.41 for a model "
        "whose own code (trust_remote_code) was written for a transformers older than 4.42 (its config.json's "
        "transformers_version: ChatGLM3-6B, Qwen-7B-Chat), else main; set it to override.")

    def runtime_of(self, entry) -> str:
        return runtime_for(entry.resolved_path) if self.runtime == "auto" else self.runtime

    def shipped_template(self, entry) -> str | None:
        """tokenizer_config.json's chat_template, or chat_template.jinja beside it (where
        transformers saves it since 4.43)."""
        folder = entry.resolved_path
        if (folder / "chat_template.jinja").is_file():
            return (folder / "chat_template.jinja").read_text(encoding="utf-8")
        try:
            template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            return ""
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        return template or ""

    def path_problem(self, path: Path) -> str | None:
        if (path / "config.json").is_file():
            return None
        return (f"{path} is not a Hugging Face model folder (no config.json). Fix: point to the folder that "
                f"holds config.json, or use backend = \"llama.cpp\" for a GGUF file.")


class Transformers(Backend):
    options = TransformersOptions
    features = frozenset({"embeddings", "logprobs"})  # FastChat's get_embeddings; logprobs: hf_generation
    runtime_overhead = 900 * 1024**2
    # a worker for a 2.5 GB model needed about 6.6 GiB of address space to load (tests/test_stack.py)
    address_space_headroom = 5 * 1024**3

    def shape(self, entry) -> ModelShape:
        return hf_shape(entry.resolved_path, entry.options.dtype)

    def describe(self, entry) -> dict:
        """The dtype it computes in, and the one its weights are stored in: a bf16 checkpoint runs
        in float32 on a CPU without bf16 arithmetic, and the page says both."""
        try:
            stored = json.loads((entry.resolved_path / "config.json").read_text()).get("torch_dtype")
        except (OSError, ValueError):
            stored = None
        return {"backend": self.name, "dtype": resolve_dtype(entry.options.dtype), "weights_dtype": stored}

    def takes_download(self, path: Path) -> bool:
        return (path / "config.json").is_file()

    def build_worker(self, entry, controller_url: str, worker_url: str):
        from deploy.backends.transformers_worker import make_transformers_worker

        return make_transformers_worker(entry, controller_url, worker_url)
