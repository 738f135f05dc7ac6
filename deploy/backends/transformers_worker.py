"""FastChat's transformers `ModelWorker` (registration, status, embeddings), loaded the way the
registry says, with generation of our own.

FastChat picks a loader and a generation function by substrings of the model path (a ChatGLM3 in
a folder not named "chatglm3" got another prompt), and its Qwen adapter forces fp16 into the config,
which on a CPU is slow or broken. Here the entry decides: dtype (float32 by default on CPU),
trust_remote_code (an explicit opt-in), and the loader family read from the folder's own
config.json (`model_type`), never from its path. The prompt is the ids the model's own chat code
builds (the parts of a chat prompt: deploy/wire/prompt.py, each message's text tokenised as text),
and generation is deploy/backends/hf_generation.py: exact token counts and finish reasons, a seed
per request, log-probabilities.
"""
from __future__ import annotations

import json
import logging
import uuid

from deploy import fastchat_compat
from deploy.backends import hf_generation
from deploy.backends.base import ConfigProblem, return_memory_to_the_system
from deploy.backends.transformers import resolve_dtype
from deploy.registry.templates import MODEL_PREFIX, text_for_tokenizer
from deploy.wire.frames import CONTEXT_OVERFLOW, PARAM_OUT_OF_RANGE, error_frame
from deploy.wire.prompt import separately_encoded, shipped_parts, text_runs, with_placeholders, with_prefix
from deploy.wire.reasoning import END as THINK_END
from deploy.wire.reasoning import opens_thinking

log = logging.getLogger("deploy.backends.transformers_worker")


def _check_remote_code(entry, cfg: dict) -> None:
    if "auto_map" in cfg and not entry.options.trust_remote_code:
        raise ConfigProblem(
            f"model '{entry.name}' ships its own Python code ({entry.resolved_path}/config.json has auto_map), "
            f"which runs with your user's rights when loaded. Fix: if you trust its source ({entry.source or 'unknown'}), "
            f"set trust_remote_code = true for this entry in model_paths.toml."
        )


def dtype_argument(dtype, low_memory: bool = False) -> dict:
    """from_pretrained's dtype argument, named as the installed transformers names it (`dtype` from
    4.56; the seed models' runtime has 4.41, which takes `torch_dtype`); with `low_memory`, 4.x's
    low_cpu_mem_usage (no second copy of the weights while loading; always so from 5)."""
    import transformers

    from deploy.backends.transformers import _version

    if (_version(transformers.__version__) or (0, 0)) >= (4, 56):
        return {"dtype": dtype}
    return {"torch_dtype": dtype, **({"low_cpu_mem_usage": True} if low_memory else {})}


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
        model = AutoModel.from_pretrained(path, trust_remote_code=trust, **dtype_argument(dtype))
    elif model_type == "qwen":  # Qwen(1)-Chat remote code: pick precision by flags, not fp16
        from transformers.generation import GenerationConfig

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
        config.bf16 = dtype_name == "bfloat16"
        config.fp16 = dtype_name == "float16"
        config.fp32 = dtype_name == "float32"
        config.use_flash_attn = False
        model = AutoModelForCausalLM.from_pretrained(path, config=config, trust_remote_code=trust,
                                                     **dtype_argument(dtype, low_memory=True))
        gen_cfg = GenerationConfig.from_pretrained(path, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        tokenizer.eos_token_id = config.eos_token_id
        tokenizer.pad_token_id = gen_cfg.pad_token_id
        model.generation_config = gen_cfg
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust,
                                                     **dtype_argument(dtype, low_memory=True))
    return model.eval(), tokenizer


class TextTokens:
    """A tokenizer's special tokens by name, and its encoding of text as text (no special token made
    of what the text spells), each the way the model's own code does it: Qwen-7B-Chat's
    `encode(text, allowed_special=set())`, ChatGLM3's SentencePiece `encode`, a fast tokenizer with
    special tokens not parsed, a slow one with them split."""

    def __init__(self, tokenizer):
        inner = getattr(tokenizer, "tokenizer", None)
        if isinstance(getattr(tokenizer, "special_tokens", None), dict) and hasattr(inner, "encode_ordinary"):
            self.specials = dict(tokenizer.special_tokens)  # Qwen(1): tiktoken
            self.encode = lambda text: tokenizer.encode(text, allowed_special=set())
        elif hasattr(inner, "sp_model") and isinstance(getattr(inner, "special_tokens", None), dict):
            self.specials = dict(inner.special_tokens)  # ChatGLM2/3: SentencePiece plus role tokens
            self.encode = inner.encode
        elif hasattr(tokenizer, "backend_tokenizer"):
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
            backend.encode_special_tokens = True
            self.specials = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
            self.encode = lambda text: backend.encode(text, add_special_tokens=False).ids
        else:
            self.specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
            self.encode = lambda text: tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text, split_special_tokens=True))

    def ids(self, parts: list, separate: bool) -> list[int]:
        """The ids of a chat prompt's parts (deploy/wire/prompt.py)."""
        out: list[int] = []
        for special, text in text_runs(parts, self.specials, separate):
            out += [self.specials[text]] if special else self.encode(text)
        return out


def tokenizer_added_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before every input: DeepSeek's BOS, ChatGLM3's
    [gMASK] sop, nothing for Qwen."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i]
    return []


def tokenizer_added_prefix(tokenizer) -> str:
    """tokenizer_added_ids as text."""
    return "".join(tokenizer.convert_ids_to_tokens(tokenizer_added_ids(tokenizer)))


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
            self.text_tokens: TextTokens | None = None
            self.prefix_ids: list[int] = []
            self.stop_ids: list[int] = []

        def load(self) -> None:
            model, tokenizer = load_hf_model(entry)
            keep_last_logits(model, model.config.model_type)
            fastchat_compat.attach_model(self, model, tokenizer)
            self.tokenizer_added = tokenizer_added_prefix(tokenizer)
            self.text_tokens = TextTokens(tokenizer)
            prefix = MODEL_PREFIX.get(entry.chat_template)
            self.prefix_ids = self.text_tokens.ids([["template", prefix]], False) if prefix else \
                tokenizer_added_ids(tokenizer)
            eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
            self.stop_ids = [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]

        def unload(self) -> None:
            fastchat_compat.detach_model(self)
            self.text_tokens = None
            return_memory_to_the_system()

        def text_for_tokenizer(self, prompt: str) -> str:
            """A raw prompt (a completion's) as the text the tokenizer gets, so that the tokens begin
            with the model's own prefix once (DeepSeek's template writes the BOS its tokenizer adds)."""
            return text_for_tokenizer(prompt, entry.chat_template, self.tokenizer_added)

        def prompt_ids(self, params: dict) -> list[int]:
            """A chat prompt's ids from its parts, as the model's own chat code builds them; a raw
            prompt as the tokenizer makes it (its special tokens parsed, its own prefix once)."""
            parts = params.get("prompt_parts")
            if parts is None:
                return self.tokenizer(self.text_for_tokenizer(params["prompt"])).input_ids
            return with_prefix(self.text_tokens.ids(parts, separately_encoded(entry.chat_template)), self.prefix_ids)

        def count_token(self, params):
            return {"count": len(self.prompt_ids(params)), "error_code": 0}

        def render(self, messages: list[dict], kwargs: dict) -> dict:
            """The prompt of the model's own template (tokenizer_config.json's chat_template, by
            apply_chat_template) for OpenAI-style messages, with its parts, and whether it leaves the
            model inside a trace."""
            shipped = getattr(self.tokenizer, "chat_template", None) or ""
            if not shipped:
                raise ValueError(f"{entry.resolved_path.name} ships no chat template. Fix: set chat_template to one of "
                                 f"`python -m deploy templates` for '{entry.name}'")

            def rendered(msgs) -> str:
                return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                                          **(kwargs or {}))
            whole = rendered(messages)
            marked, place = with_placeholders(messages)
            return {"prompt": whole, "prompt_parts": shipped_parts(whole, rendered(marked), place),
                    "opens_thinking": opens_thinking(whole), "thinks": THINK_END in shipped}

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
            self.call_ct += 1
            ids = self.prompt_ids(params)
            if not ids:
                yield error_frame("the prompt is empty: this model (no BOS token) needs at least one token to "
                                  "continue from.", PARAM_OUT_OF_RANGE)
                return
            yield from hf_generation.frames(self.model, self.tokenizer, ids, params, self.stop_ids,
                                            params["prompt"] if params.get("echo") else "",
                                            opens_thinking(params["prompt"]))

        def generate_gate(self, params):
            last = {}
            for raw in self.generate_stream_gate(params):
                last = json.loads(raw[:-1])
            return last

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
