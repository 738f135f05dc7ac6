"""The llama.cpp backend: GGUF files, served by our worker on xllamacpp (llamacpp_worker)."""
from __future__ import annotations

from pathlib import Path

from deploy.backends.base import Backend, ModelShape



def quantisation(meta: dict) -> str | None:
    """'Q4_K_M' and the like, from the file's general.file_type (llama.cpp's llama_ftype)."""
    import gguf

    ftype = meta.get("general.file_type")
    try:
        return gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        return None


class LlamaCpp(Backend):
    name = "llama.cpp"
    summary = "GGUF files (quantised), batched in parallel slots"
    features = frozenset({"json", "logprobs", "embeddings"})
    runtime_overhead = 300 * 1024**2
    # VSZ - RSS of a loaded idle worker is ~1.0 GB; 3 GiB leaves room for load-time mappings
    address_space_headroom = 3 * 1024**3

    def path_problem(self, path: Path) -> str | None:
        if path.is_file():
            return None
        return (f"the llama.cpp backend needs a .gguf file, {path} is a folder. Fix: point to the .gguf file "
                f"inside it, or use backend = \"transformers\".")

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
        return {"backend": self.name, "quantisation": quant, "poll": entry.poll}

    def features_for(self, entry) -> frozenset[str]:
        return self.features if entry.embeddings else self.features - {"embeddings"}

    def takes_download(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".gguf"

    def build_worker(self, entry, controller_url: str, worker_url: str):
        from deploy.backends.llamacpp_worker import LlamaCppWorker

        return LlamaCppWorker(entry, controller_url, worker_url)
