"""ModelScope download: everything but the hub itself, which CI cannot reach."""
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import DEFAULTS, QWEN_HF, REPO, copy_model_folder
from deploy.provision.modelscope import build_entry, catalog, lookup


def test_catalog_short_names_use_known_templates_and_opt_in_to_remote_code():
    from deploy.registry.sizes import parse_size
    from deploy.registry.templates import known_templates

    cat = catalog()
    assert {c.chat_template for c in cat.values()} <= known_templates()
    assert cat["qwen-7b-chat"].trust_remote_code and cat["chatglm3-6b"].trust_remote_code
    assert not cat["deepseek-llm-7b-chat"].trust_remote_code
    assert {"qwen2.5-0.5b-instruct", "qwen2.5-7b-instruct", "qwen2.5-7b-instruct-gguf"} <= set(cat)
    assert lookup("zhipuai/ChatGLM3-6B").name == "chatglm3-6b" and lookup("someone/else") is None
    new = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "deepseek-r1-distill-qwen-1.5b",
           "deepseek-r1-distill-qwen-7b", "glm-4-9b-0414", "glm-z1-9b-0414"]
    assert all(cat[n].chat_template == "auto" and cat[n].gguf for n in new)
    fits = [cat[n].fit_estimate() for n in new]  # known before the download: from the published size and shape
    assert all(f > parse_size(cat[n].download) for n, f in zip(new, fits))  # weights, KV cache and runtime
    assert fits[0] < fits[1] < fits[2] < fits[3]  # Qwen3 sizes in order


def fake_download(tmp_path):
    """A folder shaped like a ModelScope snapshot: the converted Qwen's files."""
    return copy_model_folder(DEFAULTS[QWEN_HF].resolved_path, tmp_path / "snapshot")


def test_entry_budget_is_the_estimate_plus_margin(tmp_path):
    folder = fake_download(tmp_path)
    e = build_entry("qwen/Qwen-7B-Chat", folder, 21010, [0, 1], {})
    assert e["name"] == "qwen-7b-chat" and e["chat_template"] == "qwen-7b-chat" and e["trust_remote_code"]
    assert e["source"] == "modelscope:qwen/Qwen-7B-Chat" and e["backend"] == "transformers"
    from deploy.backends.transformers import resolve_dtype
    from deploy.backends import parse_registry
    from deploy.backends.fit import estimate

    need = estimate(parse_registry({"models": [{**e, "memory_budget": "100GiB"}]}).models[0]).total
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


def test_a_model_the_catalogue_does_not_know_uses_its_own_template(tmp_path):
    """chat_template = "auto" where the folder ships one; where it ships none, the download names the fix."""
    import json

    reg = tmp_path / "model_paths.toml"
    r = run_script("someone/new-model", "--from-folder", str(fake_download(tmp_path)), registry=reg)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads(reg.read_text())["models"][0]["chat_template"] == "auto"
    src, bare = DEFAULTS[QWEN_HF].resolved_path, tmp_path / "bare"
    bare.mkdir()
    for f in src.iterdir():
        if f.name != "tokenizer_config.json":
            (bare / f.name).symlink_to(f)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    r = run_script("someone/bare-model", "--from-folder", str(bare), registry=reg)
    assert r.returncode == 1 and "'someone/bare-model' ships no chat template" in r.stderr
    assert "--chat-template NAME" in r.stderr
    r = run_script("someone/bare-model", "--from-folder", str(bare), "--chat-template", "qwen2.5", registry=reg)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_unreachable_hub_fails_with_one_line_naming_the_endpoint_and_the_setting(tmp_path):
    """The real modelscope client, pointed at a closed loopback port through its own endpoint setting."""
    import os

    reg = tmp_path / "model_paths.toml"
    env = {**os.environ, "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9", "FLEET_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "download", "qwen-7b-chat"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("ERROR")]
    assert len(err) == 1, r.stderr
    assert "cannot reach ModelScope at http://127.0.0.1:9 to download 'qwen/Qwen-7B-Chat'" in err[0]
    assert "set MODELSCOPE_ENDPOINT" in err[0] and "--from-folder" in err[0]
    assert not reg.exists()


@pytest.mark.slow
def test_modelscope_download_to_a_served_q4_k_m(tmp_path):
    """The real modelscope client against a local stand-in of its hub serving the default HF folder:
    a progress bar; killed halfway, it resumes without fetching twice; a corrupted file is refused;
    the entry is registered with template, remote-code flag and budget; `quantize` makes a Q4_K_M
    with llama.cpp's own tools; the worker comes up and answers through the API, stopping at its
    end-of-turn token."""
    import os
    import signal

    from conftest import Stack, free_port, wait_for
    from deploy.backends.gguf import read_gguf
    from tests.modelscope_standin import ModelScopeStandIn

    src = DEFAULTS[QWEN_HF].resolved_path
    weights = (src / "model.safetensors").stat().st_size
    reg = tmp_path / "model_paths.toml"
    hub = ModelScopeStandIn(src, "qwen/Qwen2.5-0.5B-Instruct")
    from deploy.registry.paths import tools_dir

    env = {**os.environ, "MODELSCOPE_ENDPOINT": hub.url, "FLEET_CACHE": str(tmp_path / "cache"),
           "FLEET_TOOLS": str(tools_dir())}  # llama.cpp's tools are built once per machine, not per test
    download = [sys.executable, "-m", "deploy", "--registry", str(reg), "download", "qwen2.5-0.5b-instruct",
                "--cores", "1"]
    try:
        hub.rate = 150e6  # slow enough to kill it halfway
        p = subprocess.Popen(download, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        wait_for(lambda: hub.bytes_sent.get("model.safetensors", 0) > weights // 3, 120, "a third of the weights")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        hub.rate = None
        r = subprocess.run(download, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "model.safetensors" in r.stderr and "%|" in r.stderr  # ModelScope's own progress bars
        resumed = [q for q in hub.requests if q["query"].get("FilePath") == "model.safetensors" and q["range"]]
        assert resumed and int(resumed[0]["range"].split("=")[1].rstrip("-")) > weights // 4
        assert hub.bytes_sent["model.safetensors"] < weights * 1.05  # not fetched twice
        assert all(hub.bytes_sent[f] == (src / f).stat().st_size for f in hub.files if f != "model.safetensors")
    finally:
        hub.close()
    entry = {m["name"]: m for m in tomllib.loads(reg.read_text())["models"]}["qwen2.5-0.5b-instruct"]
    assert (entry["backend"], entry["chat_template"], entry["source"]) == (
        "transformers", "qwen2.5", "modelscope:qwen/Qwen2.5-0.5B-Instruct")
    assert "trust_remote_code" not in entry and float(entry["memory_budget"].removesuffix("GiB")) > 1.0

    # a model that ships its own code is registered with trust_remote_code (same files, seed model's id)
    hub = ModelScopeStandIn(src, "qwen/Qwen-7B-Chat")
    try:
        r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "download", "qwen-7b-chat"],
                           cwd=REPO, env={**env, "MODELSCOPE_ENDPOINT": hub.url}, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
    finally:
        hub.close()
    seed = {m["name"]: m for m in tomllib.loads(reg.read_text())["models"]}["qwen-7b-chat"]
    assert seed["trust_remote_code"] is True and seed["chat_template"] == "qwen-7b-chat"

    # a corrupted file is detected by its sha256, and nothing is registered
    hub = ModelScopeStandIn(src, "qwen/Qwen2.5-1.5B-Instruct")
    hub.corrupt = "config.json"
    try:
        r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "download", "qwen2.5-1.5b-instruct"],
                           cwd=REPO, env={**env, "MODELSCOPE_ENDPOINT": hub.url}, capture_output=True, text=True,
                           timeout=600)
    finally:
        hub.close()
    assert r.returncode == 1 and "Hash mismatch for config.json" in r.stderr and "rerun" in r.stderr
    assert "qwen2.5-1.5b-instruct" not in reg.read_text()

    # quantize with llama.cpp's own converter and quantiser
    q = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "quantize", "qwen2.5-0.5b-instruct"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert q.returncode == 0, q.stdout[-3000:] + q.stderr[-3000:]
    for step in ("[1/4] disk: needs", "[2/4]", "[3/4]", "[4/4] registered 'qwen2.5-0.5b-instruct-q4_k_m'"):
        assert step in q.stdout, q.stdout
    new = {m["name"]: m for m in tomllib.loads(reg.read_text())["models"]}["qwen2.5-0.5b-instruct-q4_k_m"]
    gguf = Path(new["path"])
    assert gguf.parent == Path(entry["path"]).parent  # next to the model
    meta, tensors = read_gguf(gguf)
    assert meta["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert {12, 14} <= {t["type"] for t in tensors}  # llama.cpp's mix of Q4_K and Q6_K
    assert (new["backend"], new["chat_template"], new["cores"], new["threads"]) == ("llama.cpp", "qwen2.5", [0, 1], 1)
    assert "[program:worker-qwen2.5-0.5b-instruct-q4_k_m]" in (tmp_path / "supervisord.conf").read_text()
    again = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "quantize", "qwen2.5-0.5b-instruct"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing converted twice" in again.stdout

    (tmp_path / "stack").mkdir()
    s = Stack(tmp_path / "stack", [dict(new, port=free_port())])
    try:
        s.start_controller()
        s.start_worker(new["name"])
        s.start_api()
        s.wait_registered([new["name"]], timeout=120)
        from openai import OpenAI

        client = OpenAI(base_url=s.api_base, api_key="unused", timeout=120)
        reply = client.chat.completions.create(model=new["name"], temperature=0, max_tokens=64, messages=[
            {"role": "user", "content": "What is 17 + 25? Answer with the number only."}])
        text = reply.choices[0].message.content
        assert "42" in text, text  # coherent
        assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens < 64  # stopped at <|im_end|>
        assert "<|im_end|>" not in text and "<|im_start|>" not in text
        code = client.chat.completions.create(model=new["name"], temperature=0, max_tokens=200, messages=[
            {"role": "user", "content": "用 Python 写一个函数 add(a, b)，返回两数之和。"}]).choices[0].message.content
        assert "def add(" in code and "return" in code, code  # the coder model still writes code
        served = s.fleet.worker_info(s.worker_address(new["name"]))
        assert (served["quantisation"], served["chat_template"]) == ("Q4_K_M", "qwen2.5")
    finally:
        s.stop()


@pytest.mark.slow
def test_download_qwen3_8b_registers_a_fitted_entry_with_its_own_template(tmp_path):
    """`download qwen3-8b` with the real modelscope client against the hub's stand-in, serving a GGUF
    named like the published Q4_K_M (the default Qwen's weights with Qwen3's published template):
    the one file the catalogue's pattern picks is fetched, and the entry uses the template the model
    ships, is budgeted by the fit estimate of the file, and passes the check against this host."""
    import os

    from conftest import QWEN
    from deploy.backends import load_registry
    from deploy.backends.fit import estimate
    from tests.modelscope_standin import ModelScopeStandIn
    from tests.thinking_models import QWEN3, with_template

    gguf = with_template(DEFAULTS[QWEN].resolved_path, QWEN3, tmp_path / "made")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Qwen3-8B-Q4_K_M.gguf").symlink_to(gguf)
    (repo / "Qwen3-8B-Q8_0.gguf").symlink_to(gguf)  # another quantisation in the repository: not fetched
    (repo / "README.md").write_text("Qwen3-8B-GGUF\n")
    reg = tmp_path / "model_paths.toml"
    hub = ModelScopeStandIn(repo, "Qwen/Qwen3-8B-GGUF")
    env = {**os.environ, "MODELSCOPE_ENDPOINT": hub.url, "FLEET_CACHE": str(tmp_path / "cache")}
    try:
        r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "download", "qwen3-8b"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        hub.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Qwen3-8B-Q8_0.gguf" not in hub.bytes_sent and hub.bytes_sent["Qwen3-8B-Q4_K_M.gguf"] == gguf.stat().st_size
    raw = {m["name"]: m for m in tomllib.loads(reg.read_text())["models"]}["qwen3-8b"]
    assert (raw["backend"], raw["chat_template"], raw["source"]) == ("llama.cpp", "auto", "modelscope:Qwen/Qwen3-8B-GGUF")
    assert "template auto" in r.stdout
    entry = next(m for m in load_registry(reg).models if m.name == "qwen3-8b")
    need = estimate(entry).total
    assert need * 1.15 <= entry.memory_budget < need * 1.15 + 0.11 * 1024**3
    check = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "check"], cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    shown = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "templates"], cwd=REPO, env=env,
                           capture_output=True, text=True).stdout
    assert any(line.split()[:1] == ["qwen3-8b"] and "auto (its own, thinks)" in line for line in shown.splitlines())
