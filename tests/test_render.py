"""supervisord.conf is generated from model_paths.toml and must not drift from it."""
import configparser

from deploy.config import REPO_ROOT, load_registry
from deploy.fit import estimate
from deploy.render import render, startsecs_for


def parsed(text: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=True)
    cp.read_string(text)
    return cp


def test_committed_supervisord_conf_matches_registry():
    reg = load_registry(REPO_ROOT / "model_paths.toml")
    committed = (REPO_ROOT / "supervisord.conf").read_text()
    assert committed == render(reg), "supervisord.conf drifted from model_paths.toml: run `python -m deploy render`"


def test_programs_one_worker_per_model_loopback_and_group_kill():
    reg = load_registry(REPO_ROOT / "model_paths.toml")
    cp = parsed(render(reg))
    progs = [s.split(":", 1)[1] for s in cp.sections() if s.startswith("program:")]
    assert progs[:3] == ["controller", "api_server", "webui"]
    assert progs[3:] == [f"worker-{m.name}" for m in reg.models]
    assert "--host 127.0.0.1" in cp["program:controller"]["command"]
    for p in progs:
        sec = cp[f"program:{p}"]
        assert sec["stopasgroup"] == "true" and sec["killasgroup"] == "true"
        assert sec["stdout_logfile"].startswith("%(here)s/logs/")
    assert cp["program:webui"]["command"].endswith("-m deploy webui")


def test_startsecs_exceeds_load_time_and_bounds_restarts():
    """A worker that fails while loading must be a failed start (FATAL after retries), not a restart loop."""
    reg = load_registry(REPO_ROOT / "model_paths.toml")
    cp = parsed(render(reg))
    for m in reg.models:
        sec = cp[f"program:worker-{m.name}"]
        assert int(sec["startsecs"]) >= 30 > 1
        assert int(sec["startretries"]) <= 3
        assert sec["autorestart"] == "unexpected"
        # load time is bounded by reading the weights; even at 100 MB/s it fits in startsecs
        weights = m.memory_budget
        assert int(sec["startsecs"]) > weights / 100e6
    assert startsecs_for(reg.models[0]) == int(cp[f"program:worker-{reg.models[0].name}"]["startsecs"])
