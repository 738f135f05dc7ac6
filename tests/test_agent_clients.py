"""Today's agent clients, as their users run them: Claude Code (Anthropic's Messages API) and Codex
CLI (OpenAI's Responses API), installed from npm at pinned versions, pointed at the fleet's API with
their default settings and the 1.5B default model, each completes one non-interactive prompt. Their
first request is their whole system prompt and tool set (about 12,000 and 10,000 tokens): it fits
the default entry's context, and every field of it is accepted, mapped or skipped. Any answer will
do: the model is tiny. Nothing leaves the machine (their telemetry and update checks are off).

The two clients' runs are marked `agents`: each spends minutes on its first prompt on two CPU cores,
so the default run (and CI) leaves them out; `scripts/test.sh -m agents` runs them."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import Stack, entry
from deploy.registry.paths import tools_dir

pytestmark = pytest.mark.slow
MODEL = "qwen2.5-coder-1.5b-instruct"
CLIENTS = {"@anthropic-ai/claude-code": "2.1.332", "@openai/codex": "0.171.0"}


@pytest.fixture(scope="module")
def clients():
    """The npm packages, installed once per machine beside llama.cpp's tools."""
    if shutil.which("npm") is None:
        pytest.fail("npm is missing: the agent-client tests install Claude Code and Codex CLI with it")
    folder = tools_dir() / ("agent-clients-" + "-".join(v for v in CLIENTS.values()))
    bins = folder / "node_modules" / ".bin"
    if not ((bins / "claude").exists() and (bins / "codex").exists()):
        folder.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder),
                            *[f"{p}@{v}" for p, v in CLIENTS.items()]], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    return bins


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    # both cores for the one model: the clients' first prompts are long
    s = Stack(tmp_path_factory.mktemp("agents"), [entry(MODEL, cores=[0, 1], threads=2)])
    s.use_api_keys()
    try:
        s.start_fleet()
        s.wait_registered([MODEL])
        yield s
    finally:
        s.stop()


def run(args: list[str], env: dict, cwd, timeout: float = 1200) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "TERM": "dumb", "LANG": "C.UTF-8"}
    return subprocess.run(args, env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.mark.agents
def test_claude_code_completes_a_prompt(clients, fleet, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = run([str(clients / "claude"), "-p", "Say hi."], {
        "HOME": str(home), "ANTHROPIC_BASE_URL": fleet.api_base[:-len("/v1")], "ANTHROPIC_API_KEY": fleet.api_key,
        # every model it would use is ours
        **{k: MODEL for k in ("ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                              "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL",
                              "CLAUDE_CODE_SUBAGENT_MODEL")},
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1", "API_TIMEOUT_MS": "1200000"}, tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:], fleet.procs["api"].output()[-3000:])
    assert r.stdout.strip(), r.stderr[-2000:]
    api_log = fleet.procs["api"].output()
    assert "POST /v1/messages?beta=true HTTP/1.1\" 200" in api_log, api_log[-3000:]


@pytest.mark.agents
def test_codex_cli_completes_a_prompt(clients, fleet, tmp_path):
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(f"""model = "{MODEL}"
model_provider = "fleet"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.fleet]
name = "fastchat-fleet"
base_url = "{fleet.api_base}"
wire_api = "responses"
env_key = "FLEET_API_KEY"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 1200000

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
""")
    r = run([str(clients / "codex"), "exec", "--skip-git-repo-check", "--ephemeral", "--color", "never", "Say hi."],
            {"HOME": str(home), "CODEX_HOME": str(home), "FLEET_API_KEY": fleet.api_key}, tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:], fleet.procs["api"].output()[-3000:])
    assert r.stdout.strip(), r.stderr[-2000:]
    api_log = fleet.procs["api"].output()
    assert "POST /v1/responses HTTP/1.1\" 200" in api_log, api_log[-3000:]
    assert "skipped a 'web_search' tool" in api_log  # said, not silent


def test_their_first_prompts_fit_and_are_counted(fleet):
    """count_tokens (which Claude Code's /context asks) on a prompt as long as theirs."""
    import httpx

    long = "word " * 9000
    r = httpx.post(fleet.api_base[:-3] + "/v1/messages/count_tokens", timeout=600,
                   headers={"x-api-key": fleet.api_key, "anthropic-version": "2023-06-01"},
                   json={"model": MODEL, "messages": [{"role": "user", "content": long}]})
    assert r.status_code == 200, r.text
    assert 9000 <= r.json()["input_tokens"] < 32768
