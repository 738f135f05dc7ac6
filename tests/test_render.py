"""supervisord.conf is generated from model_paths.toml and must not drift from it."""
import configparser
import subprocess
import sys

from deploy.backends import load_registry, parse_registry
from deploy.registry.paths import DEFAULT_REGISTRY, REPO_ROOT, FleetPaths
from deploy.registry.render import render

HERE = FleetPaths(DEFAULT_REGISTRY)

GiB = 1024**3


def parsed(text: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=True)
    cp.read_string(text)
    return cp


def test_committed_supervisord_conf_matches_registry():
    reg = load_registry(REPO_ROOT / "model_paths.toml")
    committed = (REPO_ROOT / "supervisord.conf").read_text()
    assert committed == render(reg, HERE), "supervisord.conf drifted from model_paths.toml: run `python -m deploy render`"


def test_programs_one_worker_per_model_loopback_and_group_kill():
    reg = load_registry(REPO_ROOT / "model_paths.toml")
    cp = parsed(render(reg, HERE))
    progs = [s.split(":", 1)[1] for s in cp.sections() if s.startswith("program:")]
    assert progs[:3] == ["controller", "api_server", "webui"]
    assert progs[3:] == [f"worker-{m.name}" for m in reg.models]
    assert cp["program:controller"]["command"].endswith("-m deploy controller")  # ours, behind the fleet secret
    assert reg.deployment.host == "127.0.0.1"  # every service binds where [deployment] says: loopback by default
    for p in progs:
        sec = cp[f"program:{p}"]
        assert sec["stopasgroup"] == "true" and sec["killasgroup"] == "true"
        assert sec["stdout_logfile"].startswith("%(here)s/logs/")
    assert cp["program:webui"]["command"].endswith("-m deploy webui")


def _worker_section(budget: str):
    m = {"name": "m", "path": "/x.gguf", "backend": "llama.cpp", "port": 21002, "cores": [0],
         "memory_budget": budget, "chat_template": "qwen2.5"}
    return parsed(render(parse_registry({"models": [m]}), HERE))["program:worker-m"]


def test_startsecs_grows_with_the_budget_and_bounds_restarts():
    """A worker that fails while loading must be a failed start (FATAL after retries), not a restart
    loop: startsecs must outlast loading, which grows with the model, which the budget bounds."""
    small, big, huge = _worker_section("1GiB"), _worker_section("16GiB"), _worker_section("200GiB")
    assert int(small["startsecs"]) == 40       # 30 s + 10 s per GiB
    assert int(big["startsecs"]) == 190
    assert int(huge["startsecs"]) == 600       # capped: supervisord waits no longer than 10 minutes
    # loading reads the weights: even at 100 MB/s a 16 GiB budget's weights load within startsecs
    assert int(big["startsecs"]) > 16 * GiB / 100e6
    for sec in (small, big, huge):
        assert int(sec["startretries"]) <= 3 and sec["autorestart"] == "unexpected" and sec["exitcodes"] == "0"


def test_render_check_and_write(tmp_path):
    """`render --check` fails on a stale supervisord.conf and passes once `render` rewrote it."""
    import shutil

    reg = tmp_path / "model_paths.toml"
    shutil.copy(REPO_ROOT / "model_paths.toml", reg)
    run = lambda *a: subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "render", *a],  # noqa: E731
                                    capture_output=True, text=True)
    r = run("--check")
    assert r.returncode == 1 and "out of date" in r.stderr  # there is none yet
    r = run()
    assert r.returncode == 0 and "updated" in r.stdout
    assert run("--check").returncode == 0 and "already up to date" in run().stdout
    reg.write_text(reg.read_text().replace('name = "smollm2-135m-instruct"', 'name = "smol"'))
    r = run("--check")
    assert r.returncode == 1 and f"python -m deploy --registry {reg} render" in r.stderr


def test_a_worker_host_renders_its_workers_only():
    reg = parse_registry({"deployment": {"role": "workers", "host": "192.168.1.11",
                                         "controller_address": "http://192.168.1.10:21001"},
                          "models": [{"name": "m", "path": "/m.gguf", "backend": "llama.cpp", "port": 21002,
                                      "cores": [0], "memory_budget": "1GiB", "chat_template": "qwen2.5"}]})
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(render(reg, HERE))
    assert [s for s in conf.sections() if s.startswith("program:")] == ["program:worker-m"]
    assert reg.deployment.controller_url == "http://192.168.1.10:21001"


def test_worker_host_settings_are_checked():
    import pytest

    from deploy.registry.config import RegistryError

    with pytest.raises(RegistryError, match="needs controller_address"):
        parse_registry({"deployment": {"role": "workers"}, "models": []})
    with pytest.raises(RegistryError, match="must be a URL"):
        parse_registry({"deployment": {"controller_address": "10.0.0.1:21001"}, "models": []})
    d = parse_registry({"deployment": {"controller_host": "0.0.0.0"}, "models": []}).deployment
    assert (d.controller_bind, d.controller_url) == ("0.0.0.0", "http://127.0.0.1:21001")


def test_a_registry_kept_elsewhere_gets_its_own_files_and_this_python(tmp_path):
    """A registry outside the checkout: its programs run this environment's Python (none lies beside
    it), an absolute log_dir stays absolute, a relative one is beside the registry, and two registries
    in one folder are two fleets: each its own supervisord file, socket, pid, logs and FLEET_REGISTRY."""
    import shutil

    from deploy.registry.paths import fleet_python

    folder = tmp_path / "fleet"
    folder.mkdir()
    logs = tmp_path / "var-log" / "fleet"
    for name, log_dir in (("model_paths.toml", str(logs)), ("second.toml", "logs")):
        shutil.copy(REPO_ROOT / "model_paths.toml", folder / name)
        text = (folder / name).read_text().replace('log_dir = "logs"', f'log_dir = "{log_dir}"')
        (folder / name).write_text(text)
        r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(folder / name), "render"],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    first, second = parsed((folder / "supervisord.conf").read_text()), parsed((folder / "second.supervisord.conf").read_text())
    python = str(fleet_python())
    assert not python.startswith(str(folder))
    for cp in (first, second):
        for section in cp.sections():
            if section.startswith("program:"):
                assert cp[section]["command"].startswith(python + " -m deploy "), cp[section]["command"]
    assert first["program:controller"]["stdout_logfile"] == f"{logs}/controller.log"  # absolute: as written
    assert first["unix_http_server"]["file"] == f"{logs}/supervisor.sock"
    assert 'FLEET_REGISTRY="%(here)s/model_paths.toml"' in first["program:webui"]["environment"]
    assert second["program:controller"]["stdout_logfile"] == "%(here)s/logs/second.controller.log"
    assert second["unix_http_server"]["file"] == "%(here)s/logs/second.supervisor.sock"
    assert second["supervisord"]["pidfile"] == "%(here)s/logs/second.supervisord.pid"
    assert 'FLEET_REGISTRY="%(here)s/second.toml"' in second["program:webui"]["environment"]
    assert 'LOGDIR="%(here)s/logs/second.fastchat"' in second["program:webui"]["environment"]
    assert "--registry second.toml render" in (folder / "second.supervisord.conf").read_text().splitlines()[0]
