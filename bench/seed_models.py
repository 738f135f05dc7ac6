#!/usr/bin/env python3
"""Seed-shaped SYNTHETIC models: GGUF files with the exact architecture and tensor shapes of
Qwen-7B-Chat, ChatGLM3-6B and DeepSeek-LLM-7B-Chat (bench/seed_shapes.toml), random weights,
quantised to Q4_K_M by llama.cpp's own llama-quantize, so each tensor gets the type llama.cpp
gives it in the real model's Q4_K_M. Their outputs are noise; their memory and speed are real.

    .venv/bin/python bench/seed_models.py          # all three, into $FLEET_CACHE/synthetic/

They are written into $FLEET_CACHE/synthetic (never into the repository), named
`synthetic-<model>-q4_k_m.gguf`, and carry `general.name = "SYNTHETIC ..."` and
`fleet.synthetic = true` in their metadata. A finished file is stamped; a second run makes nothing.
How: random Q4_0 blocks with sane scales (norms 1, biases 0) are streamed into a GGUF with
gguf-py, then requantised to Q4_K_M (--allow-requantize), then the Q4_0 file is deleted.

make_hf writes a DeepSeek-shaped bf16 Hugging Face folder (random weights, a byte-level stand-in
tokenizer with DeepSeek's BOS and EOS ids) for the transformers backend (bench/seed_scale.py), also
into $FLEET_CACHE/synthetic, named synthetic-*-bf16-hf, stamped when complete.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.registry.paths import cache_dir
from deploy.registry.templates import DEEPSEEK_BOS, DEEPSEEK_EOS

SHAPES = Path(__file__).with_name("seed_shapes.toml")
Q4_0_BLOCK = 32, 18  # values per block, bytes per block (f16 scale + 16 bytes of nibbles)


@dataclass
class SeedShape:
    name: str
    title: str
    arch: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    context: int
    norm_eps: float
    chat_template: str
    published_q4_k_m_bytes: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, numpy shape) of every tensor, as llama.cpp's loader creates them for this arch."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        out = [("token_embd.weight", (self.vocab, h)), ("output_norm.weight", (h,)), ("output.weight", (self.vocab, h))]
        for i in range(self.layers):
            b = f"blk.{i}."
            out.append((b + "attn_norm.weight", (h,)))
            if self.arch in ("qwen", "chatglm"):  # fused QKV with bias
                out += [(b + "attn_qkv.weight", (h + 2 * kv, h)), (b + "attn_qkv.bias", (h + 2 * kv,))]
            else:
                out += [(b + "attn_q.weight", (h, h)), (b + "attn_k.weight", (kv, h)), (b + "attn_v.weight", (kv, h))]
            out += [(b + "attn_output.weight", (h, h)), (b + "ffn_norm.weight", (h,))]
            if self.arch == "chatglm":  # gate and up fused in one tensor
                out += [(b + "ffn_up.weight", (2 * self.ffn, h)), (b + "ffn_down.weight", (h, self.ffn))]
            else:
                out += [(b + "ffn_gate.weight", (self.ffn, h)), (b + "ffn_up.weight", (self.ffn, h)),
                        (b + "ffn_down.weight", (h, self.ffn))]
        return out

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.tensors())


def load_shapes(path: Path = SHAPES) -> list[SeedShape]:
    return [SeedShape(**m) for m in tomllib.loads(path.read_text())["model"]]


def synthetic_path(shape: SeedShape, qtype: str = "Q4_K_M") -> Path:
    return cache_dir() / "synthetic" / f"synthetic-{shape.name}-{qtype.lower()}.gguf"


@dataclass
class Vocab:
    """A GGUF vocabulary: token texts and llama.cpp token types, special ids, add_bos."""
    tokens: list[str]
    types: list[int]
    bos: int = 1
    eos: int = 2
    add_bos: bool = False

    @classmethod
    def filler(cls, size: int, special: dict[int, str] = {}, **kw) -> "Vocab":  # noqa: B006 (read only)
        """A sentencepiece-style vocabulary of `size`: <unk> <s> </s>, byte tokens, filler, and
        `special` control tokens at the ids given (a seed model's own, for its prompt prefix)."""
        import gguf

        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        tokens += [f"\u2581t{i}" for i in range(size - len(tokens))]
        types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
                [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (size - 259)
        for i, text in special.items():
            tokens[i], types[i] = text, gguf.TokenType.CONTROL
        return cls(tokens, types, **kw)


def _metadata(w, s: SeedShape, vocab: Vocab | None = None) -> None:
    import gguf

    w.add_name(f"SYNTHETIC seed-shaped {s.title} (random weights, not the real model)")
    w.add_bool("fleet.synthetic", True)
    w.add_string("fleet.shaped_like", s.title)
    w.add_context_length(s.context)
    w.add_embedding_length(s.hidden)
    w.add_block_count(s.layers)
    w.add_feed_forward_length(2 * s.ffn if s.arch == "qwen" else s.ffn)  # llama.cpp's qwen halves it
    w.add_head_count(s.heads)
    w.add_head_count_kv(s.kv_heads)
    w.add_layer_norm_rms_eps(s.norm_eps)
    w.add_rope_dimension_count(s.head_dim // 2 if s.arch == "chatglm" else s.head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    v = vocab or Vocab.filler(s.vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(v.tokens)
    w.add_token_scores([0.0] * len(v.tokens))
    w.add_token_types(v.types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(v.bos)
    w.add_eos_token_id(v.eos)
    w.add_add_bos_token(v.add_bos)


def _q4_0_rows(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    """Random Q4_0 blocks with a fixed, sane f16 scale (random bytes there could be NaN)."""
    per_row = cols // Q4_0_BLOCK[0]
    blocks = rng.integers(0, 256, size=(rows, per_row, Q4_0_BLOCK[1]), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, per_row * Q4_0_BLOCK[1])


def write_q4_0(s: SeedShape, out: Path, seed: int = 0, vocab: Vocab | None = None) -> None:
    import gguf

    w = gguf.GGUFWriter(str(out), s.arch)
    _metadata(w, s, vocab)
    tensors = s.tensors()
    for name, shape in tensors:
        if len(shape) == 1:
            w.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
        else:
            nbytes = shape[0] * shape[1] // Q4_0_BLOCK[0] * Q4_0_BLOCK[1]
            w.add_tensor_info(name, (shape[0], shape[1] // Q4_0_BLOCK[0] * Q4_0_BLOCK[1]), np.dtype(np.uint8), nbytes,
                              raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shape in tensors:
        if len(shape) == 1:  # norms 1, biases 0: activations stay finite
            w.write_tensor_data(np.full(shape, 0.0 if name.endswith(".bias") else 1.0, dtype=np.float32))
        else:
            w.write_tensor_data(_q4_0_rows(rng, shape[0], shape[1], 0.02 / np.sqrt(shape[1] / 512)))
    w.close()


def make(s: SeedShape, threads: int = 2) -> Path:
    from deploy.provision.llamacpp_tools import ensure_tools

    out = synthetic_path(s)
    stamp = out.with_name(out.name + ".done")
    if out.exists() and stamp.exists():
        print(f"{s.title}: present ({out})", flush=True)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tools = ensure_tools()
    src = out.with_name(out.name + ".q4_0.partial")
    print(f"{s.title}: writing {s.n_params / 1e9:.2f}B random parameters (Q4_0) ...", flush=True)
    write_q4_0(s, src)
    try:
        tools.quantize(src, out.with_name(out.name + ".partial"), "Q4_K_M", threads, allow_requantize=True)
    finally:
        src.unlink(missing_ok=True)
    out.with_name(out.name + ".partial").replace(out)
    stamp.write_text(json.dumps({"shaped_like": s.title, "bytes": out.stat().st_size}))
    return out


# ---- a seed-shaped Hugging Face folder (bf16, for the transformers backend) ------------------------
HF_SHARD_BYTES = 2 * 10**9
DEEPSEEK_BOS_ID, DEEPSEEK_EOS_ID = 100000, 100001  # in DeepSeek-LLM's tokenizer


def hf_synthetic_path(shape: SeedShape) -> Path:
    return cache_dir() / "synthetic" / f"synthetic-{shape.name}-bf16-hf"


# llama.cpp's tensor names (SeedShape.tensors) -> LlamaForCausalLM's; shapes are the same
HF_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
            "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _hf_tensors(s: SeedShape) -> list[tuple[str, tuple[int, ...]]]:
    """LlamaForCausalLM's parameter names and shapes (DeepSeek-LLM-7B-Chat is one), from the
    same tensor list as the GGUF."""
    if s.arch != "llama":
        raise SystemExit(f"{s.title}: only llama-architecture shapes have an HF folder maker (got {s.arch})")
    out = []
    for name, shape in s.tensors():
        parts = name.removesuffix(".weight").split(".")
        if parts[0] == "blk":
            name = f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.weight"
        else:
            name = f"{HF_NAMES[parts[0]]}.weight"
        out.append((name, shape))
    return out


def hf_tokenizer(s: SeedShape, folder: Path) -> None:
    """A byte-level tokenizer of the real vocabulary size, with DeepSeek's BOS/EOS at their real
    ids (100000, 100001) and its tokenizer's habit of adding BOS: every prompt becomes bytes."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    bos, eos, bos_id, eos_id = DEEPSEEK_BOS, DEEPSEEK_EOS, DEEPSEEK_BOS_ID, DEEPSEEK_EOS_ID
    vocab = {c: i for i, c in enumerate(byte_chars)}
    vocab.update({f"t{i}": i for i in range(len(byte_chars), s.vocab) if i not in (bos_id, eos_id)})
    vocab.update({bos: bos_id, eos: eos_id})
    tok = Tokenizer(BPE(vocab, [], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, bos_id)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos).save_pretrained(folder)


def make_hf(s: SeedShape, seed: int = 0) -> Path:
    """A SYNTHETIC seed-shaped HF folder in bf16: config, random weights in 2 GB safetensors
    shards (one shard in memory at a time), a stand-in tokenizer. Stamped when complete."""
    import torch
    from safetensors.torch import save_file

    out = hf_synthetic_path(s)
    stamp = out / "SYNTHETIC.done"
    if stamp.exists():
        print(f"{s.title} (bf16 HF folder): present ({out})", flush=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.hidden,
           "intermediate_size": s.ffn, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
           "num_key_value_heads": s.kv_heads, "vocab_size": s.vocab, "max_position_embeddings": s.context,
           "rms_norm_eps": s.norm_eps, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
           "bos_token_id": DEEPSEEK_BOS_ID, "eos_token_id": DEEPSEEK_EOS_ID, "torch_dtype": "bfloat16",
           "_name_or_path": f"SYNTHETIC seed-shaped {s.title} (random weights, not the real model)"}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    hf_tokenizer(s, out)
    torch.manual_seed(seed)
    n = sum(int(np.prod(shape)) for _, shape in _hf_tensors(s))
    print(f"{s.title}: writing {n / 1e9:.2f}B random parameters (bf16 HF folder) ...", flush=True)
    shard: dict = {}
    index: dict = {}
    shards = 0

    def flush():
        nonlocal shard, shards
        if shard:
            shards += 1
            name = f"model-{shards:05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt", "synthetic": "true"})
            index.update({k: name for k in shard})
            shard = {}

    size = 0
    for name, shape in _hf_tensors(s):
        if len(shape) == 1:
            shard[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            shard[name] = (torch.randn(shape, dtype=torch.bfloat16) * (0.02 / np.sqrt(shape[1] / 512)))
        size += shard[name].numel() * 2
        if size >= HF_SHARD_BYTES:
            flush()
            size = 0
    flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": n * 2},
                                                                  "weight_map": index}, indent=1))
    stamp.write_text(json.dumps({"shaped_like": s.title, "parameters": n}))
    return out


def size_report(s: SeedShape, path: Path) -> str:
    size = path.stat().st_size
    line = f"{s.title}: {path.name} {size / 1e9:.2f} GB, {s.n_params / 1e9:.2f}B parameters"
    if s.published_q4_k_m_bytes:
        line += f"; published Q4_K_M of the real model {s.published_q4_k_m_bytes / 1e9:.2f} GB " \
                f"({size / s.published_q4_k_m_bytes:.1%})"
    return line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated names (default: all three)")
    args = ap.parse_args(argv)
    shapes = [s for s in load_shapes() if not args.models or s.name in args.models.split(",")]
    for s in shapes:
        print(size_report(s, make(s)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
