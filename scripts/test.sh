#!/usr/bin/env bash
# The test command (CI runs exactly this). Sets up first, so it works on a fresh clone.
# Fast set only (about a minute):  scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
