"""Download a model from ModelScope and register it in model_paths.toml
(`python -m deploy download NAME-or-ID`).

Short names (deploy/provision/catalog.toml) carry the settings that make the seed models work
(template, remote code, context); any other id gets them from the options. The download is
ModelScope's own client (progress bars, resumed downloads, sha256 checks); the backend is the one
that serves what was downloaded as it is, and the memory budget defaults to the fit estimate plus
15 %, so the launcher's fit check passes and the user sees what it costs.
"""
from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from deploy import backends
from deploy.provision.runtimes import RuntimeBuildError, ensure_for
from deploy.registry.config import parse_cores
from deploy.registry.paths import FleetPaths, cache_dir
from deploy.registry.placement import propose_for
from deploy.registry.sizes import fmt_size
from deploy.registry.templates import AUTO
from deploy.backends.fit import suggest_budget

CATALOG = Path(__file__).with_name("catalog.toml")
ENDPOINT_ENV = "MODELSCOPE_ENDPOINT"  # ModelScope's own setting, read by its client
DEFAULT_ENDPOINT = "https://www.modelscope.cn"


class DownloadError(Exception):
    pass


@dataclass
class CatalogEntry:
    name: str
    id: str
    chat_template: str = AUTO
    trust_remote_code: bool = False
    context_length: int | None = None
    kv_unified: bool = False  # llama.cpp's slots share one context (a long trace fits in any of them)
    gguf: str | None = None  # a GGUF repository: the pattern of the one file to fetch
    download: str | None = None  # that file's published size
    kv_shape: list[int] | None = None  # [layers, KV heads, head size], from the model's config.json

    def fit_estimate(self) -> int | None:
        """Memory its entry would be budgeted before the file is here: the estimate the download
        makes from the file, made from the published size and shape instead."""
        if not (self.gguf and self.download and self.kv_shape):
            return None
        from deploy.backends.base import ModelShape
        from deploy.backends.fit import BUDGET_MARGIN, estimate
        from deploy.registry.sizes import parse_size

        probe = backends.parse_registry({"models": [{
            **self.entry_settings(), "path": f"{self.name}.gguf", "backend": "llama.cpp", "port": 21101, "cores": [0],
            "memory_budget": "1TiB"}]}, "catalog.toml").models[0]
        layers, kv_heads, head = self.kv_shape
        return int(estimate(probe, ModelShape(parse_size(self.download), layers, kv_heads, head, 2.0)).total
                   * BUDGET_MARGIN)

    def entry_settings(self) -> dict:
        out = {"name": self.name, "chat_template": self.chat_template}
        if self.trust_remote_code:
            out["trust_remote_code"] = True
        if self.context_length:
            out["context_length"] = self.context_length
        if self.kv_unified:
            out["kv_unified"] = True
        return out


def catalog() -> dict[str, CatalogEntry]:
    return {name: CatalogEntry(name=name, **v) for name, v in tomllib.loads(CATALOG.read_text()).items()}


def lookup(name_or_id: str) -> CatalogEntry | None:
    """A short name, or a ModelScope id the catalog knows (case-insensitive)."""
    cat = catalog()
    if name_or_id in cat:
        return cat[name_or_id]
    return next((c for c in cat.values() if c.id.lower() == name_or_id.lower()), None)


def endpoint() -> str:
    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


def _explain(model_id: str, e: Exception) -> str:
    text = f"{type(e).__name__}: {e}"
    unreachable = any(k in text for k in ("ConnectionError", "Connection refused", "Max retries", "NameResolution",
                                          "timed out", "ConnectTimeout", "Network is unreachable", "E1001"))
    if unreachable:
        return (f"cannot reach ModelScope at {endpoint()} to download '{model_id}'. Fix: check your network, or set "
                f"{ENDPOINT_ENV} to a reachable ModelScope endpoint; for a folder already downloaded, pass --from-folder PATH.")
    first = " ".join(text.split())[:600]
    return (f"could not download '{model_id}' from ModelScope ({endpoint()}): {first}. Fix: check the id on ModelScope "
            f"and rerun (finished files are kept, a partial one resumes); for a folder already downloaded, pass "
            f"--from-folder PATH.")


def snapshot(model_id: str, revision: str | None = None, gguf: str | None = None) -> Path:
    """The real ModelScope download into $FLEET_CACHE/modelscope: a folder, or for a GGUF repository
    the one file matching `gguf`."""
    from modelscope import snapshot_download

    try:
        folder = Path(snapshot_download(model_id, revision=revision, cache_dir=str(cache_dir() / "modelscope"),
                                        allow_patterns=[gguf] if gguf else None))
    except Exception as e:  # network, unknown id, a corrupted file: one line with the endpoint and the fix
        raise DownloadError(_explain(model_id, e)) from None
    if not gguf:
        return folder
    files = sorted(folder.rglob("*.gguf"))  # a split GGUF is loaded from its first part
    if not files:
        raise DownloadError(f"'{model_id}' has no file matching {gguf}. Fix: check the repository's files on ModelScope.")
    return files[0]


def build_entry(model_id: str, path: Path, port: int, cores: list[int], overrides: dict) -> dict:
    known = lookup(model_id)
    backend = overrides.get("backend") or getattr(backends.for_download(path), "name", None)
    if backend is None:
        raise DownloadError(f"{path} is neither a GGUF file nor a Hugging Face folder (no config.json). "
                            f"Fix: point --from-folder at the folder that holds config.json, or at a .gguf file.")
    raw = {"name": model_id.split("/")[-1].lower(), **(known.entry_settings() if known else {}), **overrides,
           "path": str(path), "backend": backend, "port": port, "cores": cores,
           "source": f"modelscope:{known.id if known else model_id}"}
    raw.setdefault("chat_template", AUTO)
    raw.setdefault("memory_budget", suggest_budget(raw))
    entry = backends.parse_registry({"models": [raw]}, "download").models[0]
    if entry.chat_template == AUTO and entry.options.shipped_template(entry) == "":
        raise DownloadError(f"'{model_id}' ships no chat template, so chat_template = \"auto\" has nothing to render. "
                            f"Fix: pass --chat-template NAME (see `python -m deploy templates`).")
    return raw


def download_and_register(paths: FleetPaths, name_or_id: str, overrides: dict, revision: str | None = None,
                          from_folder: str | None = None) -> int:
    from deploy.registry.edit import add_entries, next_free_port

    known = lookup(name_or_id)
    model_id = known.id if known else name_or_id
    try:
        if from_folder:
            path = Path(from_folder)
        else:
            print(f"downloading {model_id} from ModelScope ({endpoint()}) into {cache_dir() / 'modelscope'} ...",
                  flush=True)
            path = snapshot(model_id, revision, known.gguf if known else None)
        built: list[dict] = []

        def entry_for(data: dict) -> list[dict]:
            """The entry, its port and cores chosen from the registry as it is at the write."""
            port = overrides.pop("port", None) or next_free_port(data)
            if "cores" not in overrides:
                placed = propose_for(data)
                overrides.setdefault("threads", placed.threads)
                print(f"cores {placed.cores} ({placed.reason}); --cores chooses others", flush=True)
            cores = parse_cores(overrides.pop("cores", None) or placed.cores)
            built.append(build_entry(name_or_id, path.resolve(), port, cores, overrides))
            return built

        added = add_entries(entry_for, paths, backends.catalogue())
        entry = built[0]
    except DownloadError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 1
    if not added:
        print(f"'{entry['name']}' is already in {paths.registry}; nothing changed.")
        return 0
    print(f"registered '{entry['name']}' ({path}, {entry['backend']}, template {entry['chat_template']}, "
          f"budget {entry['memory_budget']}, port {entry['port']}).")
    try:  # the runtime its own code needs (an old transformers), built the first time such a model comes
        ensure_for(backends.load_registry(paths.registry))
    except RuntimeBuildError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 1
    print("Start it: python -m deploy up")
    return 0


def catalog_table() -> str:
    """The short names, with the budget the download will give each where it is known before."""
    rows = [f"{'name':31} {'ModelScope id':44} {'template':13} {'budget':8} notes"]
    for c in catalog().values():
        notes = ", ".join(x for x in ("GGUF (llama.cpp)" if c.gguf else "HF folder",
                                      "remote code" if c.trust_remote_code else "",
                                      f"{c.download} download" if c.download else "") if x)
        budget = c.fit_estimate()
        rows.append(f"{c.name:31} {c.id:44} {c.chat_template:13} {fmt_size(budget) if budget else '-':8} {notes}")
    return "\n".join(rows + ["", "budget: the fit estimate plus 15 % at the entry's context_length (the download "
                              "computes it again from the file); '-' is known only once the files are here."])
