"""The command-line options of every command that writes a registry entry (add-model, download,
quantize), generated from the entry's shared fields and every backend's own, so the CLI can never
disagree with validation; and writing one entry from them."""
from __future__ import annotations

import argparse

from pydantic.fields import FieldInfo

from deploy import backends
from deploy.registry.config import ModelEntry, RegistryError
from deploy.registry.edit import add_entries
from deploy.registry.paths import FleetPaths


def entry_fields() -> dict[str, tuple[FieldInfo, str]]:
    """Every field an entry may have: (its definition, whose it is: '' for every backend's)."""
    out = {name: (f, "") for name, f in ModelEntry.model_fields.items() if name != "options"}
    for b in backends.BACKENDS.values():
        for name, f in b.options.model_fields.items():
            out.setdefault(name, (f, b.name))
    return out


def add_entry_options(parser: argparse.ArgumentParser, *, all_optional: bool = False, skip: tuple[str, ...] = (),
                      optional: tuple[str, ...] = ()) -> None:
    """One --option per entry field (help text from its description)."""
    parses_own_spelling = {f for v in ModelEntry.__pydantic_decorators__.field_validators.values()
                           if v.info.mode == "before" for f in v.info.fields}  # "14GiB", "0-1": passed as written
    for name, (f, owner) in entry_fields().items():
        if name in skip:
            continue
        kwargs: dict = {"help": (f"{owner}: " if owner else "") + (f.description or ""), "dest": name}
        if f.annotation is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        elif f.annotation in (int, int | None) and name not in parses_own_spelling:
            kwargs["type"] = int
        required = f.is_required() and not owner and not all_optional and name not in optional
        parser.add_argument("--" + name.replace("_", "-"), required=required, **kwargs)


def entry_overrides(args: argparse.Namespace) -> dict:
    """The entry fields given on the command line, as written."""
    return {k: getattr(args, k) for k in entry_fields() if getattr(args, k, None) is not None}


def entry_from_args(args: argparse.Namespace) -> dict:
    raw = entry_overrides(args)
    entry = backends.parse_registry({"models": [raw]}, "add-model").models[0]  # same rules and messages as the file
    out = entry.model_dump(mode="json", exclude_defaults=True)
    out.update({k: raw[k] for k in ("memory_budget", "cores") if k in raw})  # keep the user's spelling
    out["name"], out["path"], out["backend"] = entry.name, entry.path, entry.backend
    return out


def add_entry(entry: dict, paths: FleetPaths, replace: bool = False) -> None:
    if not add_entries([entry], paths, backends.catalogue(), replace=replace or False):
        raise RegistryError([f"an entry named '{entry['name']}' exists already. Fix: pick another name or pass --replace."])
    print(f"{'replaced' if replace else 'added'} '{entry['name']}' in {paths.registry}")
