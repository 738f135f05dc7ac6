"""Proposed cores for a new model: the least-used ones, one thread per core, no sharing of all cores."""
from deploy.registry.placement import propose


def test_first_model_gets_every_core():
    p = propose([], [0, 1])
    assert (p.cores, p.threads) == ([0, 1], 2)


def test_as_many_models_as_cores_or_more_get_every_core_and_one_thread():
    for existing in ([[0]], [[0], [1]], [[0, 1], [0, 1]]):
        p = propose(existing, [0, 1])
        assert (p.cores, p.threads) == ([0, 1], 1) and "one thread each" in p.reason


def test_on_a_bigger_machine_the_least_used_cores_are_split():
    p = propose([[0, 1, 2, 3]], list(range(8)))
    assert (p.cores, p.threads) == ([4, 5, 6, 7], 4)
    assert propose([[0, 1, 2, 3], [4, 5, 6, 7]], list(range(8))).cores == [0, 1]
    assert propose([[0, 1], [0, 1], [2, 3]], list(range(8))).cores == [4, 5]


def test_add_model_without_cores_takes_the_proposal(tmp_path):
    import subprocess
    import sys
    import tomllib

    reg = tmp_path / "model_paths.toml"

    def add(name, port):
        return subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "add-model", "--name", name,
                               "--path", "/m/x.gguf", "--backend", "llama.cpp", "--port", str(port),
                               "--memory-budget", "1GiB", "--chat-template", "qwen2.5"], capture_output=True, text=True)

    first = add("a", 21010)
    assert first.returncode == 0 and "cores [0, 1]" in first.stdout, first.stderr
    second = add("b", 21011)
    assert second.returncode == 0 and "one thread each" in second.stdout
    models = tomllib.loads(reg.read_text())["models"]
    assert [(m["cores"], m["threads"]) for m in models] == [("0,1", 2), ("0,1", 1)]
