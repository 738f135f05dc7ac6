"""eval/ask_all.py's parts: puzzles, grading, the run itself, results and reports."""
