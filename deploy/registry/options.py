"""What a backend declares to the registry: its name, a one-line summary, its own entry fields
(typed, with defaults and help) and its checks of an entry. Each backend subclasses
`BackendOptions` in deploy/backends/; the registry validates an entry's backend-specific keys with
the subclass the caller's catalogue names for that backend (deploy.backends.catalogue()), so the
registry itself knows no backend, and a backend's fields live with the backend.

In model_paths.toml the options stay flat in the entry (`mmap = true` beside `name`), as they
always were; in Python they are `entry.options`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from deploy.registry.config import ModelEntry


class BackendOptions(BaseModel):
    """One backend's own entry fields and entry checks."""

    model_config = ConfigDict(extra="forbid")

    backend: ClassVar[str]   # the value of `backend` in model_paths.toml
    summary: ClassVar[str]   # one line for `python -m deploy reference` and `check`

    def path_problem(self, path: Path) -> str | None:
        """Why `path` cannot be this backend's model (with the fix), or None if it can."""
        return None

    def location_problem(self, entry: ModelEntry) -> str | None:
        """Why the entry's `path` cannot serve (it does not exist, or is the wrong kind), or None."""
        p = entry.resolved_path
        if not p.exists():
            return (f"{p} does not exist. Fix: download the model (scripts/setup.sh for the defaults, python -m "
                    f"deploy download for others) or correct the path.")
        return self.path_problem(p)

    def shipped_template(self, entry: ModelEntry) -> str | None:
        """The chat template the model's files carry (what chat_template = "auto" renders), "" for
        none, or None where this backend's model renders its own prompts (a server elsewhere)."""
        return None

    def host_warnings(self, entry: ModelEntry) -> list[str]:
        """What may stop the entry on this host without being an error in the file."""
        return []

    def runtime_of(self, entry: ModelEntry) -> str:
        """The Python environment the entry's worker runs in (deploy/registry/paths.py:
        runtime_python): the main one, unless the backend says its model needs another."""
        return "main"


@dataclass(frozen=True)
class Catalogue:
    """The backends an entry may name: each one's options class, and the names that are gone with
    what to do instead (so an old model_paths.toml gets the fix, not a bare 'unknown backend')."""
    options: dict[str, type[BackendOptions]]
    retired: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.options)

    def owner_of(self, key: str) -> str | None:
        """The backend whose own field `key` is, if any."""
        return next((name for name, cls in self.options.items() if key in cls.model_fields), None)
