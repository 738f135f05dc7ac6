"""The model registry, model_paths.toml: one typed definition of a model entry that drives
validation, the CLI options and the README's field table; facts about this host; chat
templates; where the fleet lives on disk; editing the file and rendering supervisord.conf.

May import: deploy.backends (backend names and path checks). Nothing from worker, api,
webui, provision or ops.
"""
