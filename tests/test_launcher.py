"""The worker launcher refuses bad entries fast, with our message, before loading anything."""
import subprocess
import sys

import pytest

from conftest import DEFAULTS, QWEN, QWEN_HF, copy_model_folder, entry, free_port, write_registry


def launch(tmp_path, model: dict, timeout=120):
    reg = write_registry(tmp_path / "model_paths.toml", [model], free_port(), free_port(), free_port())
    return subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "worker", model["name"]],
                          capture_output=True, text=True, timeout=timeout)


def test_missing_path_gets_our_error_not_fastchats(tmp_path):
    r = launch(tmp_path, entry(QWEN_HF, path=str(tmp_path / "Qwen-7B-Chat")))
    assert r.returncode == 78
    assert f"field 'path': {tmp_path}/Qwen-7B-Chat does not exist" in r.stderr
    assert "Fix:" in r.stderr and "Repo id must be" not in r.stderr


def test_model_that_does_not_fit_is_refused_with_numbers(tmp_path):
    r = launch(tmp_path, entry(QWEN, memory_budget="700MiB"))
    assert r.returncode == 78
    assert "does not fit its memory budget: weights 468.64 MiB + KV cache" in r.stderr
    assert "against a budget of 700.00 MiB" in r.stderr and "raise memory_budget to at least" in r.stderr


def test_cores_the_host_does_not_have(tmp_path):
    r = launch(tmp_path, entry(QWEN, cores=[0, 63]))
    assert r.returncode == 78 and "core(s) 63 do not exist on this host" in r.stderr


@pytest.mark.slow
def test_remote_code_needs_an_explicit_opt_in(tmp_path):
    folder = copy_model_folder(DEFAULTS[QWEN_HF].resolved_path, tmp_path / "custom-code-model",
                               auto_map={"AutoModelForCausalLM": "modeling_custom.CustomModel"})
    r = launch(tmp_path, entry(QWEN_HF, path=str(folder), source="modelscope:someone/custom"))
    assert r.returncode == 78
    assert "ships its own Python code" in r.stderr and "set trust_remote_code = true" in r.stderr
