"""The one pip install command of every environment we build (a runtime, the converter's, a
throwaway tool env). pip compiles bytecode as it installs, on purpose: where PYTHONDONTWRITEBYTECODE
is set (many container images set it), Python never writes it later, and every process would compile
torch, transformers and gradio again on each start."""
from __future__ import annotations

from pathlib import Path


def pip_install(python: Path | str) -> list[str]:
    """The start of a quiet `pip install` into the environment of `python`; add what to install."""
    return [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
