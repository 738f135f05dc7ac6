"""The fleet secret: one random token in a file outside the repository (mode 0600), shared by
every host of the fleet. Workers send it when they register and heart-beat; the controller
accepts registrations only with it."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class SecretError(Exception):
    pass


def create_secret(path: Path) -> bool:
    """Create the file with a new random token unless it exists; True if created."""
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return True


def read_secret(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise SecretError(f"the fleet secret {path} does not exist. Fix: run `python -m deploy secret` (scripts/setup.sh "
                          f"does), and copy that file to every host of the fleet.")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(f"the fleet secret {path} can be read by other users (mode {mode:o}). Fix: chmod 600 {path}")
    token = path.read_text().strip()
    if len(token) < 16:
        raise SecretError(f"the fleet secret in {path} is too short. Fix: delete it and run `python -m deploy secret`.")
    return token
