"""Download a model from ModelScope and register it in model_paths.toml.

The seed models come with known settings (template, remote code, dtype);
any other model gets them from the options. The memory budget defaults to
the estimate for the downloaded files plus 15 %, so the launcher's fit
check passes and the user sees what it costs.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from deploy.config import Backend, ModelEntry, cache_dir, parse_cores
from deploy.fit import estimate

# ModelScope id -> entry settings that make the seed models work.
PRESETS: dict[str, dict] = {
    "qwen/Qwen-7B-Chat": {"name": "qwen-7b-chat", "chat_template": "qwen-7b-chat", "trust_remote_code": True,
                          "context_length": 2048},
    "ZhipuAI/chatglm3-6b": {"name": "chatglm3-6b", "chat_template": "chatglm3", "trust_remote_code": True,
                            "context_length": 2048},
    "deepseek-ai/deepseek-llm-7b-chat": {"name": "deepseek-llm-7b-chat", "chat_template": "deepseek-chat",
                                         "context_length": 2048},
}


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


def build_entry(model_id: str, folder: Path, port: int, cores: list[int], overrides: dict) -> dict:
    preset = PRESETS.get(model_id, {})
    raw = {"name": model_id.split("/")[-1].lower(), "dtype": "auto", **preset, **overrides,
           "path": str(folder), "backend": overrides.get("backend", Backend.TRANSFORMERS.value),
           "port": port, "cores": cores, "source": f"modelscope:{model_id}"}
    if "chat_template" not in raw:
        raise DownloadError(f"no chat template known for '{model_id}'. Fix: pass --chat-template NAME "
                            f"(see `python -m deploy templates`).")
    probe = ModelEntry.model_validate({**raw, "memory_budget": raw.get("memory_budget", 1 << 40)})
    if "memory_budget" not in overrides:
        need = estimate(probe).total * 1.15
        raw["memory_budget"] = f"{math.ceil(need / 1024**3 * 10) / 10}GiB"
    return raw


def next_free_port(registry_data: dict) -> int:
    used = {m.get("port") for m in registry_data.get("models", [])}
    d = registry_data.get("deployment", {})
    used |= {d.get("controller_port", 21001), d.get("api_port", 8000), d.get("webui_port", 7860)}
    port = 21002
    while port in used:
        port += 1
    return port


def main(argv: list[str] | None = None) -> int:
    import tomllib

    from deploy.registry_edit import _path, add_entries

    p = argparse.ArgumentParser(prog="scripts/download_modelscope.py", description=__doc__)
    p.add_argument("model_id", help="e.g. qwen/Qwen-7B-Chat, ZhipuAI/chatglm3-6b, deepseek-ai/deepseek-llm-7b-chat")
    p.add_argument("--revision")
    p.add_argument("--from-folder", help="register an already downloaded folder instead of downloading")
    p.add_argument("--registry")
    p.add_argument("--name")
    p.add_argument("--cores", default="0-1", help="cores to pin to (default 0-1)")
    p.add_argument("--memory-budget", help="default: estimated need + 15%%")
    p.add_argument("--chat-template")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--context-length", type=int)
    args = p.parse_args(argv)

    try:
        folder = Path(args.from_folder) if args.from_folder else snapshot(args.model_id, args.revision)
        if not (folder / "config.json").exists():
            raise DownloadError(f"{folder} has no config.json, so it is not a Hugging Face model folder. "
                                f"Fix: point --from-folder at the folder that holds config.json.")
        path = _path(args.registry)
        data = tomllib.loads(path.read_text()) if path.exists() else {}
        overrides = {k: v for k, v in {"name": args.name, "memory_budget": args.memory_budget,
                                       "chat_template": args.chat_template, "dtype": args.dtype,
                                       "context_length": args.context_length}.items() if v}
        entry = build_entry(args.model_id, folder.resolve(), next_free_port(data), parse_cores(args.cores), overrides)
        added = add_entries([entry], args.registry)
    except DownloadError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    if not added:
        print(f"'{entry['name']}' is already in {path}; nothing changed.")
        return 0
    print(f"registered '{entry['name']}' ({folder}, budget {entry['memory_budget']}, port {entry['port']}).\n"
          f"Start it: python -m deploy up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
