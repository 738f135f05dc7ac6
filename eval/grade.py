#!/usr/bin/env python3
"""Grade answers with the puzzles' rules (and, optionally, a calibrated judge where they are unsure).

    python eval/grade.py answers.jsonl [--puzzle-file F] [--judge MODEL]

Each input line: {"id": ..., "puzzle_id": ..., "answer": ...}. Each output line: id, score,
label, source, evidence, reason. Exit 0, or 2 for bad input (one line saying what and how to fix).
"""
import os
import sys
from pathlib import Path

VENV_PY = Path(__file__).resolve().parent.parent / ".venv/bin/python"
if sys.prefix == sys.base_prefix and VENV_PY.exists():  # run in the deployment's environment, whatever `python` was typed
    os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])

from eval.askall.grade_cli import main  # noqa: E402  (importable: the project is installed in .venv)

if __name__ == "__main__":
    sys.exit(main())
