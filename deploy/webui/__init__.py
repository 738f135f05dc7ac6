"""The web page (Gradio 6): side by side, anonymous battle, direct chat, the eval's puzzles and a
leaderboard, on FastChat's controller and workers through deploy.wire.client; votes in FastChat's
log format. The puzzles come in from the caller (puzzles_tab.PuzzleBook): the page imports no eval.

May import: deploy.backends, deploy.wire, deploy.registry.
"""
