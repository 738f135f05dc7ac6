#!/usr/bin/env python3
"""Ask every registered model the puzzle set (eval/puzzles.toml), grade, time and report.

    python eval/ask_all.py                      # every model, every puzzle
    python eval/ask_all.py --models 'qwen*' --puzzles yisi --repeats 3 --temperature 0.7 --seed 1
    python eval/ask_all.py --resume             # finish an interrupted run
    python eval/ask_all.py --judge qwen2.5-coder-1.5b-instruct

Results: eval/results/<run>/answers.jsonl, report.md, report.html. Exit code 0 when every
answer was asked and answered, 1 when some failed (recorded), 2 for bad input.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if sys.prefix == sys.base_prefix and (HERE.parent / ".venv/bin/python").exists():
    import os  # run with the deployment's own environment, whatever `python` the user typed

    os.execv(str(HERE.parent / ".venv/bin/python"), [str(HERE.parent / ".venv/bin/python"), __file__, *sys.argv[1:]])
sys.path.insert(0, str(HERE))

from askall.cli import main  # noqa: E402

sys.exit(main())
