"""Fixtures that start the real stack on loopback and stop only what they started, by PID."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.registry.paths import FleetPaths

# FastChat modules write log files into $LOGDIR (default: cwd) as soon as they are imported.
FleetPaths.resolve(Path(__file__).resolve().parent.parent / "model_paths.toml").use_fastchat_logdir()

from deploy.backends import load_registry  # noqa: E402
from tests.harness import PY, REPO, Proc, Stack, free_port, wait_for, write_registry  # noqa: E402,F401 (used by tests)

pytest_plugins = ["tests.browser_kit"]  # the `browser` fixture of every browser test

DEFAULTS = {m.name: m for m in load_registry(REPO / "model_paths.toml").models}
SMALL = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_HF = "qwen2.5-coder-0.5b-instruct-hf"


def copy_model_folder(src: Path, dest: Path, **config_changes) -> Path:
    """A model folder that links to src's files, with config.json edited."""
    import json

    dest.mkdir()
    for f in src.iterdir():
        if f.name != "config.json" and not f.name.startswith("."):
            (dest / f.name).symlink_to(f)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config_changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def entry(model: str, **over) -> dict:
    """A default model's entry as a dict, with overrides (a fresh port by default)."""
    d = DEFAULTS[model].model_dump(mode="json", exclude_none=True)
    d["port"] = free_port()
    d.update(over)
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two llama.cpp workers (SmolLM2, Qwen 0.5B) and the transformers worker, plus a worker
    whose model path is wrong, behind the real controller and API server. The transformers
    worker runs under the RLIMIT_AS fallback, to prove its measured headroom is enough to load."""
    tmp = tmp_path_factory.mktemp("stack")
    models = [entry(SMALL), entry(QWEN), entry(QWEN_HF),
              entry(QWEN, name="broken-path", path=str(tmp / "missing" / "model.gguf")),
              entry(SMALL, name="victim")]
    s = Stack(tmp, models)
    try:
        s.start_controller()
        for m in models:
            s.start_worker(m["name"], {"FLEET_MEMORY_MECHANISM": "rlimit_as"} if m["name"] == QWEN_HF else None)
        s.start_api()
        s.wait_registered([SMALL, QWEN, QWEN_HF, "victim"])
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(stack):
    return stack.openai(max_retries=2)


# The modules that take longest, longest first. scripts/test.sh runs two test processes, each taking
# whole modules in collection order; a long module taken last would run on alone at the end.
RUN_FIRST = ("test_webui_browser", "test_seed_fidelity", "test_ask_all", "test_on_demand", "test_webui_round_four",
             "test_modelscope", "test_webui_round_three", "test_chaos", "test_supervisord", "test_speculation",
             "test_reasoning", "test_api_tools", "test_api_security", "test_api_clients")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each module's tests keep their order
