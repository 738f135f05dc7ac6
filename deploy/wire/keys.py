"""API keys: one per line in a file outside the repository (mode 0600), named by `api_keys_file`
in model_paths.toml. `python -m deploy keys add` creates the file and a key."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

DEFAULT_KEYS_FILE = "~/.config/fastchat-fleet/api_keys"
KEY_PREFIX = "sk-fleet-"


class KeysError(Exception):
    pass


def add_key(path: Path) -> str:
    """Append a new random key (creating the file, mode 0600) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(key + "\n")
    return key


def read_keys(path: Path) -> frozenset[str]:
    """The keys in the file (blank lines and # comments skipped); refuses a file others can read."""
    path = Path(path)
    if not path.exists():
        raise KeysError(f"the API keys file {path} does not exist. Fix: run `python -m deploy keys add`.")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeysError(f"the API keys file {path} can be read by other users (mode {mode:o}). Fix: chmod 600 {path}")
    keys = frozenset(_key_lines(path))
    short = [k for k in keys if len(k) < 16]
    if short:
        raise KeysError(f"{path}: {len(short)} key(s) shorter than 16 characters. Fix: remove them and run "
                        f"`python -m deploy keys add`.")
    if not keys:
        raise KeysError(f"the API keys file {path} holds no key. Fix: run `python -m deploy keys add`.")
    return keys


def client_key(keys_file: Path | None) -> str | None:
    """The key our own clients (ask_all, its judge) send: $FLEET_API_KEY, else the keys file's
    first key (the user running them can read it), else None (no keys configured)."""
    if os.environ.get("FLEET_API_KEY"):
        return os.environ["FLEET_API_KEY"]
    if keys_file is None or not Path(keys_file).exists():
        return None
    return next(iter(_key_lines(Path(keys_file))), None)


def _key_lines(path: Path) -> list[str]:
    """The keys in a keys file, in order: blank lines and # comments skipped."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
