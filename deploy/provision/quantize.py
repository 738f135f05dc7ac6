"""`python -m deploy quantize NAME [--type Q4_K_M]`: turn a registered Hugging Face folder (the seed
models as downloaded) into a quantised GGUF with llama.cpp's own converter and quantiser, write it
next to the model, and register it as a llama.cpp entry with the same chat template and a budget
from the fit estimate; supervisord.conf is re-rendered.

A finished GGUF is stamped, so running it again converts nothing twice.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from deploy import backends
from deploy.backends.transformers import hf_weights
from deploy.registry.config import ModelEntry
from deploy.registry.paths import FleetPaths, tools_dir
from deploy.registry.sizes import fmt_size

TYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0")
# bytes per parameter of each type, measured on llama.cpp's outputs (for the disk check)
BYTES_PER_PARAM = {"Q4_K_M": 0.61, "Q4_K_S": 0.58, "Q5_K_M": 0.71, "Q6_K": 0.82, "Q8_0": 1.07}


class QuantizeError(Exception):
    pass


def output_path(entry: ModelEntry, qtype: str) -> Path:
    folder = entry.resolved_path
    return folder.parent / f"{folder.name}-{qtype.lower()}.gguf"


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def disk_check(entry: ModelEntry, qtype: str) -> str:
    """Refuse before starting when the disk cannot hold the bf16 intermediate and the result."""
    on_disk, stored = hf_weights(entry.resolved_path)
    params = on_disk / stored
    need = int(params * 2 + params * BYTES_PER_PARAM[qtype] + 256 * 1024**2)
    out_dir = entry.resolved_path.parent
    free = shutil.disk_usage(out_dir).free
    tools = tools_dir()
    tools.mkdir(parents=True, exist_ok=True)
    tools_free = shutil.disk_usage(tools).free
    line = (f"disk: needs {fmt_size(need)} in {out_dir} (bf16 intermediate {fmt_size(params * 2)} + {qtype} "
            f"{fmt_size(params * BYTES_PER_PARAM[qtype])}); {fmt_size(free)} free")
    if free < need:
        raise QuantizeError(f"not enough disk space to quantise '{entry.name}': {line}. Fix: free space in "
                            f"{out_dir}, or move the model to a larger disk and update its path.")
    if tools_free < 3 * 1024**3:
        raise QuantizeError(f"the llama.cpp tools need about 3 GiB in {tools} ({fmt_size(tools_free)} free). "
                            f"Fix: free space there or set FLEET_TOOLS to a folder on a larger disk.")
    return line


def quantize_model(paths: FleetPaths, name: str, qtype: str, overrides: dict) -> int:
    from deploy.provision.llamacpp_tools import ToolError, ensure_tools
    from deploy.registry.edit import add_entries, next_free_port
    from deploy.registry.placement import propose_for
    from deploy.backends.fit import suggest_budget

    try:
        reg = backends.load_registry(paths.registry)
        entry = reg.get(name)
        if qtype not in TYPES:
            raise QuantizeError(f"--type {qtype} is not one of {', '.join(TYPES)}.")
        folder = entry.resolved_path
        if not (folder / "config.json").is_file():
            raise QuantizeError(f"'{name}' is not a Hugging Face folder ({folder} has no config.json); only those "
                                f"can be quantised. Fix: pick an entry with backend transformers.")
        out = output_path(entry, qtype)
        print(f"[1/4] {disk_check(entry, qtype)}", flush=True)
        if _stamp(out).exists() and out.exists():
            print(f"[2/4] llama.cpp tools: not needed\n[3/4] {out} present (stamped): nothing converted twice")
        else:
            print("[2/4] llama.cpp's converter and quantiser", flush=True)
            tools = ensure_tools()
            print("[3/4] converting and quantising", flush=True)
            bf16 = out.with_name(out.name + ".bf16.partial")
            part = out.with_name(out.name + ".partial")
            try:
                tools.convert(folder, bf16, "bf16")
                tools.quantize(bf16, part, qtype, threads=entry.n_threads,
                               config=json.loads((folder / "config.json").read_text()))
            finally:
                bf16.unlink(missing_ok=True)
            part.replace(out)
            _stamp(out).write_text(json.dumps({"from": str(folder), "type": qtype}))
        raw: dict = {}

        def entry_for(data: dict) -> list[dict]:
            """The GGUF's entry, its port and cores chosen from the registry as it is at the write."""
            # placed as if it replaces the folder it comes from, which rarely runs beside it
            placed = propose_for({"models": [m for m in data.get("models", []) if m.get("name") != entry.name]})
            raw.update(name=f"{entry.name.removesuffix('-hf')}-{qtype.lower()}", path=str(out),
                       backend=backends.for_download(out).name, port=next_free_port(data), cores=placed.cores,
                       threads=placed.threads, chat_template=entry.chat_template, context_length=entry.context_length,
                       source=f"quantised to {qtype} from {entry.name}" + (f" ({entry.source})" if entry.source else ""))
            if "cores" not in overrides:
                print(f"      cores {placed.cores} ({placed.reason}); --cores chooses others", flush=True)
            else:
                raw.pop("threads")
            raw.update(overrides)
            raw.setdefault("memory_budget", suggest_budget(raw))
            return [raw]

        added = add_entries(entry_for, paths, backends.catalogue())
    except (QuantizeError, ToolError) as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 1
    verb = "registered" if added else "already registered"
    print(f"[4/4] {verb} '{raw['name']}' ({out.name}, {fmt_size(out.stat().st_size)}, budget {raw['memory_budget']}, "
          f"port {raw['port']}); supervisord.conf re-rendered.\nStart it: python -m deploy up")
    return 0
