"""Where the fleet lives on disk, resolved once (by the CLI or the test harness) and passed down:
the registry file, the folder it sits in, its own supervisord files (named after it, so two
registries in one folder are two fleets), the logs, FastChat's LOGDIR, the Python that runs the
fleet, and the model cache. Everything resolves the same wherever the registry is kept."""
from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY_NAME = "model_paths.toml"
DEFAULT_REGISTRY = REPO_ROOT / DEFAULT_REGISTRY_NAME
REGISTRY_ENV = "FLEET_REGISTRY"
CACHE_ENV = "FLEET_CACHE"
DEFAULT_CACHE = "~/.cache/fastchat-fleet"


def cache_dir() -> Path:
    """Where downloaded models live: $FLEET_CACHE, else ~/.cache/fastchat-fleet."""
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


def tools_dir() -> Path:
    """Where built tools live (llama.cpp's quantiser): $FLEET_TOOLS, else $FLEET_CACHE/tools."""
    return Path(os.path.expanduser(os.environ.get("FLEET_TOOLS") or cache_dir() / "tools"))


def expand_path(raw: str, base: Path = REPO_ROOT) -> Path:
    """Expand `$FLEET_CACHE` (with its default), other env vars and `~`; a relative path is
    relative to `base` (the folder of the registry that names it)."""
    env = dict(os.environ)
    env.setdefault(CACHE_ENV, str(cache_dir()))
    expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), raw)
    p = Path(os.path.expanduser(expanded))
    return p if p.is_absolute() else (base / p)


def fleet_python() -> Path:
    """The Python of the environment running this code (a venv's bin/python, its symlink kept, so
    supervisord starts the programs in the same environment)."""
    candidate = Path(sys.prefix) / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


MAIN_RUNTIME = "main"
RUNTIMES_DIR = REPO_ROOT / ".runtimes"  # the runtimes other than the main one (deploy/provision/runtimes.py)


def runtime_python(runtime: str) -> Path:
    """The Python a worker of `runtime` runs with: this environment's for the main runtime, else the
    runtime's own virtual environment's."""
    return fleet_python() if runtime == MAIN_RUNTIME else RUNTIMES_DIR / runtime / "bin" / "python"


@dataclass(frozen=True)
class FleetPaths:
    registry: Path

    @classmethod
    def resolve(cls, registry: str | os.PathLike | None = None) -> "FleetPaths":
        """--registry, else $FLEET_REGISTRY, else the repository's model_paths.toml."""
        return cls(Path(registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).resolve())

    @property
    def root(self) -> Path:
        return self.registry.parent

    @property
    def prefix(self) -> str:
        """What this fleet's own files are named with: nothing for model_paths.toml (its
        supervisord.conf), the registry's name otherwise (fleet-b.toml: fleet-b.supervisord.conf)."""
        return "" if self.registry.name == DEFAULT_REGISTRY_NAME else f"{self.registry.stem}."

    @property
    def cli(self) -> str:
        """The command that acts on this fleet: `python -m deploy`, with --registry unless it is the default."""
        return "python -m deploy" + ("" if self.registry == DEFAULT_REGISTRY else f" --registry {self.registry}")

    @property
    def supervisord_conf(self) -> Path:
        return self.root / f"{self.prefix}supervisord.conf"

    @property
    def log_dir_name(self) -> str:
        """[deployment] log_dir, read without validating the rest (logs are needed to report problems)."""
        try:
            return str(tomllib.loads(self.registry.read_text(encoding="utf-8"))["deployment"]["log_dir"])
        except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
            return "logs"

    @property
    def logs(self) -> Path:
        """log_dir: absolute as written, or relative to the registry's folder."""
        return expand_path(self.log_dir_name, self.root)

    def program_log(self, program: str) -> Path:
        return self.logs / f"{self.prefix}{program}.log"

    @property
    def supervisor_socket(self) -> Path:
        return self.logs / f"{self.prefix}supervisor.sock"

    @property
    def supervisord_pid(self) -> Path:
        return self.logs / f"{self.prefix}supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.logs / f"{self.prefix}supervisord.log"

    @property
    def fastchat_logs(self) -> Path:
        return self.logs / f"{self.prefix}fastchat"

    @property
    def votes(self) -> Path:
        return self.logs / f"{self.prefix}votes"

    def use_fastchat_logdir(self) -> None:
        """FastChat's build_logger writes into $LOGDIR (default: the current directory) on import."""
        if "LOGDIR" not in os.environ:
            self.fastchat_logs.mkdir(parents=True, exist_ok=True)
            os.environ["LOGDIR"] = str(self.fastchat_logs)
