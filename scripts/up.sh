#!/usr/bin/env bash
# The quick start: set up (idempotent), start the fleet under supervisord,
# wait until every worker registered, print the API and web UI URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m deploy up "$@"
