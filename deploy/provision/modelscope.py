"""Download a model from ModelScope and register it in model_paths.toml
(`python -m deploy download MODEL_ID`).

The seed models come with known settings (template, remote code, dtype); any other model gets
them from the options. The backend is the one that serves what was downloaded as it is, and
the memory budget defaults to the estimate for the downloaded files plus 15 %, so the
launcher's fit check passes and the user sees what it costs.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from deploy import backends
from deploy.registry.config import ModelEntry, parse_cores
from deploy.registry.paths import FleetPaths, cache_dir
from deploy.worker.fit import estimate

# ModelScope id -> entry settings that make the seed models work.
PRESETS: dict[str, dict] = {
    "qwen/Qwen-7B-Chat": {"name": "qwen-7b-chat", "chat_template": "qwen-7b-chat", "trust_remote_code": True,
                          "context_length": 2048},
    "ZhipuAI/chatglm3-6b": {"name": "chatglm3-6b", "chat_template": "chatglm3", "trust_remote_code": True,
                            "context_length": 2048},
    "deepseek-ai/deepseek-llm-7b-chat": {"name": "deepseek-llm-7b-chat", "chat_template": "deepseek-chat",
                                         "context_length": 2048},
}
BUDGET_MARGIN = 1.15


class DownloadError(Exception):
    pass


def snapshot(model_id: str, revision: str | None = None) -> Path:
    """The real ModelScope download (resumes; files land under $FLEET_CACHE/modelscope)."""
    from modelscope import snapshot_download

    try:
        return Path(snapshot_download(model_id, revision=revision, cache_dir=str(cache_dir() / "modelscope")))
    except Exception as e:  # network, unknown id, auth: all end here with the model id and a fix
        raise DownloadError(
            f"could not download '{model_id}' from ModelScope: {type(e).__name__}: {e}. "
            f"Fix: check the id on modelscope.cn and your network; to register a folder you already "
            f"downloaded, pass --from-folder PATH."
        ) from None


def budget_for(raw: dict) -> str:
    """The fit estimate of an entry (as written) plus the margin, rounded up to 0.1 GiB."""
    probe = ModelEntry.model_validate({**raw, "memory_budget": 1 << 40})
    need = estimate(probe).total * BUDGET_MARGIN
    return f"{math.ceil(need / 1024**3 * 10) / 10}GiB"


def build_entry(model_id: str, folder: Path, port: int, cores: list[int], overrides: dict) -> dict:
    backend = overrides.get("backend") or getattr(backends.for_download(folder), "name", None)
    if backend is None:
        raise DownloadError(f"{folder} is neither a GGUF file nor a Hugging Face folder (no config.json). "
                            f"Fix: point --from-folder at the folder that holds config.json, or at a .gguf file.")
    raw = {"name": model_id.split("/")[-1].lower(), "dtype": "auto", **PRESETS.get(model_id, {}), **overrides,
           "path": str(folder), "backend": backend, "port": port, "cores": cores,
           "source": f"modelscope:{model_id}"}
    if "chat_template" not in raw:
        raise DownloadError(f"no chat template known for '{model_id}'. Fix: pass --chat-template NAME "
                            f"(see `python -m deploy templates`).")
    raw.setdefault("memory_budget", budget_for(raw))
    return raw


def download_and_register(paths: FleetPaths, model_id: str, overrides: dict, revision: str | None = None,
                          from_folder: str | None = None) -> int:
    from deploy.registry.edit import add_entries, next_free_port, read_data

    try:
        folder = Path(from_folder) if from_folder else snapshot(model_id, revision)
        port = overrides.pop("port", None) or next_free_port(read_data(paths))
        cores = parse_cores(overrides.pop("cores", "0-1"))
        entry = build_entry(model_id, folder.resolve(), port, cores, overrides)
        added = add_entries([entry], paths)
    except DownloadError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 1
    if not added:
        print(f"'{entry['name']}' is already in {paths.registry}; nothing changed.")
        return 0
    print(f"registered '{entry['name']}' ({folder}, budget {entry['memory_budget']}, port {entry['port']}).\n"
          f"Start it: python -m deploy up")
    return 0
