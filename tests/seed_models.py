"""The seed models' own files for the tests: Qwen-7B-Chat, ChatGLM3-6B and DeepSeek-LLM-7B-Chat with
their real config, remote code and tokenizers. By default tiny random-weight checkpoints built once
per run by ../shared/seed-models/build_tiny.py (saved the way the originals are); with
FLEET_SEED_MODELS=DIR, the folders under DIR (real downloads of the three, found by their config),
so the same tests run against the real models. Each is copied under a name that says nothing about
it ("model-a", ...): a model is known by its config, never by its folder's name."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.backends.transformers import REMOTE_CODE_RUNTIME
from tests.harness import REPO

SHARED = REPO.parent / "shared" / "seed-models"
ENV = "FLEET_SEED_MODELS"


@dataclass(frozen=True)
class Seed:
    family: str          # chatglm3, qwen, deepseek
    template: str        # the FastChat template that builds its prompt
    folder: Path         # its files, under a neutral name
    remote_code: bool

    @property
    def name(self) -> str:
        return f"seed-{self.family}"


FAMILIES = {"chatglm3": ("chatglm3", True), "qwen": ("qwen-7b-chat", True), "deepseek": ("deepseek-chat", False)}
NEUTRAL = {"chatglm3": "model-a", "qwen": "model-b", "deepseek": "model-c"}


def family_of(folder: Path) -> str | None:
    """Which seed model a folder holds, from its config.json."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    kind = cfg.get("model_type")
    if kind == "chatglm":
        return "chatglm3"
    if kind == "qwen":
        return "qwen"
    if kind == "llama" and cfg.get("vocab_size") == 102400:
        return "deepseek"
    return None


def unavailable() -> str | None:
    """Why the seed models cannot be had here, or None."""
    given = os.environ.get(ENV)
    if given:
        found = {family_of(f) for f in Path(given).iterdir() if f.is_dir()}
        missing = set(FAMILIES) - found
        return f"{ENV}={given} holds no folder of {', '.join(sorted(missing))}" if missing else None
    if not (SHARED / "build_tiny.py").exists():
        return f"no seed models: {SHARED} is missing and {ENV} is not set (a folder with the three models' downloads)"
    return None


def seed_models(work: Path) -> dict[str, Seed]:
    """The three seed models' folders under neutral names in `work`."""
    given = os.environ.get(ENV)
    if given:
        sources = {family_of(f): f for f in Path(given).iterdir() if f.is_dir()}
    else:  # build_tiny.py runs the models' own code: in the runtime their workers run in
        from deploy.provision.runtimes import ensure

        built = work / "built"
        r = subprocess.run([str(ensure(REMOTE_CODE_RUNTIME)), str(SHARED / "build_tiny.py"), str(built)],
                           capture_output=True, text=True, cwd=work)
        assert r.returncode == 0, r.stderr[-3000:]
        sources = {family_of(f): f for f in built.iterdir() if f.is_dir()}
    out = {}
    for family, (template, remote) in FAMILIES.items():
        dest = work / NEUTRAL[family]
        if given:  # real weights: link, do not copy gigabytes
            dest.mkdir()
            for f in sources[family].iterdir():
                (dest / f.name).symlink_to(f)
        else:
            shutil.copytree(sources[family], dest)
            for f in dest.iterdir():
                f.chmod(0o644)  # the shared files are read-only; conversions write beside them
        out[family] = Seed(family, template, dest, remote)
    return out


def reference(seed: Seed, chats: list[dict], raw: list[str] = ()) -> dict:
    """The ids the model's own chat code builds (tests/seed_reference.py), run in the runtime its
    worker runs in (the one whose transformers runs its code)."""
    from deploy.backends.transformers import runtime_for
    from deploy.registry.paths import runtime_python

    req = {"folder": str(seed.folder), "family": seed.family, "chats": chats, "raw": list(raw)}
    r = subprocess.run([str(runtime_python(runtime_for(seed.folder))), str(REPO / "tests" / "seed_reference.py")],
                       input=json.dumps(req), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)
