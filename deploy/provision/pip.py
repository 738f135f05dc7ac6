"""The one pip install command of every environment we build (a runtime, the converter's, a
throwaway tool env). --no-compile: pip would compile every installed module to bytecode up front
(all of torch's); Python compiles the modules a process imports on first use instead, and keeps them."""
from __future__ import annotations

from pathlib import Path


def pip_install(python: Path | str) -> list[str]:
    """The start of a quiet `pip install` into the environment of `python`; add what to install."""
    return [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
