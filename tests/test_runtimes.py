"""Which runtime a model's worker runs in, known from its config.json (never its folder's name),
overridable by the entry's `runtime`, shown by `deploy status`, and started by supervisord with that
runtime's Python; a registry of models that need none builds none. The runtime itself, built from
the seed models' real files and run, is tests/test_seed_fidelity.py's."""
import json

import pytest

from deploy.backends import parse_registry
from deploy.backends.transformers import runtime_for
from deploy.ops.fleet import _runtime_lines
from deploy.provision.runtimes import needed
from deploy.registry.paths import FleetPaths, runtime_python
from deploy.registry.render import render

OLD_CODE = {"model_type": "chatglm", "auto_map": {"AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
            "transformers_version": "4.30.2"}


def folder(tmp_path, name: str, config: dict):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("config, runtime", [
    (OLD_CODE, "transformers-4.41"),                                      # remote code of 2023
    ({**OLD_CODE, "transformers_version": "4.57.1"}, "main"),              # remote code of today
    ({"model_type": "deepseek", "transformers_version": "4.33.1"}, "main"),  # old, but no code of its own
    ({"model_type": "qwen3", "transformers_version": "4.51.0"}, "main"),
])
def test_the_runtime_comes_from_the_models_config(tmp_path, config, runtime):
    assert runtime_for(folder(tmp_path, "model-x", config)) == runtime  # a name that says nothing


def registry(tmp_path, **over):
    seed, plain = folder(tmp_path, "glm", OLD_CODE), folder(tmp_path, "ds", {"model_type": "llama"})
    models = [{"name": "glm", "path": str(seed), "backend": "transformers", "port": 21002, "cores": [0],
               "memory_budget": "14GiB", "chat_template": "chatglm3", "trust_remote_code": True, **over},
              {"name": "ds", "path": str(plain), "backend": "transformers", "port": 21003, "cores": [1],
               "memory_budget": "14GiB", "chat_template": "deepseek-chat"}]
    return parse_registry({"models": models})


def test_a_registry_needs_the_old_runtime_only_for_old_code_and_supervisord_starts_it_there(tmp_path):
    reg = registry(tmp_path)
    assert needed(reg) == {"transformers-4.41": ["glm"]}
    conf = render(reg, FleetPaths(tmp_path / "model_paths.toml"))
    assert f"{runtime_python('transformers-4.41')} -m deploy worker glm" in conf
    assert f"{runtime_python('transformers-4.41')} -m deploy worker ds" not in conf
    old = runtime_python("transformers-4.41").parent.parent
    assert _runtime_lines(reg) == [f"runtime transformers-4.41 ({old}): glm"]  # what `deploy status` says


def test_the_entry_can_override_the_runtime(tmp_path):
    reg = registry(tmp_path, runtime="main")
    assert needed(reg) == {} and _runtime_lines(reg) == []


def test_the_default_registry_needs_no_runtime():
    from conftest import REPO
    from deploy.backends import load_registry

    assert needed(load_registry(REPO / "model_paths.toml")) == {}
