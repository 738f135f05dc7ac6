"""GGUF file -> Hugging Face folder. Runs inside the throwaway tool env only
(usage: python gguf_to_hf.py MODEL.gguf OUT_DIR); imports nothing from deploy.

Known pitfalls fixed here:
- converted tokenizers can come out with the wrong end-of-sequence token
  (SmolLM2 got `<|im_start|>`) and an extra BOS. The GGUF's own tokenizer
  metadata is the truth; we apply it and then check it.
- tokenizers >= 0.20 writes BPE merges as pairs; the serving side pins
  tokenizers 0.19 (transformers 4.40.2), which reads only "a b" strings.
  Byte-level BPE tokens never contain a space, so the rewrite is lossless.
"""
import json
import sys
from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer


def meta(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.parts[f.data[0]].tolist()[0] if len(f.data) == 1 else None


def legacy_merges(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    merges = data.get("model", {}).get("merges") or []
    if merges and isinstance(merges[0], list):
        assert not any(" " in a or " " in b for a, b in merges), "a merge token contains a space"
        data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def main(gguf_path: str, out: str) -> None:
    src = Path(gguf_path)
    reader = GGUFReader(str(src))
    eos_id = meta(reader, "tokenizer.ggml.eos_token_id")
    add_bos = bool(meta(reader, "tokenizer.ggml.add_bos_token") or False)

    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, torch_dtype=torch.bfloat16)

    eos = tok.convert_ids_to_tokens(int(eos_id))
    tok.eos_token = eos
    if hasattr(tok, "add_bos_token"):
        tok.add_bos_token = add_bos
    model.config.eos_token_id = int(eos_id)
    model.generation_config.eos_token_id = int(eos_id)
    model.generation_config.do_sample = False

    ids = tok("hi").input_ids
    assert tok.eos_token_id == int(eos_id), f"eos is {tok.eos_token!r}, GGUF says id {eos_id}"
    if not add_bos and tok.bos_token_id is not None:
        assert ids[0] != tok.bos_token_id, "tokenizer adds a BOS the model was not trained with"

    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    legacy_merges(Path(out) / "tokenizer.json")
    cfg = json.loads((Path(out) / "config.json").read_text())
    print(f"converted: {cfg.get('model_type')} eos={eos!r} add_bos={add_bos} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
