#!/usr/bin/env bash
# Which programs run, which models registered, on which cores.
cd "$(dirname "$0")/.." && exec .venv/bin/python -m deploy status
