"""The web page (Gradio 4): side-by-side arena, anonymous battle, direct chat and leaderboard,
on FastChat's controller and workers through deploy.fleet_client; votes in FastChat's log format.

May import: deploy.registry, deploy.fleet_client.
"""
