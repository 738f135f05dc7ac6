"""The conversations a llama.cpp engine holds in its slots, kept on disk while its model is
unloaded (llama.cpp's slot save and restore), so that a conversation that comes back after an
on-demand swap finds its prompt already computed instead of processing it all again
(bench/slot_restore.py measures it). The files hold the conversations' KV cache: they live in a
private temporary folder (mode 700) and are deleted once restored, and when the worker stops."""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("deploy.backends.slot_store")


@dataclass
class Moved:
    """What one save or restore moved, summed over the slots, in the engine's own figures."""
    tokens: int = 0
    bytes: int = 0
    ms: float = 0.0

    def add(self, reply: dict, tokens_key: str, bytes_key: str, ms_key: str) -> None:
        self.tokens += int(reply.get(tokens_key) or 0)
        self.bytes += int(reply.get(bytes_key) or 0)
        self.ms += float((reply.get("timings") or {}).get(ms_key) or 0)

    def describe(self) -> str:
        return f"{self.tokens} tokens of conversations ({self.bytes / 1e6:.1f} MB) in {self.ms:.0f} ms"


# how a worker logs a save or a restore (describe()), for what reads its log: bench/slot_restore.py
LOGGED = re.compile(r"(saved|restored) (\d+) tokens of conversations \(([\d.]+) MB\) in (\d+) ms")


class SlotStore:
    def __init__(self):
        self._dir: Path | None = None  # made when an engine first needs it

    @property
    def dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="fleet-slots-"))
        return self._dir

    @property
    def engine_path(self) -> str:
        """For the engine's slot_save_path, which it joins to the file name as text."""
        return f"{self.dir}/"

    @staticmethod
    def _post(url: str, key: str, slot: int, action: str, filename: str) -> dict:
        r = httpx.post(f"{url}/slots/{slot}?action={action}", json={"filename": filename},
                       headers={"Authorization": f"Bearer {key}"}, timeout=600)
        r.raise_for_status()
        return r.json()

    def save(self, url: str, key: str) -> Moved:
        """Write every slot that holds a conversation. A failure only costs the next request its
        cached prompt: it is logged, never raised (the unload goes on)."""
        saved = Moved()
        try:
            slots = httpx.get(f"{url}/slots", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
            for slot in slots:
                name = f"slot{int(slot['id'])}.bin"
                reply = self._post(url, key, int(slot["id"]), "save", name)
                if not reply.get("n_saved"):
                    (self.dir / name).unlink(missing_ok=True)
                saved.add(reply, "n_saved", "n_written", "save_ms")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            log.warning("could not save the slots' conversations before unloading: %s", e)
        return saved

    def restore(self, url: str, key: str) -> Moved:
        """Read back what `save` wrote, each file into its slot, and delete the files."""
        restored = Moved()
        for f in sorted(self.dir.glob("slot*.bin")):
            try:
                restored.add(self._post(url, key, int(f.stem[4:]), "restore", f.name), "n_restored", "n_read",
                             "restore_ms")
            except (httpx.HTTPError, ValueError) as e:
                log.warning("could not restore %s: %s", f.name, e)
            finally:
                f.unlink(missing_ok=True)
        return restored

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
