"""Add entries to model_paths.toml without losing the user's comments, then re-render. Every
write is validated first, with the caller's backend catalogue (deploy.backends.catalogue())."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import tomlkit

from deploy.registry.config import Deployment, parse_registry
from deploy.registry.locks import held
from deploy.registry.options import Catalogue
from deploy.registry.paths import FleetPaths
from deploy.registry.render import write

REGISTRY_HEADER = """\
# The registry of downloaded models: one [[models]] entry per model, one FastChat worker each.
# Reference: docs/configuration.md, "Every field". After editing: python -m deploy render
# '$FLEET_CACHE' expands to the model cache (default ~/.cache/fastchat-fleet).
"""


def one_writer(paths: FleetPaths):
    """One edit of the registry at a time: `quantize` or `download` in two terminals each read it,
    pick the next free port and write it back, so without the lock one entry is lost or two share a
    port."""
    return held(paths.registry.with_name(f".{paths.registry.name}.lock"), f"editing {paths.registry.name}")


def _load_doc(path: Path) -> tomlkit.TOMLDocument:
    if path.exists():
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    doc = tomlkit.document()
    for line in REGISTRY_HEADER.strip().splitlines():
        doc.add(tomlkit.comment(line.lstrip("# ")))
    doc.add(tomlkit.nl())
    dep = tomlkit.table()
    for k, v in Deployment().model_dump(exclude_none=True).items():
        dep.add(k, v)
    doc.add("deployment", dep)
    doc.add(tomlkit.nl())
    doc.add("models", tomlkit.aot())
    return doc


def read_data(paths: FleetPaths) -> dict:
    """The registry as plain data (empty if it does not exist yet), for choosing ports and names."""
    return _load_doc(paths.registry).unwrap()


def next_free_port(registry_data: dict, start: int = 21002) -> int:
    """The first port from `start` that no worker or service in the registry uses."""
    used = {m.get("port") for m in registry_data.get("models", [])}
    d = {**Deployment().model_dump(), **registry_data.get("deployment", {})}
    used |= {d["controller_port"], d["api_port"], d["webui_port"]}
    port = start
    while port in used:
        port += 1
    return port


def _entry_table(entry: dict) -> tomlkit.items.Table:
    t = tomlkit.table()
    for k, v in entry.items():
        t.add(k, v)
    return t


def add_entries(entries: list[dict] | Callable[[dict], list[dict]], paths: FleetPaths, catalogue: Catalogue,
                replace: bool = False) -> list[str]:
    """Append entries (skipping names already present unless replace); validates and re-renders.
    `entries` may be a function of the registry's data, for entries that take a free port or cores
    from it: it runs under the same lock as the write."""
    path = paths.registry
    with one_writer(paths):
        doc = _load_doc(path)
        if callable(entries):
            entries = entries(doc.unwrap())
        if "models" not in doc:
            doc.add("models", tomlkit.aot())
        models = doc["models"]
        existing = {m["name"]: i for i, m in enumerate(models)}
        added = []
        for e in entries:
            if e["name"] in existing:
                if not replace:
                    continue
                i = existing[e["name"]]  # tomlkit's array of tables has no item assignment
                del models[i]
                models.insert(i, _entry_table(e))
            else:
                models.append(_entry_table(e))
            added.append(e["name"])
        reg = parse_registry(tomlkit.loads(tomlkit.dumps(doc)).unwrap(), catalogue, str(path))  # validate first
        if added or not path.exists():
            path.write_text(tomlkit.dumps(doc), encoding="utf-8")
        write(reg, paths)
    return added


def set_deployment(paths: FleetPaths, catalogue: Catalogue, **fields) -> None:
    """Set fields of [deployment] in model_paths.toml (validated first), keeping its comments."""
    path = paths.registry
    with one_writer(paths):
        doc = _load_doc(path)
        if "deployment" not in doc:
            doc.add("deployment", tomlkit.table())
        for k, v in fields.items():
            doc["deployment"][k] = v
        parse_registry(tomlkit.loads(tomlkit.dumps(doc)).unwrap(), catalogue, str(path))
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
