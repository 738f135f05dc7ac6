"""Less work per token on llama.cpp: a follow-up reuses the conversation's KV cache (and says so in
OpenAI's usage.prompt_tokens_details.cached_tokens), a seeded request recomputes its prompt to stay
repeatable, the KV cache type of an entry is the engine's and the fit estimate's, and the engine's
RAM prompt cache gets only what the budget leaves. bench/prefix_reuse.py and bench/kv_cache.py
measure what these are worth."""
import pytest
from openai import OpenAI

from conftest import DEFAULTS, QWEN, SMALL, Stack, entry
from deploy.backends import load_registry, parse_registry
from deploy.backends.fit import estimate
from deploy.backends.llamacpp_worker import LlamaCppWorker
from deploy.registry.host import memory_of

pytestmark = pytest.mark.slow
MiB = 2**20
UNPACKED = "qwen-mapped-not-repacked"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("reuse"), [entry(QWEN), entry(SMALL), entry(SMALL, name="smol-q8", kv_cache_type="q8_0"),
                                                 entry(QWEN, name=UNPACKED, mmap=True, repack=False)])
    try:
        s.start_fleet()
        s.wait_registered([QWEN, SMALL, "smol-q8", UNPACKED])
        yield s
    finally:
        s.stop()


def ask(c: OpenAI, messages: list[dict], **kw):
    return c.chat.completions.create(model=QWEN, messages=messages, max_tokens=24, temperature=0, **kw)


def test_a_follow_up_reuses_the_conversation_and_says_so(fleet):
    c = fleet.openai(timeout=300)
    talk = [{"role": "user", "content": "Explain in two sentences what a hash map is. " * 8}]
    first = ask(c, talk)
    talk += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And a binary tree?"}]
    follow = ask(c, talk)
    cached = follow.usage.prompt_tokens_details.cached_tokens
    # all of turn 1's prompt came from the slot's cache; only the answer and the new turn are computed
    assert first.usage.prompt_tokens <= cached < follow.usage.prompt_tokens, (first.usage, follow.usage)
    streamed = list(c.chat.completions.create(model=QWEN, messages=talk, max_tokens=4, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert streamed[-1].usage.prompt_tokens_details.cached_tokens >= cached
    seeded = ask(c, talk, seed=1)  # repeatable: the whole prompt computed again
    assert seeded.usage.prompt_tokens_details.cached_tokens == 0


def test_the_kv_cache_type_is_the_engines_and_the_estimates(fleet):
    """q8_0 beside f16, the same model and slots: the engine holds the cache in q8_0 (its worker is
    smaller by what the fit estimate says the cache saves) and answers."""
    c = fleet.openai(timeout=300)
    for model in (SMALL, "smol-q8"):
        assert c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi!"}],
                                         max_tokens=8).choices[0].message.content
    reg = load_registry(fleet.registry)
    f16, q8 = (estimate(next(e for e in reg.models if e.name == n)).kv_cache for n in (SMALL, "smol-q8"))
    assert q8 == pytest.approx(f16 * 34 / 64, rel=0.001)  # 32 values in 34 bytes against 64
    anon = {n: memory_of(fleet.procs[f"worker-{n}"].p.pid)["anon"] for n in (SMALL, "smol-q8")}
    saved = anon[SMALL] - anon["smol-q8"]
    assert saved == pytest.approx(f16 - q8, rel=0.25), (anon, f16 - q8)


def test_a_mapped_model_not_repacked_keeps_its_weights_in_the_page_cache(fleet):
    """mmap = true, repack = false (the fast switch): the worker answers, its weights the mapped
    file's pages (RssFile), not a copy in its own memory. (This 0.5B's tensors are mostly q5_0, which
    llama.cpp does not repack: that repack = false reaches the engine is test_worker_runtime's.)"""
    c = fleet.openai(timeout=300)
    hi = [{"role": "user", "content": "What is 2 + 2?"}]
    answers = [c.chat.completions.create(model=m, messages=hi, max_tokens=8, temperature=0, seed=1)
               .choices[0].message.content for m in (QWEN, UNPACKED)]
    assert answers[0] and answers[1]
    weights = load_registry(fleet.registry).get(QWEN).resolved_path.stat().st_size
    read, mapped = (memory_of(fleet.procs[f"worker-{n}"].p.pid) for n in (QWEN, UNPACKED))
    assert read["anon"] - mapped["anon"] > 0.8 * weights, (read, mapped, weights)  # no copy of its own
    assert mapped["file"] > 0.8 * weights > read["file"], (read, mapped, weights)


def test_the_prompt_cache_gets_only_what_the_budget_leaves(tmp_path):
    """llama.cpp keeps conversations that leave their slot in RAM, up to 8 GiB by default: the
    engine is given the budget's room beyond the estimate, and none when the budget is tight."""
    raw = DEFAULTS[QWEN].model_dump(mode="json", exclude_none=True)
    for budget, room in (("2GiB", True), (None, False)):
        est = estimate(parse_registry({"models": [{**raw, "memory_budget": "8GiB"}]}).models[0])
        e = parse_registry({"models": [{**raw, "memory_budget": budget or est.total}]}).models[0]
        worker = LlamaCppWorker(e, "http://127.0.0.1:1", "http://127.0.0.1:2")
        params = worker.engine_params()
        worker.slots.close()
        if room:
            assert 0 < params.cache_ram_mib * MiB <= e.memory_budget - est.total
        else:
            assert params.cache_ram_mib == 0


def test_quantised_v_without_flash_attention_is_refused_with_the_fix():
    raw = DEFAULTS[QWEN].model_dump(mode="json", exclude_none=True)
    with pytest.raises(Exception) as e:
        parse_registry({"models": [{**raw, "kv_cache_type": "q4_0", "flash_attention": "off"}]})
    assert "needs flash attention" in str(e.value) and 'flash_attention = "auto"' in str(e.value)
