"""Add entries to model_paths.toml without losing the user's comments, then re-render.

The `add-model` options are generated from `ModelEntry`'s fields, so the CLI
can never disagree with validation.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import tomlkit

from deploy.config import DEFAULT_REGISTRY, ModelEntry, RegistryError, parse_registry

REGISTRY_HEADER = """\
# The registry of downloaded models: one [[models]] entry per model, one FastChat worker each.
# Reference: README.md, "model_paths.toml". After editing: python -m deploy render
# '$FLEET_CACHE' expands to the model cache (default ~/.cache/fastchat-fleet).
"""


def _path(registry: str | None) -> Path:
    return Path(registry or os.environ.get("FLEET_REGISTRY") or DEFAULT_REGISTRY)


def _load_doc(path: Path) -> tomlkit.TOMLDocument:
    if path.exists():
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    doc = tomlkit.document()
    for line in REGISTRY_HEADER.strip().splitlines():
        doc.add(tomlkit.comment(line.lstrip("# ")))
    doc.add(tomlkit.nl())
    dep = tomlkit.table()
    for k, v in {"host": "127.0.0.1", "controller_port": 21001, "api_port": 8000, "webui_port": 7860,
                 "log_dir": "logs"}.items():
        dep.add(k, v)
    doc.add("deployment", dep)
    doc.add(tomlkit.nl())
    doc.add("models", tomlkit.aot())
    return doc


def _entry_table(entry: dict) -> tomlkit.items.Table:
    t = tomlkit.table()
    for k, v in entry.items():
        t.add(k, v)
    return t


def add_entries(entries: list[dict], registry: str | None = None, replace: bool = False) -> list[str]:
    """Append entries (skipping names already present unless replace); validates and re-renders."""
    from deploy.render import write

    path = _path(registry)
    doc = _load_doc(path)
    if "models" not in doc:
        doc.add("models", tomlkit.aot())
    models = doc["models"]
    existing = {m["name"]: i for i, m in enumerate(models)}
    added = []
    for e in entries:
        if e["name"] in existing:
            if not replace:
                continue
            models[existing[e["name"]]] = _entry_table(e)
        else:
            models.append(_entry_table(e))
        added.append(e["name"])
    reg = parse_registry(tomlkit.loads(tomlkit.dumps(doc)).unwrap(), str(path))  # validate before writing
    if added or not path.exists():
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    write(reg, path.parent / "supervisord.conf")  # the conf lives beside its registry
    return added


def default_entries() -> list[dict]:
    from deploy.default_models import load_manifest

    ggufs, converted = load_manifest()
    out = []
    for g in ggufs:
        out.append({"name": g.name, "path": f"$FLEET_CACHE/{g.file}", **g.entry,
                    "source": "pypi:" + (g.packages[0] if len(g.packages) == 1 else
                                         f"{g.packages[0].split('==')[0]}..part{len(g.packages)}=={g.packages[0].split('==')[1]}")})
    for c in converted:
        out.append({"name": c.name, "path": f"$FLEET_CACHE/{c.folder}", **c.entry,
                    "source": f"converted from {c.from_model} (GGUF -> HF, bf16)"})
    return out


def ensure_default_entries(registry: str | None = None) -> None:
    added = add_entries(default_entries(), registry)
    print(f"model_paths.toml: {'added ' + ', '.join(added) if added else 'default entries present'}")


def add_entry_options(parser: argparse.ArgumentParser) -> None:
    for name, f in ModelEntry.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kwargs = {"help": f.description, "dest": name}
        if f.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = None
        parser.add_argument(flag, required=f.is_required(), **kwargs)
    parser.add_argument("--replace", action="store_true", help="replace an entry of the same name")


def entry_from_args(args: argparse.Namespace) -> dict:
    raw = {k: getattr(args, k) for k in ModelEntry.model_fields if getattr(args, k, None) is not None}
    for k in ("port", "context_length", "concurrency", "threads"):
        if k in raw:
            raw[k] = int(raw[k])
    entry = parse_registry({"models": [raw]}, "add-model").models[0]  # same rules, same messages as the file
    out = entry.model_dump(mode="json", exclude_defaults=True)
    out.update({k: raw[k] for k in ("memory_budget", "cores") if k in raw})  # keep the user's spelling
    out["name"], out["path"], out["backend"] = entry.name, entry.path, entry.backend.value
    return out


def add_entry(entry: dict, registry: str | None = None, replace: bool = False) -> None:
    if not add_entries([entry], registry, replace=replace or False):
        raise RegistryError([f"an entry named '{entry['name']}' exists already. Fix: pick another name or pass --replace."])
    print(f"added '{entry['name']}' to {_path(registry)}")
