"""fastchat-fleet: our code around FastChat, in layers. Each layer may import only the layers
below it; siblings joined by "|" may not import each other. `lint-imports` checks this (the
contracts are in pyproject.toml), so a wrong-way import fails CI.

    ops/                      the `python -m deploy` CLI: up, status, down, check, render, add-model, ...;
                              the composition root (it alone hands the eval's puzzles to the web UI)
    api/ | webui/ | provision/
                              the OpenAI API (routers, request models, the gate); the Gradio page;
                              getting models (offline defaults, ModelScope, quantising)
    worker/ | control/        the worker runtime (launcher, fit, limits, worker app); the controller
    backends/                 one module per backend: its entry options, features, shape, worker
    wire/                     what crosses the wire: FastChat's routes and frames, generation fields and
                              worker requests, the fleet client, errors, strict JSON, access, secrets
    registry/                 model_paths.toml: the typed entry, host facts, templates, paths, render
    fastchat_compat           the only module that bypasses FastChat's own code, hash-guarded

eval/ stands apart: it uses the fleet as a client. The test harness lives in tests/harness.py.
"""
