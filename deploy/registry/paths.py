"""Where the fleet lives on disk, resolved once (by the CLI or the test harness) and passed down:
the registry file, the folder it sits in (supervisord.conf and logs/ live beside it), the logs,
FastChat's LOGDIR, and the model cache."""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY = REPO_ROOT / "model_paths.toml"
REGISTRY_ENV = "FLEET_REGISTRY"
CACHE_ENV = "FLEET_CACHE"
DEFAULT_CACHE = "~/.cache/fastchat-fleet"


def cache_dir() -> Path:
    """Where downloaded models live: $FLEET_CACHE, else ~/.cache/fastchat-fleet."""
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


def tools_dir() -> Path:
    """Where built tools live (llama.cpp's quantiser): $FLEET_TOOLS, else $FLEET_CACHE/tools."""
    return Path(os.path.expanduser(os.environ.get("FLEET_TOOLS") or cache_dir() / "tools"))


def expand_path(raw: str) -> Path:
    """Expand `$FLEET_CACHE` (with its default), other env vars and `~`; relative to the repo."""
    env = dict(os.environ)
    env.setdefault(CACHE_ENV, str(cache_dir()))
    expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), raw)
    p = Path(os.path.expanduser(expanded))
    return p if p.is_absolute() else (REPO_ROOT / p)


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
    def supervisord_conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def log_dir_name(self) -> str:
        """[deployment] log_dir, read without validating the rest (logs are needed to report problems)."""
        try:
            return str(tomllib.loads(self.registry.read_text(encoding="utf-8"))["deployment"]["log_dir"])
        except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
            return "logs"

    @property
    def logs(self) -> Path:
        return self.root / self.log_dir_name

    @property
    def fastchat_logs(self) -> Path:
        return self.logs / "fastchat"

    @property
    def votes(self) -> Path:
        return self.logs / "votes"

    def use_fastchat_logdir(self) -> None:
        """FastChat's build_logger writes into $LOGDIR (default: the current directory) on import."""
        if "LOGDIR" not in os.environ:
            self.fastchat_logs.mkdir(parents=True, exist_ok=True)
            os.environ["LOGDIR"] = str(self.fastchat_logs)
