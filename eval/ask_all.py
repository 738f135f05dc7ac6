#!/usr/bin/env python3
"""Ask every registered model the puzzle set (eval/puzzles.toml), grade, time and report.

    python eval/ask_all.py                      # every model, every puzzle
    python eval/ask_all.py --models 'qwen*' --puzzles yisi --repeats 3 --temperature 0.7 --seed 1
    python eval/ask_all.py --resume             # finish an interrupted run
    python eval/ask_all.py --judge qwen2.5-coder-1.5b-instruct

Also `python -m eval.ask_all`. Results: eval/results/<run>/answers.jsonl, report.md, report.html.
Exit code 0 when every answer was asked and answered, 1 when some failed (recorded), 2 for bad input.
"""
import os
import sys
from pathlib import Path

VENV_PY = Path(__file__).resolve().parent.parent / ".venv/bin/python"
if sys.prefix == sys.base_prefix and VENV_PY.exists():  # run in the deployment's environment, whatever `python` was typed
    os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])

from eval.askall.cli import main  # noqa: E402  (importable: the project is installed in .venv)

if __name__ == "__main__":
    sys.exit(main())
