"""Speculative decoding per entry (speculation, draft_model) on real workers: an n-gram mode drafts
from the conversation and a draft model drafts beside the model, both through the API, with the
worker's counters in /fleet_info; the fit estimate counts a draft model; wrong combinations are
refused with the fix. bench/speculation.py measures what each mode is worth per workload."""
import subprocess
import sys

import httpx
import pytest

from conftest import DEFAULTS, QWEN, REPO, Stack, entry, free_port, write_registry
from deploy.backends import parse_registry
from deploy.backends.fit import estimate
from deploy.backends.llamacpp import DRAFT_RUNTIME

pytestmark = pytest.mark.slow
CODE = (REPO / "deploy/backends/openai_shapes.py").read_text()
CODE = CODE[CODE.index("def per_token"):CODE.index("class TokenLogprobs")].strip()
EDIT = f"Rename the function per_token to logprobs_per_token and output the whole code, otherwise unchanged:\n\n" \
       f"```python\n{CODE}\n```"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("spec"), [
        entry(QWEN, name="ngram", speculation="ngram-simple", cores=[0, 1]),
        entry(QWEN, name="drafted", speculation="draft", draft_model=str(DEFAULTS[QWEN].path), cores=[0, 1],
              memory_budget="2.5GiB")])  # the draft model's weights, KV cache and context besides the model's
    try:
        s.start_fleet()
        s.wait_registered(["ngram", "drafted"])
        yield s
    finally:
        s.stop()


def counters(stack: Stack, model: str) -> dict:
    return httpx.get(stack.worker_address(model) + "/fleet_info", timeout=10).json()


@pytest.mark.parametrize("model", ["ngram", "drafted"])
def test_a_speculating_worker_drafts_and_the_model_accepts(fleet, model):
    c = fleet.openai(timeout=300)
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": EDIT}], max_tokens=160,
                                  temperature=0)
    assert "logprobs_per_token" in r.choices[0].message.content
    info = counters(fleet, model)
    assert info["speculation"] == ("ngram-simple" if model == "ngram" else "draft")
    assert info["drafted_tokens"] > 0 and 0 < info["accepted_tokens"] <= info["drafted_tokens"], info
    if model == "drafted":  # its own weights as the draft, greedy: nearly every draft is right
        assert info["accepted_tokens"] >= 0.8 * info["drafted_tokens"], info


def test_the_fit_estimate_counts_the_draft_model():
    raw = DEFAULTS[QWEN].model_dump(mode="json", exclude_none=True)
    plain = estimate(parse_registry({"models": [raw]}).models[0])
    with_draft = estimate(parse_registry({"models": [{**raw, "speculation": "draft",
                                                      "draft_model": raw["path"]}]}).models[0])
    assert with_draft.weights == plain.weights + DEFAULTS[QWEN].resolved_path.stat().st_size
    assert with_draft.kv_cache == 2 * plain.kv_cache  # its own cache for every slot
    # logits for every token a step checks: 4 slots x (8 drafted + 1) x 151,936 x 4 bytes; its own context
    assert with_draft.overhead - plain.overhead == 21_878_784 + DRAFT_RUNTIME
    ngram = estimate(parse_registry({"models": [{**raw, "speculation": "ngram-mod"}]}).models[0])
    assert ngram.overhead - plain.overhead == 4 * 65 * 151_936 * 4  # 260 tokens, under a step's 512


@pytest.mark.parametrize("over, says", [({"speculation": "draft"}, 'speculation = "draft" and draft_model go together'),
                                        ({"draft_model": "/x.gguf"}, "draft_model go together"),
                                        ({"speculation": "eagle"}, "speculation")])
def test_wrong_combinations_are_refused_with_the_fix(over, says):
    raw = DEFAULTS[QWEN].model_dump(mode="json", exclude_none=True)
    with pytest.raises(Exception) as e:
        parse_registry({"models": [{**raw, **over}]})
    assert says in str(e.value)


def test_a_missing_draft_model_is_named(tmp_path):
    reg = write_registry(tmp_path / "model_paths.toml", [entry(QWEN, speculation="draft",
                                                                 draft_model=str(tmp_path / "nope.gguf"))],
                         free_port(), free_port(), free_port())
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "check"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "nope.gguf is not a file" in r.stdout + r.stderr, r.stdout + r.stderr
