"""The conversations a llama.cpp engine holds in its slots, kept on disk while its model is
unloaded (llama.cpp's slot save and restore), so that a conversation that comes back after an
on-demand swap finds its prompt already computed instead of processing it all again
(bench/slot_restore.py measures it). The files hold the conversations' KV cache: they live in a
private temporary folder (mode 700) and are deleted once restored, and when the worker stops."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import httpx

log = logging.getLogger("deploy.backends.slot_store")


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

    def save(self, url: str, key: str) -> int:
        """Write every slot that holds a conversation; returns the tokens saved. A failure only
        costs the next request its cached prompt: it is logged, never raised (the unload goes on)."""
        saved = 0
        try:
            slots = httpx.get(f"{url}/slots", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
            for slot in slots:
                name = f"slot{int(slot['id'])}.bin"
                n = int(self._post(url, key, int(slot["id"]), "save", name).get("n_saved") or 0)
                if n == 0:
                    (self.dir / name).unlink(missing_ok=True)
                saved += n
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            log.warning("could not save the slots' conversations before unloading: %s", e)
        return saved

    def restore(self, url: str, key: str) -> int:
        """Read back what `save` wrote, each file into its slot, and delete the files; returns the
        tokens restored."""
        restored = 0
        for f in sorted(self.dir.glob("slot*.bin")):
            try:
                restored += int(self._post(url, key, int(f.stem[4:]), "restore", f.name).get("n_restored") or 0)
            except (httpx.HTTPError, ValueError) as e:
                log.warning("could not restore %s: %s", f.name, e)
            finally:
                f.unlink(missing_ok=True)
        return restored

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
