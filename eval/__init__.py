"""The puzzle evaluation: `python eval/ask_all.py` (or `python -m eval.ask_all`) asks every
registered model the puzzle set, grades, times and reports (the parts live in eval.askall).

May import: deploy.wire (the fleet client), deploy.registry (addresses) and deploy.backends (their catalogue);
nothing else from deploy (the contract in pyproject.toml).
"""
