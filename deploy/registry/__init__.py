"""The model registry, model_paths.toml: one typed definition of a model entry that drives
validation, the CLI options and the field table (docs/configuration.md, "Every field"); facts
about this host; chat templates; where the fleet lives on disk; editing the file and rendering
supervisord.conf.

May import: deploy.fastchat_compat only (the layers in pyproject.toml). It knows no backend by name:
callers pass the backends' catalogue (deploy.backends.catalogue()) to validate an entry's own fields.
"""
