"""Tiny models of 2025-26 architectures for the tests, made here: a Qwen3 folder shaped like the
seed-model checkpoints (2 layers, hidden size 64, the real vocabulary), saved by transformers
itself, with the real tokenizer of the default Qwen2.5 model (Qwen3 shares its vocabulary) and,
optionally, a chat template of its own. Random weights: answers are noise, but the architecture, the
files and every prompt token are real."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

QWEN3_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, vocab_size=151936, max_position_embeddings=4096,
                   tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def tiny_qwen3(dest: Path, tokenizer_from: Path, chat_template: str | None = None) -> Path:
    """A Qwen3ForCausalLM folder at `dest` (built in this Python: it needs a transformers that knows
    qwen3), its tokenizer copied from `tokenizer_from`; `chat_template` replaces the tokenizer's."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dest.mkdir(parents=True)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**QWEN3_SHAPE)).to(torch.bfloat16)
    model.save_pretrained(dest)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, dest / name)
    if chat_template is not None:
        cfg = json.loads((dest / "tokenizer_config.json").read_text())
        cfg["chat_template"] = chat_template
        (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    return dest
