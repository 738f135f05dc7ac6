"""The tokens a worker feeds a seed model begin with the model's own prefix exactly once, and a
special stop token (ChatGLM3's <|user|>) ends the answer on llama.cpp too.

ChatGLM3's tokenizer puts [gMASK]sop before every input and FastChat's chatglm3 template leaves it
out; a GGUF of ChatGLM3 adds nothing (llama.cpp's converter writes add_bos_token = false), so on
llama.cpp the worker must write it. DeepSeek's template writes the BOS its tokenizers (transformers
and llama.cpp alike) also add, which would double it. Checked here with the real tokenizers of
both backends: llama.cpp's own, on tiny GGUFs carrying the seed models' special tokens at their
real ids, and a transformers tokenizer that adds DeepSeek's BOS as DeepSeek's does."""
from __future__ import annotations

import asyncio
import json

import pytest

from bench.seed_models import DEEPSEEK_BOS_ID as DS_BOS
from bench.seed_models import DEEPSEEK_EOS_ID as DS_EOS
from bench.seed_models import SeedShape, Vocab, hf_tokenizer, write_q4_0
from deploy.backends import parse_registry
from deploy.registry.templates import DEEPSEEK_BOS, DEEPSEEK_EOS, text_for_tokenizer
from tests.test_seed_templates import SYSTEM, TURNS, chatglm3_build_chat_input, web_ui_prompt

GLM_GMASK, GLM_SOP, GLM_SYSTEM = 64790, 64792, 64794
GLM_SPECIAL = {64789: "[MASK]", GLM_GMASK: "[gMASK]", 64791: "[sMASK]", GLM_SOP: "sop", 64793: "eop",
               GLM_SYSTEM: "<|system|>", 64795: "<|user|>", 64796: "<|assistant|>", 64797: "<|observation|>"}


@pytest.mark.parametrize("template,prompt,added,expected", [
    ("chatglm3", "<|user|>\nhi<|assistant|>", "", "[gMASK]sop<|user|>\nhi<|assistant|>"),  # GGUF: written
    ("chatglm3", "<|user|>\nhi<|assistant|>", "[gMASK]sop", "<|user|>\nhi<|assistant|>"),  # HF adds it
    ("chatglm3", "[gMASK]sop<|user|>\nhi", "", "[gMASK]sop<|user|>\nhi"),  # already there: not twice
    ("chatglm3", "raw completion text", "", "[gMASK]sop" + "raw completion text"),
    ("deepseek-chat", DEEPSEEK_BOS + "User: hi\n\nAssistant:", DEEPSEEK_BOS, "User: hi\n\nAssistant:"),
    ("deepseek-chat", DEEPSEEK_BOS + "User: hi\n\nAssistant:", "", DEEPSEEK_BOS + "User: hi\n\nAssistant:"),
    ("deepseek-chat", "raw", "", DEEPSEEK_BOS + "raw"),
    ("qwen-7b-chat", "<|im_start|>system\nx", "", "<|im_start|>system\nx"),
    ("vicuna_v1.1", "<s>A chat", "<s>", "A chat"),  # any template: what the tokenizer adds is not written twice
    ("vicuna_v1.1", "A chat", "<s>", "A chat"),
])
def test_text_for_tokenizer(template, prompt, added, expected):
    assert text_for_tokenizer(prompt, template, added) == expected


# ---- llama.cpp: the engine's own tokenizer ------------------------------------------------------
def tiny_gguf(tmp_path, arch: str, vocab: Vocab, name: str):
    """A GGUF of a few hundred KB of weights whose vocabulary is the seed model's size, with its
    special tokens at their real ids and its add_bos_token as llama.cpp's converter writes it."""
    shape = SeedShape(name=name, title=name, arch=arch, layers=1, hidden=64, ffn=64, heads=2, kv_heads=1,
                      vocab=len(vocab.tokens), context=512, norm_eps=1e-5, chat_template="")
    path = tmp_path / f"{name}.gguf"
    write_q4_0(shape, path, vocab=vocab)
    return path


def llamacpp_worker(path, template: str):
    from deploy.backends.llamacpp_worker import LlamaCppWorker

    entry = parse_registry({"models": [{"name": "m", "path": str(path), "backend": "llama.cpp", "port": 21002,
                                        "cores": [0], "memory_budget": "1GiB", "chat_template": template,
                                        "context_length": 512, "concurrency": 1}]}).models[0]
    worker = LlamaCppWorker(entry, "http://127.0.0.1:9", "http://127.0.0.1:9")
    worker.load()
    return worker


async def engine_tokens(worker, prompt: str) -> list[int]:
    """The ids the engine makes of a completion prompt (the same flags as its /completion)."""
    r = await worker.engine_post("/tokenize", {"content": worker.text_for_tokenizer(prompt),
                                               "add_special": True, "parse_special": True})
    return r.json()["tokens"]


async def generate(worker, prompt: str, **params) -> dict:
    """The worker's last stream frame, greedy."""
    last = {}
    async for frame in worker.generate_stream_gate({"prompt": prompt, "temperature": 0, **params}):
        last = json.loads(frame[:-1])
    return last


async def prompt_tokens_used(worker, prompt: str) -> int:
    return (await generate(worker, prompt, max_new_tokens=1))["usage"]["prompt_tokens"]


def run_on_worker(worker, prompt: str) -> tuple[list[int], int, int]:
    async def go():
        try:
            return (await engine_tokens(worker, prompt), (await worker.count_token({"prompt": prompt}))["count"],
                    await prompt_tokens_used(worker, prompt))
        finally:
            await worker.close()
    return asyncio.run(go())


def test_chatglm3_gguf_gets_gmask_sop_once(tmp_path):
    vocab = Vocab.filler(65024, GLM_SPECIAL, add_bos=False)  # as convert_hf_to_gguf writes ChatGLM3
    worker = llamacpp_worker(tiny_gguf(tmp_path, "chatglm", vocab, "chatglm3-like"), "chatglm3")
    assert worker.engine_added == ""
    prompt = web_ui_prompt("chatglm3", SYSTEM)
    assert worker.text_for_tokenizer(prompt) == chatglm3_build_chat_input(SYSTEM, [TURNS[0]], TURNS[1][0])
    ids, counted, used = run_on_worker(worker, prompt)
    assert ids[:3] == [GLM_GMASK, GLM_SOP, GLM_SYSTEM]
    assert ids.count(GLM_GMASK) == 1 and ids.count(GLM_SOP) == 1
    assert counted == used == len(ids)  # the API's length check counts what the engine processes


def test_deepseek_gguf_gets_one_bos(tmp_path):
    vocab = Vocab.filler(102400, {DS_BOS: DEEPSEEK_BOS, DS_EOS: DEEPSEEK_EOS},
                         bos=DS_BOS, eos=DS_EOS, add_bos=True)  # DeepSeek's tokenizer_config: add_bos_token true
    worker = llamacpp_worker(tiny_gguf(tmp_path, "llama", vocab, "deepseek-like"), "deepseek-chat")
    assert worker.engine_added == DEEPSEEK_BOS
    prompt = web_ui_prompt("deepseek-chat", SYSTEM)
    assert prompt.startswith(DEEPSEEK_BOS)  # the template writes it, as DeepSeek's own does
    ids, counted, used = run_on_worker(worker, prompt)
    assert ids[0] == DS_BOS and ids.count(DS_BOS) == 1
    assert counted == used == len(ids)


# ---- transformers: the tokenizer FastChat's generation calls ------------------------------------
def test_deepseek_transformers_tokenizer_gets_one_bos(tmp_path):
    from transformers import AutoTokenizer

    from deploy.backends.transformers_worker import tokenizer_added_prefix

    shape = SeedShape(name="ds", title="ds", arch="llama", layers=1, hidden=64, ffn=64, heads=2, kv_heads=2,
                      vocab=102400, context=512, norm_eps=1e-6, chat_template="deepseek-chat")
    hf_tokenizer(shape, tmp_path)  # adds BOS 100000 before every input, as DeepSeek's LlamaTokenizerFast
    tok = AutoTokenizer.from_pretrained(tmp_path)
    added = tokenizer_added_prefix(tok)
    assert added == DEEPSEEK_BOS
    prompt = web_ui_prompt("deepseek-chat", SYSTEM)
    ids = tok(text_for_tokenizer(prompt, "deepseek-chat", added)).input_ids
    # apply_chat_template(tokenize=True): the rendered text, tokenised without adding specials
    assert ids == tok(prompt, add_special_tokens=False).input_ids
    assert ids[0] == DS_BOS and ids.count(DS_BOS) == 1
    assert tok(prompt).input_ids[:2] == [DS_BOS, DS_BOS]  # what FastChat's generation did with it


def test_qwen_tokenizer_adds_nothing():
    from transformers import AutoTokenizer

    from deploy.backends.transformers_worker import tokenizer_added_prefix
    from tests.conftest import DEFAULTS, QWEN_HF

    assert tokenizer_added_prefix(AutoTokenizer.from_pretrained(DEFAULTS[QWEN_HF].resolved_path)) == ""


# ---- stop tokens on llama.cpp -------------------------------------------------------------------
def test_a_special_stop_token_ends_the_answer(tmp_path):
    """ChatGLM3 ends a turn with <|user|> or <|observation|>, special tokens llama.cpp does not take
    for end of generation and renders as nothing: the worker must stop on FastChat's stop_token_ids
    itself, or the answer runs on, invisibly, to max_tokens. The tiny model's first greedy token is
    made a special token in a second GGUF with the same weights: the model emits it, and it must stop."""
    prompt = web_ui_prompt("chatglm3", SYSTEM)
    glm = Vocab.filler(65024, GLM_SPECIAL, add_bos=False)

    async def first_token(worker):
        try:
            return (await generate(worker, prompt, max_new_tokens=1, logprobs=0))["chat_logprobs"]["content"][0]["id"]
        finally:
            await worker.close()
    first = asyncio.run(first_token(llamacpp_worker(tiny_gguf(tmp_path, "chatglm", glm, "a"), "chatglm3")))
    assert first not in GLM_SPECIAL
    worker = llamacpp_worker(tiny_gguf(tmp_path, "chatglm", Vocab.filler(65024, {**GLM_SPECIAL, first: "<|stop-here|>"}),
                                       "b"), "chatglm3")

    async def both():
        try:
            return (await generate(worker, prompt, max_new_tokens=6),
                    await generate(worker, prompt, max_new_tokens=6, stop_token_ids=[64795, 64797, first]))
        finally:
            await worker.close()
    runs_on, stopped = asyncio.run(both())
    assert runs_on["usage"]["completion_tokens"] == 6 and runs_on["finish_reason"] == "length"  # the engine alone
    assert stopped["usage"]["completion_tokens"] == 1 and stopped["finish_reason"] == "stop"
    assert stopped["text"] == ""
