"""Add entries to model_paths.toml without losing the user's comments, then re-render.

The options of every command that writes an entry are generated from `ModelEntry`'s fields,
so the CLI can never disagree with validation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import tomlkit

from deploy.registry.config import Deployment, ModelEntry, RegistryError, parse_registry
from deploy.registry.paths import FleetPaths

REGISTRY_HEADER = """\
# The registry of downloaded models: one [[models]] entry per model, one FastChat worker each.
# Reference: README.md, "model_paths.toml". After editing: python -m deploy render
# '$FLEET_CACHE' expands to the model cache (default ~/.cache/fastchat-fleet).
"""


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


def add_entries(entries: list[dict], paths: FleetPaths, replace: bool = False) -> list[str]:
    """Append entries (skipping names already present unless replace); validates and re-renders."""
    from deploy.registry.render import write

    path = paths.registry
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
            i = existing[e["name"]]  # tomlkit's array of tables has no item assignment
            del models[i]
            models.insert(i, _entry_table(e))
        else:
            models.append(_entry_table(e))
        added.append(e["name"])
    reg = parse_registry(tomlkit.loads(tomlkit.dumps(doc)).unwrap(), str(path))  # validate before writing
    if added or not path.exists():
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    write(reg, paths.supervisord_conf)
    return added


def set_deployment(paths: FleetPaths, **fields) -> None:
    """Set fields of [deployment] in model_paths.toml (validated first), keeping its comments."""
    path = paths.registry
    doc = _load_doc(path)
    if "deployment" not in doc:
        doc.add("deployment", tomlkit.table())
    for k, v in fields.items():
        doc["deployment"][k] = v
    parse_registry(tomlkit.loads(tomlkit.dumps(doc)).unwrap(), str(path))
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


def add_entry_options(parser: argparse.ArgumentParser, *, all_optional: bool = False, skip: tuple[str, ...] = (),
                      optional: tuple[str, ...] = ()) -> None:
    """One --option per ModelEntry field (help text from its description), so every command that
    writes an entry (add-model, download, quantize) takes the same options as the file."""
    parses_own_spelling = {f for v in ModelEntry.__pydantic_decorators__.field_validators.values()
                           if v.info.mode == "before" for f in v.info.fields}  # "14GiB", "0-1": passed as written
    for name, f in ModelEntry.model_fields.items():
        if name in skip:
            continue
        kwargs: dict = {"help": f.description, "dest": name}
        if f.annotation is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        elif f.annotation in (int, int | None) and name not in parses_own_spelling:
            kwargs["type"] = int
        required = f.is_required() and not all_optional and name not in optional
        parser.add_argument("--" + name.replace("_", "-"), required=required, **kwargs)


def entry_overrides(args: argparse.Namespace) -> dict:
    """The entry fields given on the command line, as written."""
    return {k: getattr(args, k) for k in ModelEntry.model_fields if getattr(args, k, None) is not None}


def entry_from_args(args: argparse.Namespace) -> dict:
    raw = entry_overrides(args)
    entry = parse_registry({"models": [raw]}, "add-model").models[0]  # same rules, same messages as the file
    out = entry.model_dump(mode="json", exclude_defaults=True)
    out.update({k: raw[k] for k in ("memory_budget", "cores") if k in raw})  # keep the user's spelling
    out["name"], out["path"], out["backend"] = entry.name, entry.path, entry.backend
    return out


def add_entry(entry: dict, paths: FleetPaths, replace: bool = False) -> None:
    if not add_entries([entry], paths, replace=replace or False):
        raise RegistryError([f"an entry named '{entry['name']}' exists already. Fix: pick another name or pass --replace."])
    print(f"{'replaced' if replace else 'added'} '{entry['name']}' in {paths.registry}")
