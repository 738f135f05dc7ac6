"""The transformers backend on current transformers: a model of a 2025 architecture (a tiny Qwen3,
made here with the real Qwen tokenizer) loads and answers, in the main runtime, with log-probabilities
and alternatives per token (the backend scores only the new tokens) and a repeatable seed."""
from __future__ import annotations

import pytest

from conftest import DEFAULTS, QWEN_HF, Stack, free_port
from tests.tiny_models import tiny_qwen3

pytestmark = pytest.mark.slow
MODEL = "tiny-qwen3"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "model", DEFAULTS[QWEN_HF].resolved_path)
    s = Stack(tmp_path_factory.mktemp("current"), [{
        "name": MODEL, "path": str(folder), "backend": "transformers", "port": free_port(), "cores": [0],
        "memory_budget": "2GiB", "chat_template": "qwen2.5", "context_length": 2048, "concurrency": 2,
        "dtype": "float32"}])
    try:
        s.start_fleet()
        s.wait_registered([MODEL], timeout=180)
        yield s
    finally:
        s.stop()


def test_a_qwen3_model_answers_on_the_transformers_backend(fleet):
    from deploy.backends import load_registry

    entry = load_registry(fleet.registry).models[0]
    assert entry.options.runtime_of(entry) == "main"  # no code of its own: the main runtime
    client = fleet.openai()
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "你好"}], max_tokens=6,
                                       temperature=0, logprobs=True, top_logprobs=3)
    assert r.usage.completion_tokens == 6 and r.choices[0].finish_reason == "length"
    tokens = r.choices[0].logprobs.content
    assert len(tokens) == 6 and all(len(t.top_logprobs) == 3 for t in tokens)
    assert all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob for t in tokens)
    assert tokens[0].logprob == pytest.approx(tokens[0].top_logprobs[0].logprob)  # greedy: the likeliest
    seeded = [client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                             temperature=1.0, seed=7).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]
    info = fleet.fleet.worker_info(fleet.worker_address(MODEL))
    assert "logprobs" in info["features"]
