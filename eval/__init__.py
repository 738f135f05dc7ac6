"""The puzzle evaluation: `python eval/ask_all.py` (or `python -m eval.ask_all`) asks every
registered model the puzzle set, grades, times and reports (the parts live in eval.askall).

May import: deploy.fleet_client and deploy.registry (addresses); nothing else from deploy.
"""
