"""FastChat's own transformers `ModelWorker`, loaded the way the registry says.

FastChat picks a loader by substrings of the model path, and its Qwen adapter
forces fp16 into the config, which on a CPU is slow or broken. Here the entry
decides: dtype (float32 by default on CPU), trust_remote_code (an explicit
opt-in), and the loader family read from the folder's own config.json
(`model_type`), never from its path. Generation stays FastChat's.
"""
from __future__ import annotations

import json
import logging
import uuid

from deploy import fastchat_compat
from deploy.backends.base import ConfigProblem, return_memory_to_the_system
from deploy.backends.transformers import resolve_dtype
from deploy.registry.templates import text_for_tokenizer
from deploy.wire.frames import CONTEXT_OVERFLOW, PARAM_OUT_OF_RANGE, error_frame

log = logging.getLogger("deploy.backends.transformers_worker")


def _check_remote_code(entry, cfg: dict) -> None:
    if "auto_map" in cfg and not entry.options.trust_remote_code:
        raise ConfigProblem(
            f"model '{entry.name}' ships its own Python code ({entry.resolved_path}/config.json has auto_map), "
            f"which runs with your user's rights when loaded. Fix: if you trust its source ({entry.source or 'unknown'}), "
            f"set trust_remote_code = true for this entry in model_paths.toml."
        )


def load_hf_model(entry):
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = str(entry.resolved_path)
    cfg = json.loads((entry.resolved_path / "config.json").read_text())
    _check_remote_code(entry, cfg)
    trust = entry.options.trust_remote_code
    dtype_name = resolve_dtype(entry.options.dtype)
    dtype = getattr(torch, dtype_name)
    model_type = cfg.get("model_type", "")

    if model_type == "chatglm":  # ChatGLM2/3: AutoModel, its tokenizer must keep special tokens whole
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust, encode_special_tokens=True)
        model = AutoModel.from_pretrained(path, trust_remote_code=trust, torch_dtype=dtype)
    elif model_type == "qwen":  # Qwen(1)-Chat remote code: pick precision by flags, not fp16
        from transformers.generation import GenerationConfig

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
        config.bf16 = dtype_name == "bfloat16"
        config.fp16 = dtype_name == "float16"
        config.fp32 = dtype_name == "float32"
        config.use_flash_attn = False
        model = AutoModelForCausalLM.from_pretrained(path, config=config, trust_remote_code=trust,
                                                     torch_dtype=dtype, low_cpu_mem_usage=True)
        gen_cfg = GenerationConfig.from_pretrained(path, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        tokenizer.eos_token_id = config.eos_token_id
        tokenizer.pad_token_id = gen_cfg.pad_token_id
        model.generation_config = gen_cfg
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust, torch_dtype=dtype,
                                                     low_cpu_mem_usage=True)
    return model.eval(), tokenizer


def tokenizer_added_prefix(tokenizer) -> str:
    """The text of the special tokens the tokenizer puts before every input: DeepSeek's BOS,
    ChatGLM3's [gMASK]sop, nothing for Qwen."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return "".join(tokenizer.convert_ids_to_tokens(full[:i]))
    return ""


def make_transformers_worker(entry, controller_addr: str, worker_addr: str):
    """FastChat's ModelWorker around a model we loaded (its __init__ would load by path)."""
    import torch
    from fastchat.serve.model_worker import ModelWorker
    from fastchat.utils import get_context_length

    class TransformersWorker(ModelWorker):
        """Built asleep: `load` reads the model the entry's way, `unload` drops it and returns its
        memory to the system; generation, embeddings and token counts stay FastChat's."""

        def __init__(self):
            _check_remote_code(entry, json.loads((entry.resolved_path / "config.json").read_text()))
            fastchat_compat.init_model_worker(
                self, controller_addr=controller_addr, worker_addr=worker_addr, worker_id=uuid.uuid4().hex[:8],
                model_path=str(entry.resolved_path), model_names=[entry.model_name], concurrency=entry.concurrency,
                conv_template=entry.chat_template,
                context_len=min(entry.context_length, get_context_length(_config_of(entry))))
            self.tokenizer_added = ""

        def load(self) -> None:
            model, tokenizer = load_hf_model(entry)
            keep_last_logits(model, model.config.model_type)
            fastchat_compat.attach_model(self, model, tokenizer)
            self.tokenizer_added = tokenizer_added_prefix(tokenizer)

        def unload(self) -> None:
            fastchat_compat.detach_model(self)
            return_memory_to_the_system()

        def text_for_tokenizer(self, prompt: str) -> str:
            """What FastChat's generation hands the tokenizer, so that the tokens begin with the
            model's own prefix once (DeepSeek's template writes the BOS its tokenizer adds)."""
            return text_for_tokenizer(prompt, entry.chat_template, self.tokenizer_added)

        def count_token(self, params):
            return super().count_token({**params, "prompt": self.text_for_tokenizer(params["prompt"])})

        def get_embeddings(self, params):
            """FastChat's, one input at a time, each within EMBED_MAX_TOKENS: FastChat pads a batch
            to its longest input and keeps every layer's hidden states, so a few long inputs would
            take gigabytes, beyond any budget."""
            inputs = params["input"] if isinstance(params["input"], list) else [params["input"]]
            for i, text in enumerate(inputs):
                n = len(self.tokenizer(text).input_ids)
                if n > EMBED_MAX_TOKENS:
                    return {"text": f"input {i} is {n} tokens; model '{entry.name}' embeds at most "
                                    f"{EMBED_MAX_TOKENS} tokens per input. Fix: split it.",
                            "error_code": CONTEXT_OVERFLOW}
            out = {"embedding": [], "token_num": 0}
            for text in inputs:
                one = super().get_embeddings({**params, "input": [text]})
                if one.get("error_code"):
                    return one
                out["embedding"] += one["embedding"]
                out["token_num"] += one["token_num"]
            return out

        def generate_stream_gate(self, params):
            params = {**params, "prompt": self.text_for_tokenizer(params["prompt"])}
            if not self.tokenizer(params["prompt"]).input_ids:  # FastChat's generation fails on it
                yield error_frame("the prompt is empty: this model (no BOS token) needs at least one token to "
                                  "continue from.", PARAM_OUT_OF_RANGE)
                return
            if params.get("seed") is not None:  # per request (the OpenAI `seed`), not per worker
                from transformers import set_seed

                set_seed(int(params["seed"]))
            yield from super().generate_stream_gate(params)

    torch.set_num_threads(entry.n_threads)
    return TransformersWorker()


def _config_of(entry):
    """The model's config.json as attributes (FastChat's get_context_length reads them), before
    the model is loaded."""
    from types import SimpleNamespace

    return SimpleNamespace(**json.loads((entry.resolved_path / "config.json").read_text()))


EMBED_MAX_TOKENS = 1024


def keep_last_logits(model, model_type: str) -> None:
    """Compute the output layer for the last position only. FastChat's generation reads only the
    last position's logits (unless it is asked for prompt logprobs, which this backend refuses),
    but the model computes them for every prompt token: 4,096 tokens x 151,936 vocabulary x 4
    bytes is 2.3 GiB, more than a small model's whole budget. A pre-hook on the output layer
    (not a change to FastChat or the model's code) slices its input. ChatGLM keeps the sequence
    first ([seq, batch, hidden]); the others second."""
    head = model.get_output_embeddings() if model_type != "chatglm" else model.transformer.output_layer
    seq_dim = 0 if model_type == "chatglm" else 1

    def last_position(module, args):
        hidden = args[0]
        if hidden.dim() == 3 and hidden.shape[seq_dim] > 1:
            return (hidden.narrow(seq_dim, hidden.shape[seq_dim] - 1, 1),) + tuple(args[1:])
        return None

    head.register_forward_pre_hook(last_position)
