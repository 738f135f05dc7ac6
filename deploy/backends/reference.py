"""The model_paths.toml field reference (docs/configuration.md, "Every field"), generated from
the same definitions that validate the file: the shared fields, then each backend's own."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from deploy.backends import BACKENDS
from deploy.registry.config import ModelEntry

_TYPES = {"memory_budget": "size string", "cores": "list of ints, or \"0-1\""}


def _rows(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in model.model_fields.items():
        if name in skip:
            continue
        ann = f.annotation
        args = [a for a in getattr(ann, "__args__", ()) if a is not type(None)]
        if getattr(ann, "__origin__", None) is Literal:
            t = " / ".join(ann.__args__)
        elif name == "backend":
            t = " / ".join(BACKENDS)
        else:
            t = _TYPES.get(name) or getattr(ann, "__name__", None) or " or ".join(a.__name__ for a in args)
        default = "required" if f.is_required() else f"`{f.default!r}`".replace("'", '"')
        rows.append(f"| `{name}` | {t} | {default} | {f.description} |")
    return rows


def fields_markdown() -> str:
    out = ["Every entry:", "", *_rows(ModelEntry, skip=("options",))]
    for b in BACKENDS.values():
        if b.options.model_fields:
            out += ["", f"`backend = \"{b.name}\"` ({b.summary}) also takes:", "", *_rows(b.options)]
    return "\n".join(out)
