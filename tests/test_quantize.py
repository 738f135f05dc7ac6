"""`python -m deploy quantize` refuses what cannot work before it starts (the end-to-end run, from
a ModelScope download to a served Q4_K_M, is in tests/test_modelscope.py)."""
import pytest

from conftest import DEFAULTS, QWEN_HF


def test_disk_check_refuses_with_the_numbers(monkeypatch):
    import shutil
    from collections import namedtuple

    from deploy.provision import quantize

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30, 300 * 2**20))
    with pytest.raises(quantize.QuantizeError) as e:
        quantize.disk_check(DEFAULTS[QWEN_HF], "Q4_K_M")
    msg = str(e.value)
    assert "not enough disk space to quantise 'qwen2.5-coder-0.5b-instruct-hf'" in msg
    assert "300.00 MiB free" in msg and "bf16 intermediate" in msg and "Fix:" in msg


def test_only_hugging_face_folders_and_known_types(tmp_path):
    import subprocess
    import sys

    from conftest import QWEN, REPO, entry, free_port, write_registry

    reg = write_registry(tmp_path / "model_paths.toml", [entry(QWEN), entry(QWEN_HF)], free_port(), free_port(),
                         free_port())
    run = lambda *a: subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "quantize", *a],  # noqa
                                    capture_output=True, text=True, cwd=REPO, timeout=60)
    r = run(QWEN)
    assert r.returncode == 1 and "is not a Hugging Face folder" in r.stderr and "Fix:" in r.stderr
    r = run(QWEN_HF, "--type", "Q3_X")
    assert r.returncode == 1 and "--type Q3_X is not one of Q4_K_M" in r.stderr
    r = run("no-such-model")
    assert r.returncode == 2 and "no model named 'no-such-model'" in r.stderr
