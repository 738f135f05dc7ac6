"""fastchat-fleet: our code around FastChat, in layers (each may import only the ones above it).

    registry/   model_paths.toml: the typed entry, host checks, chat templates, paths,
                editing the file and rendering supervisord.conf from it
    backends/   one module per backend (llama.cpp, transformers, vllm) behind one protocol
    fleet_client  the one client of FastChat's controller and worker protocol
    worker/     the worker runtime: launcher, memory fit, cores and memory limits, worker app
    api/        the OpenAI API server side: FastChat's server, our compatibility shims
    webui/      the Gradio page: arena, battle, direct chat, leaderboard
    provision/  getting models: offline defaults from PyPI, ModelScope, conversions
    ops/        the `python -m deploy` CLI: up, status, down, check, render, add-model, ...

The test harness (starting and stopping real processes) lives in tests/harness.py.
"""
