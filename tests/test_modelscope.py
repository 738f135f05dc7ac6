"""ModelScope download: everything but the hub itself, which CI cannot reach."""
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import DEFAULTS, QWEN_HF, REPO, copy_model_folder
from deploy.provision.modelscope import PRESETS, build_entry


def test_seed_presets_use_known_templates_and_opt_in_to_remote_code():
    from deploy.registry.templates import known_templates

    assert {p["chat_template"] for p in PRESETS.values()} <= known_templates()
    assert PRESETS["qwen/Qwen-7B-Chat"]["trust_remote_code"] and PRESETS["ZhipuAI/chatglm3-6b"]["trust_remote_code"]
    assert not PRESETS["deepseek-ai/deepseek-llm-7b-chat"].get("trust_remote_code")


def fake_download(tmp_path):
    """A folder shaped like a ModelScope snapshot: the converted Qwen's files."""
    return copy_model_folder(DEFAULTS[QWEN_HF].resolved_path, tmp_path / "snapshot")


def test_entry_budget_is_the_estimate_plus_margin(tmp_path):
    folder = fake_download(tmp_path)
    e = build_entry("qwen/Qwen-7B-Chat", folder, 21010, [0, 1], {})
    assert e["name"] == "qwen-7b-chat" and e["chat_template"] == "qwen-7b-chat" and e["trust_remote_code"]
    assert e["source"] == "modelscope:qwen/Qwen-7B-Chat" and e["backend"] == "transformers"
    from deploy.backends.transformers import resolve_dtype
    from deploy.registry.config import ModelEntry
    from deploy.worker.fit import estimate

    need = estimate(ModelEntry.model_validate({**e, "memory_budget": "100GiB"})).total
    gib = float(e["memory_budget"].removesuffix("GiB"))
    assert need * 1.15 <= gib * 1024**3 < need * 1.15 + 0.11 * 1024**3
    weights_gib = 1.17 * (2 if resolve_dtype("auto") == "float32" else 1)  # bf16 on disk
    assert gib > weights_gib


def run_script(*args, registry):
    return subprocess.run([sys.executable, str(REPO / "scripts/download_modelscope.py"), *args,
                           "--registry", str(registry)], capture_output=True, text=True, cwd=REPO)


def test_register_a_downloaded_folder(tmp_path):
    reg = tmp_path / "model_paths.toml"
    shutil.copy(REPO / "model_paths.toml", reg)
    folder = fake_download(tmp_path)
    r = run_script("deepseek-ai/deepseek-llm-7b-chat", "--from-folder", str(folder), "--cores", "1", registry=reg)
    assert r.returncode == 0, r.stderr
    models = {m["name"]: m for m in tomllib.loads(reg.read_text())["models"]}
    new = models["deepseek-llm-7b-chat"]
    assert new["chat_template"] == "deepseek-chat" and new["cores"] == [1] and new["port"] == 21006
    assert (tmp_path / "supervisord.conf").read_text().count("[program:worker-deepseek-llm-7b-chat]") == 1
    again = run_script("deepseek-ai/deepseek-llm-7b-chat", "--from-folder", str(folder), registry=reg)
    assert "already in" in again.stdout


def test_unknown_model_needs_a_template(tmp_path):
    reg = tmp_path / "model_paths.toml"
    r = run_script("someone/new-model", "--from-folder", str(fake_download(tmp_path)), registry=reg)
    assert r.returncode == 1 and "no chat template known for 'someone/new-model'" in r.stderr


@pytest.mark.slow
def test_unreachable_hub_fails_with_a_clear_error(tmp_path):
    """The real modelscope client, pointed at a closed loopback port: fails fast, says what to do."""
    import os

    reg = tmp_path / "model_paths.toml"
    env = {**os.environ, "MODELSCOPE_DOMAIN": "127.0.0.1:9", "FLEET_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(REPO / "scripts/download_modelscope.py"), "qwen/Qwen-7B-Chat",
                        "--registry", str(reg)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 1
    assert "could not download 'qwen/Qwen-7B-Chat' from ModelScope" in r.stderr and "--from-folder" in r.stderr
    assert not reg.exists()
