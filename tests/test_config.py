"""model_paths.toml validation: every problem names the entry, the field and the fix."""
from pathlib import Path

import pytest

from deploy.backends import load_registry, parse_registry
from deploy.registry.config import RegistryError, check_host
from deploy.registry.host import HostInfo
from deploy.registry.sizes import fmt_size, parse_size

GiB = 1024**3
HOST = HostInfo(cores=frozenset({0, 1}), mem_total=24 * GiB)


def model(**over):
    m = {"name": "qwen", "path": "/tmp/q.gguf", "backend": "llama.cpp", "port": 21002, "cores": [0],
         "memory_budget": "2GiB", "chat_template": "qwen2.5"}
    m.update(over)
    return m


def errors_of(data) -> str:
    with pytest.raises(RegistryError) as e:
        parse_registry(data)
    return str(e.value)


def test_committed_registry_is_valid():
    reg = load_registry()
    assert {m.backend for m in reg.models} == {"llama.cpp", "transformers"}
    errors, _ = check_host(reg, HOST, check_paths=False)
    assert errors == []


def test_unknown_key_names_entry_field_and_fix():
    msg = errors_of({"models": [model(memroy_budget="1GiB")]})
    assert "models[0] 'qwen'" in msg and "unknown key 'memroy_budget'" in msg
    assert "Fix:" in msg and "memory_budget" in msg  # lists the known keys


def test_missing_field_and_bad_values():
    m = model()
    del m["memory_budget"]
    assert "required field 'memory_budget' is missing" in errors_of({"models": [m]})
    msg = errors_of({"models": [model(backend="llamacpp")]})
    assert "unknown backend 'llamacpp'" in msg and "use one of: llama.cpp, transformers" in msg
    assert "'lots' is not a size" in errors_of({"models": [model(memory_budget="lots")]})


def test_duplicate_name_and_port():
    msg = errors_of({"models": [model(), model(port=21003)]})
    assert "field 'name': duplicate of models[0]" in msg
    msg = errors_of({"models": [model(), model(name="other")]})
    assert "models[1] 'other', field 'port': 21002 is already used by models[0] 'qwen'" in msg
    msg = errors_of({"deployment": {"api_port": 21002}, "models": [model()]})
    assert "deployment.api_port" in msg


def test_cores_parse_and_host_checks(tmp_path):
    f = tmp_path / "q.gguf"
    f.write_bytes(b"GGUF")
    reg = parse_registry({"models": [model(path=str(f), cores="0-1"), model(name="b", port=21003, path=str(f), cores=[1, 5])]})
    assert reg.models[0].cores == [0, 1]
    errors, warnings = check_host(reg, HOST)
    assert any("models[1] 'b', field 'cores': core(s) 5 do not exist on this host (it has 0-1)" in e for e in errors)
    assert any("core 1 is shared with 'qwen'" in w for w in warnings)


def test_missing_path_and_wrong_kind_of_path(tmp_path):
    reg = parse_registry({"models": [model(path=str(tmp_path / "nope.gguf")),
                                     model(name="hf", port=21003, backend="transformers", path=str(tmp_path))]})
    errors, _ = check_host(reg, HOST)
    assert any("models[0] 'qwen', field 'path'" in e and "does not exist" in e and "Fix:" in e for e in errors)
    assert any("models[1] 'hf', field 'path'" in e and "no config.json" in e for e in errors)


def test_budgets_beyond_the_pool_load_on_demand_but_one_larger_than_the_pool_is_refused():
    from deploy.registry.config import pool_note

    reg = parse_registry({"models": [model(memory_budget="20GiB"), model(name="b", port=21003, memory_budget="8GiB")]})
    errors, _ = check_host(reg, HOST, check_paths=False)
    assert errors == []  # 28 GiB of budgets on a 22 GiB pool: they take turns
    assert "budgets add up to 28.00 GiB, more than this host's memory pool of 22.00 GiB" in pool_note(reg, HOST)
    reg = parse_registry({"deployment": {"memory_limit": "12GiB"},
                          "models": [model(memory_budget="14GiB"), model(name="b", port=21003, memory_budget="8GiB")]})
    errors, _ = check_host(reg, HOST, check_paths=False)
    assert errors == ["models[0] 'qwen', field 'memory_budget': 14.00 GiB is more than this host's memory pool of "
                      "12.00 GiB (memory_limit), so it could never load. Fix: lower memory_budget, or raise "
                      "memory_limit in [deployment] (at most the machine's 24.00 GiB)."]
    assert pool_note(parse_registry({"models": [model()]}), HOST) is None


def test_a_pool_larger_than_the_machine_and_kept_models_beyond_it_are_refused():
    reg = parse_registry({"deployment": {"memory_limit": "30GiB"}, "models": [model()]})
    assert any("'memory_limit': 30.00 GiB is more than this machine's 24.00 GiB" in e
               for e in check_host(reg, HOST, check_paths=False)[0])
    reg = parse_registry({"deployment": {"memory_limit": "10GiB"},
                          "models": [model(memory_budget="6GiB", keep_loaded=True),
                                     model(name="b", port=21003, memory_budget="6GiB", keep_loaded=True)]})
    assert any("models kept loaded need 12.00 GiB together (qwen, b), more than this host's memory pool of 10.00 GiB"
               in e for e in check_host(reg, HOST, check_paths=False)[0])
    with pytest.raises(RegistryError, match="'lots' is not a size"):
        parse_registry({"deployment": {"memory_limit": "lots"}})
    with pytest.raises(RegistryError, match="is not a duration"):
        parse_registry({"models": [model(idle_unload="soon")]})
    assert parse_registry({"models": [model(idle_unload="10m")]}).models[0].idle_unload == 600


def test_unknown_template_refused():
    reg = parse_registry({"models": [model(chat_template="chatml-typo")]})
    errors, _ = check_host(reg, HOST, check_paths=False)
    assert any("unknown template 'chatml-typo'" in e for e in errors)


def test_the_models_own_template_is_the_default_and_one_that_ships_none_is_refused(tmp_path):
    import json

    m = model()
    del m["chat_template"]
    assert parse_registry({"models": [m]}).models[0].chat_template == "auto"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    reg = parse_registry({"models": [model(backend="transformers", path=str(tmp_path), chat_template="auto")]})
    errors, _ = check_host(reg, HOST)
    assert any("field 'chat_template': \"auto\" renders the template the model ships" in e and "ships none" in e
               and "Fix: set chat_template to a name" in e for e in errors), errors
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].content }}")  # as transformers saves it
    assert not [e for e in check_host(reg, HOST)[0] if "chat_template" in e]


def test_toml_syntax_error_is_clear(tmp_path):
    p = tmp_path / "model_paths.toml"
    p.write_text("[[models]]\nname = 'x\n")
    with pytest.raises(RegistryError, match="not valid TOML"):
        load_registry(p)
    with pytest.raises(RegistryError, match="file not found"):
        load_registry(tmp_path / "absent.toml")


def test_fleet_cache_expansion(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path))
    reg = parse_registry({"models": [model(path="$FLEET_CACHE/x.gguf")]})
    assert reg.models[0].resolved_path == tmp_path / "x.gguf"
    monkeypatch.delenv("FLEET_CACHE")
    assert reg.models[0].resolved_path == Path.home() / ".cache/fastchat-fleet/x.gguf"


def test_sizes():
    assert parse_size("1.5GiB") == int(1.5 * GiB)
    assert parse_size("800MB") == 800_000_000
    assert parse_size(1234) == 1234
    assert fmt_size(2 * GiB) == "2.00 GiB"
    with pytest.raises(ValueError):
        parse_size("-1GiB")


def test_add_model_cli_is_generated_from_the_entry_fields(tmp_path):
    import subprocess
    import sys
    import tomllib

    from deploy.ops.entry_cli import entry_fields

    reg = tmp_path / "model_paths.toml"
    help_text = subprocess.run([sys.executable, "-m", "deploy", "add-model", "--help"], capture_output=True, text=True).stdout
    download_help = subprocess.run([sys.executable, "-m", "deploy", "download", "--help"], capture_output=True,
                                   text=True).stdout
    for name in entry_fields():  # the shared fields and every backend's own
        assert "--" + name.replace("_", "-") in help_text
        if name not in ("path", "source"):  # the download decides those
            assert "--" + name.replace("_", "-") in download_help, name
    args = [sys.executable, "-m", "deploy", "--registry", str(reg), "add-model", "--name", "glm", "--path", "/m/chatglm3-6b",
            "--backend", "transformers", "--port", "21010", "--cores", "0-1", "--memory-budget", "14GiB",
            "--chat-template", "chatglm3", "--trust-remote-code"]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = tomllib.loads(reg.read_text())["models"][0]
    assert m == {"name": "glm", "path": "/m/chatglm3-6b", "backend": "transformers", "port": 21010, "cores": "0-1",
                 "memory_budget": "14GiB", "chat_template": "chatglm3", "trust_remote_code": True}
    assert "[program:worker-glm]" in (tmp_path / "supervisord.conf").read_text()
    bad = subprocess.run(args[:-1] + ["--name", "x", "--port", "70000"], capture_output=True, text=True)
    assert bad.returncode == 2 and "add-model: models[0] 'x', field 'port': Input should be less than or equal to 65535" in bad.stderr


def test_add_model_refuses_a_duplicate_and_replace_replaces_it(tmp_path):
    import subprocess
    import sys
    import tomllib

    reg = tmp_path / "model_paths.toml"
    base = [sys.executable, "-m", "deploy", "--registry", str(reg), "add-model", "--name", "glm", "--path", "/m/glm",
            "--backend", "transformers", "--port", "21010", "--cores", "0", "--memory-budget", "14GiB",
            "--chat-template", "chatglm3"]
    assert subprocess.run(base, capture_output=True, text=True).returncode == 0
    dup = subprocess.run(base[:-1] + ["qwen-7b-chat"], capture_output=True, text=True)
    assert dup.returncode == 2 and "an entry named 'glm' exists already" in dup.stderr and "--replace" in dup.stderr
    assert tomllib.loads(reg.read_text())["models"][0]["chat_template"] == "chatglm3"  # untouched
    rep = subprocess.run(base[:-1] + ["qwen-7b-chat", "--replace"], capture_output=True, text=True)
    assert rep.returncode == 0 and "replaced 'glm'" in rep.stdout, rep.stderr
    models = tomllib.loads(reg.read_text())["models"]
    assert len(models) == 1 and models[0]["chat_template"] == "qwen-7b-chat"


def test_two_edits_at_once_keep_both_entries_on_their_own_ports(tmp_path, capfd):
    """Two `quantize` or `download` runs finishing together: each picks the next free port from the
    registry as it finds it, then writes. One at a time, both entries land, each on its own port."""
    import threading
    import time
    import tomllib

    from deploy.backends import catalogue
    from deploy.registry.edit import add_entries, next_free_port
    from deploy.registry.paths import FleetPaths

    paths = FleetPaths(tmp_path / "model_paths.toml")

    def add(name: str):
        def entry_for(data: dict) -> list[dict]:
            port = next_free_port(data)
            time.sleep(0.5)  # the other run reads the registry meanwhile
            return [{"name": name, "path": f"/m/{name}", "backend": "transformers", "port": port, "cores": [0],
                     "memory_budget": "1GiB", "chat_template": "chatglm3"}]
        add_entries(entry_for, paths, catalogue())

    runs = [threading.Thread(target=add, args=(n,)) for n in ("a", "b")]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    models = tomllib.loads(paths.registry.read_text())["models"]
    assert sorted(m["name"] for m in models) == ["a", "b"]
    assert len({m["port"] for m in models}) == 2
    assert "waiting for another process to finish editing model_paths.toml" in capfd.readouterr().err
