#!/usr/bin/env bash
# The test command (CI runs exactly this). Sets up first, so it works on a fresh clone.
# Fast set only (about a minute):  scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# The browser tests drive Debian's Chromium (headless) and need CJK fonts to render Chinese.
if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
  printf '\n==> Installing Debian chromium and fonts-noto-cjk for the browser tests\n'
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
# Every puzzle file's rules against its labelled examples (eval/puzzles.toml, and any under eval/puzzles.d/).
printf '\n==> Checking the puzzle rules against their labelled examples\n'
.venv/bin/python eval/ask_all.py --check-rules

# The layers of deploy/ (pyproject.toml, [tool.importlinter]): a wrong-way import fails here.
printf '\n==> Checking the import layers\n'
.venv/bin/lint-imports --no-cache

# Two test processes (pytest-xdist), each taking whole modules: a module's fleet is started once and
# its tests run in order. TEST_PROCESSES=0 runs everything in this one process.
exec .venv/bin/python -m pytest -n "${TEST_PROCESSES:-2}" --dist loadfile --no-loadscope-reorder "$@"
