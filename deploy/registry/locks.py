"""A lock held by one process at a time, as a file: two commands of ours started together (two
`quantize` runs in two terminals, or supervisord starting two workers that need one runtime) edit the
registry or build a shared folder one after the other instead of both at once. The operating system
releases it when the holder exits, however it exits, so a killed build never leaves it held."""
from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def held(lock_file: Path, what: str) -> Iterator[None]:
    """Waits for the lock, saying so on stderr when another process holds it (`what` names the
    work it waits for), and holds it for the block. Not reentrant: a holder that asks again waits
    for itself, so take it once, at the outermost step."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish {what} ({lock_file}) ...", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
