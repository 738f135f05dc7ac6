#!/usr/bin/env bash
# Set-up, idempotent: .venv with the pinned packages, the offline default
# models (fetched, assembled and checked once), model_paths.toml entries and
# supervisord.conf. A second run installs and downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
# pip byte-compiles at install (its default), and must: where PYTHONDONTWRITEBYTECODE is set, as on
# some CI machines, Python never writes a .pyc later, and every worker would compile torch,
# transformers and gradio from source each time it starts.
quiet_pip() {  # this machine's pip config warns about missing local mirrors; keep real errors
  "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2)
}

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "ERROR: Python 3.11 not found. Fix: install python3.11 or set PYTHON=/path/to/python3.11" >&2; exit 1; }

step "[1/6] Python 3.11 virtual environment in .venv"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  echo "created .venv"
else
  echo ".venv present"
fi
.venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "ERROR: .venv is not Python 3.11. Fix: rm -rf .venv and rerun." >&2; exit 1; }

step "[2/6] PyTorch 2.13.0 (CPU) first, so nothing later pulls CUDA builds"
if .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "torch 2.13.0 present"
else
  quiet_pip .venv/bin/python -m pip install --disable-pip-version-check torch==2.13.0
fi

step "[3/6] Pinned packages (requirements.lock)"
lock_sum=$(sha256sum requirements.lock | cut -d' ' -f1)
if [ -f .venv/.lock-installed ] && [ "$(cat .venv/.lock-installed)" = "$lock_sum" ]; then
  echo "requirements.lock already installed"
else
  quiet_pip .venv/bin/python -m pip install --disable-pip-version-check -r requirements.lock
  echo "$lock_sum" > .venv/.lock-installed
fi

step "[4/6] This project, installed in .venv (editable), so deploy/ and eval/ import from anywhere"
venv_py="$PWD/.venv/bin/python"
if [ "$(cd / && "$venv_py" -c 'import deploy; print(deploy.__file__)' 2>/dev/null)" = "$PWD/deploy/__init__.py" ]; then
  echo "installed"
else
  quiet_pip .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . --config-settings editable_mode=compat
fi

step "[5/6] Offline default models, model_paths.toml, the fleet secret, supervisord.conf"
.venv/bin/python -m deploy fetch-defaults
.venv/bin/python -m deploy secret
.venv/bin/python -m deploy render
.venv/bin/python -m deploy check

step "[6/6] Runtimes the registered models need besides .venv (only a model whose own code needs an old transformers)"
.venv/bin/python -m deploy runtimes
