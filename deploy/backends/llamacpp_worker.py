"""A FastChat worker on llama.cpp (xllamacpp: the llama.cpp server engine in-process).

It registers and heart-beats like any FastChat worker (BaseModelWorker does that part) and
answers the worker protocol used by FastChat's API server and web UI. Concurrent requests run
in the engine's parallel slots, batched together, rather than queued behind one another.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
import secrets
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastchat.serve.base_model_worker import BaseModelWorker

from deploy.backends.base import return_memory_to_the_system
from deploy.backends.fit import spare
from deploy.backends.gguf import control_tokens
from deploy.backends.llamacpp import DRAFT_MAX
from deploy.backends.openai_shapes import TokenLogprobs, embeddings_reply, last_frame
from deploy.backends.slot_store import SlotStore
from deploy.registry.templates import MODEL_PREFIX, text_for_tokenizer
from deploy.wire.frames import ENGINE_ERROR, VALIDATION_ERROR, cached_tokens, frame
from deploy.registry.templates import AUTO
from deploy.wire.prompt import separately_encoded, shipped_parts, text_runs, with_placeholders, with_prefix
from deploy.wire.reasoning import CLOSE, TraceCount, opens_thinking
from deploy.wire.reasoning import END as THINK_END

log = logging.getLogger("deploy.backends.llamacpp_worker")
_DONE = object()


def engine_request(params: dict, stream: bool, stop_token_texts: list[str] = ()) -> dict:
    """Translate FastChat's generation params into a llama.cpp /completion body.
    `stop_token_texts`: the texts of params' stop_token_ids, stop strings the engine can see only
    if it renders those (special) tokens, which `preserved_tokens` asks of it."""
    stop = params.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    stop = [s for s in stop if s] + [t for t in stop_token_texts if t not in stop]
    top_k = int(params.get("top_k", -1) or -1)
    body = {
        "prompt": params["prompt"],
        "n_predict": int(params.get("max_new_tokens", 256)),
        "temperature": float(params.get("temperature", 1.0)),
        "top_p": float(params.get("top_p", 1.0)),
        "top_k": top_k if top_k > 0 else 0,  # FastChat's -1 (off) is llama.cpp's 0 (whole vocabulary)
        "min_p": 0.0,
        "repeat_penalty": float(params.get("repetition_penalty", 1.0)),
        "presence_penalty": float(params.get("presence_penalty", 0.0)),
        "frequency_penalty": float(params.get("frequency_penalty", 0.0)),
        "stop": stop,
        "stream": stream,
        "cache_prompt": True,
    }
    if stop_token_texts:
        body["preserved_tokens"] = list(stop_token_texts)
    if params.get("ignore_eos"):  # benchmarks: a fixed number of tokens (FastChat's API never sends it)
        body["ignore_eos"] = True
    if params.get("json_schema") is not None:  # response_format: the engine builds a grammar from it
        body["json_schema"] = params["json_schema"]
    if params.get("grammar"):  # llama.cpp's own GBNF, as its server takes it
        body["grammar"] = params["grammar"]
    if params.get("logprobs") is not None:
        body["logprobs"] = max(1, int(params["logprobs"]))  # 0 (chosen token only) is trimmed later
    if params.get("seed") is not None:
        # OpenAI seeds are int64; llama.cpp's are uint32, where 0xFFFFFFFF means "random"
        body["seed"] = int(params["seed"]) % 0xFFFFFFFF
        # A reused prompt cache changes the batch shapes, and so the logits' last bits, and so
        # what a seeded sampler picks: a seeded request recomputes its prompt to be repeatable.
        body["cache_prompt"] = False
    return body


def engine_added_prefix(address: str, key: str) -> tuple[str, list[int]]:
    """The special tokens the engine puts before every prompt (its BOS where the GGUF's
    add_bos_token says so), as text and as ids, asked of the engine itself at start-up."""
    r = httpx.post(f"{address}/tokenize", json={"content": "", "add_special": True, "with_pieces": True},
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    r.raise_for_status()
    tokens = r.json()["tokens"]
    return "".join(t["piece"] for t in tokens), [t["id"] for t in tokens]


def engine_tokens(address: str, key: str, text: str, special: bool) -> list[int]:
    """`text` as the engine's tokenizer makes it: its special tokens parsed or not, nothing added."""
    r = httpx.post(f"{address}/tokenize", json={"content": text, "add_special": False, "parse_special": special},
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    r.raise_for_status()
    return r.json()["tokens"]


class LlamaCppWorker(BaseModelWorker):
    """Built asleep: `load` starts the engine (reads the GGUF), `unload` stops it and gives its
    memory back; the worker protocol's model-free parts (template, context length) answer always."""

    def __init__(self, entry, controller_addr: str, worker_addr: str):
        super().__init__(
            controller_addr, worker_addr, uuid.uuid4().hex[:8], str(entry.resolved_path),
            [entry.model_name], entry.concurrency, conv_template=entry.chat_template,
        )
        self.entry = entry
        opts = entry.options
        self.engine = None
        self.context_len = entry.context_length
        self.embeddings = opts.embeddings
        self.frame_interval = opts.stream_interval_ms / 1000
        self._pool = ThreadPoolExecutor(max_workers=entry.concurrency + 1, thread_name_prefix="engine")
        # The engine's own HTTP server listens on a loopback port we only use for /tokenize: a
        # per-load key keeps everyone else on the machine out of it (generation, /props).
        self._engine_http = httpx.AsyncClient(timeout=60)
        self._engine_url, self._engine_key = "", ""
        self.template = entry.chat_template
        self.shipped_template = ""  # the GGUF's own chat template (chat_template = "auto" renders it)
        self.engine_added = ""
        self.controls: set[str] = set()  # the vocabulary's control tokens (what templates mark turns with)
        self.prefix_ids: list[int] = []  # what every prompt begins with (DeepSeek's BOS, ChatGLM3's [gMASK] sop)
        self._token_texts: dict[int, str] = {}
        self.drafted = self.accepted = 0  # speculation: tokens drafted and accepted, since start
        self.slots = SlotStore() if opts.keep_conversations else None  # conversations kept across an unload

    def engine_params(self):
        import xllamacpp

        entry, opts = self.entry, self.entry.options
        params = xllamacpp.CommonParams()
        params.model.path = str(entry.resolved_path)
        # one context per slot, or (kv_unified) one context the slots share
        params.n_ctx = entry.context_length * (1 if opts.kv_unified else entry.concurrency)
        params.kv_unified = opts.kv_unified
        params.n_parallel = entry.concurrency
        if not opts.mmap:  # read the weights: counted once in RSS, decode no slower (bench/llamacpp_memory.py)
            params.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
        params.no_extra_bufts = not opts.repack
        # No warm-up pass after loading: on-demand loads would wait for it, and it did not make the first
        # request faster (bench/llamacpp_memory.py prints both, with and without it).
        params.warmup = False
        params.cpuparams.n_threads = entry.n_threads
        params.cpuparams_batch.n_threads = entry.n_threads
        if opts.embeddings:  # /v1/embeddings from the same engine and weights (bench.py measures the cost)
            params.embedding = True
            params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        if opts.flash_attention_on is not None:  # what it does: bench/llamacpp_batching.py
            kind = "ENABLED" if opts.flash_attention_on else "DISABLED"
            params.flash_attn_type = getattr(xllamacpp.llama_flash_attn_type, f"LLAMA_FLASH_ATTN_TYPE_{kind}")
        if opts.poll is not None:
            params.cpuparams.poll = params.cpuparams_batch.poll = opts.poll
        if opts.kv_cache_type != "f16":
            kind = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{opts.kv_cache_type.upper()}")
            params.cache_type_k = params.cache_type_v = kind
        if opts.speculation != "off":
            kind = "DRAFT_SIMPLE" if opts.speculation == "draft" else opts.speculation.upper().replace("-", "_")
            params.speculative.types = [getattr(xllamacpp.common_speculative_type, f"COMMON_SPECULATIVE_TYPE_{kind}")]
            if opts.speculation == "draft":
                params.speculative.draft.mparams.path = str(opts.draft_path())
                params.speculative.draft.n_max = DRAFT_MAX
                params.speculative.draft.cpuparams.n_threads = entry.n_threads
                params.speculative.draft.cpuparams_batch.n_threads = entry.n_threads
        # The engine keeps conversations that leave their slot in a RAM prompt cache, 8 GiB by
        # default: here it gets half of what the budget leaves beyond the estimate, never more
        # (the other half is the margin for what the estimate cannot see).
        params.cache_ram_mib = spare(entry) // 2 // 2**20
        params.use_jinja = entry.chat_template == AUTO  # the model's own template (/apply-template)
        params.n_threads_http = 1
        params.api_keys = [self._engine_key]
        params.endpoint_props = params.endpoint_metrics = False
        params.endpoint_slots = self.slots is not None  # behind the per-load key, for save and restore
        if self.slots is not None:
            params.slot_save_path = self.slots.engine_path
        return params

    def load(self) -> None:
        import xllamacpp

        self._engine_key = secrets.token_urlsafe(24)
        self.engine = xllamacpp.Server(self.engine_params())
        self._engine_url = self.engine.listening_address
        self.engine_added, added_ids = engine_added_prefix(self._engine_url, self._engine_key)
        self.controls = control_tokens(self.entry.resolved_path)
        self.shipped_template = self.entry.options.shipped_template(self.entry) or ""
        prefix = MODEL_PREFIX.get(self.template)
        self.prefix_ids = engine_tokens(self._engine_url, self._engine_key, prefix, True) if prefix else added_ids
        if self.slots is not None:
            moved = self.slots.restore(self._engine_url, self._engine_key)
            if moved.tokens:
                log.info("restored %s, saved when %s was unloaded", moved.describe(), self.model_names[0])

    def unload(self) -> None:
        """Stop the engine (its destructor ends its loop and frees the weights and the KV cache),
        first saving the conversations its slots hold, with keep_conversations."""
        if self.slots is not None and self.engine is not None:
            moved = self.slots.save(self._engine_url, self._engine_key)
            log.info("saved %s before unloading %s", moved.describe(), self.model_names[0])
        self.engine, self._engine_url = None, ""
        return_memory_to_the_system()

    async def engine_post(self, path: str, body: dict) -> httpx.Response:
        """A call to the engine's own HTTP server (tokenize, detokenize)."""
        return await self._engine_http.post(self._engine_url + path, json=body,
                                            headers={"Authorization": f"Bearer {self._engine_key}"})

    async def stop_token_texts(self, ids) -> list[str]:
        """The texts of FastChat's stop_token_ids (ChatGLM3: <|user|>, <|observation|>), which this
        engine does not treat as end of generation by itself; ids outside the vocabulary are skipped
        (deploy/wire/worker_params.py has refused anything but ids from 0)."""
        out = []
        for i in ids or ():
            if i not in self._token_texts:
                r = await self.engine_post("/detokenize", {"tokens": [i]})
                self._token_texts[i] = r.json().get("content", "") if r.status_code == 200 else ""
                if r.status_code != 200:
                    log.warning("stop token id %s is not in %s's vocabulary: ignored", i, self.model_names[0])
            if self._token_texts[i]:
                out.append(self._token_texts[i])
        return out

    def text_for_tokenizer(self, prompt: str) -> str:
        """A raw prompt (a completion's) as the text the engine tokenises, its special tokens parsed
        and its own BOS added (if the GGUF says so): ChatGLM3's [gMASK]sop written, DeepSeek's BOS once."""
        return text_for_tokenizer(prompt, self.template, self.engine_added)

    async def render(self, messages: list[dict], kwargs: dict) -> dict:
        """The prompt of the model's own template (the GGUF's, by the engine's jinja, as llama.cpp's
        server renders it) for OpenAI-style messages, with its parts (each message's text apart:
        deploy/wire/prompt.py), and whether it leaves the model inside a trace."""
        if not self.shipped_template:
            raise ValueError(f"{self.entry.resolved_path.name} ships no chat template. Fix: set chat_template to "
                             f"one of `python -m deploy templates` for '{self.entry.name}'")
        body = {"messages": messages, "chat_template_kwargs": kwargs or {}}

        async def rendered(msgs) -> str:
            r = await self.engine_post("/apply-template", {**body, "messages": msgs})
            if r.status_code != 200:
                raise ValueError(f"the model's chat template could not render the conversation: {r.text[:300]}")
            return r.json()["prompt"]

        whole = await rendered(messages)
        marked, place = with_placeholders(messages)
        return {"prompt": whole, "prompt_parts": shipped_parts(whole, await rendered(marked), place),
                "opens_thinking": opens_thinking(whole), "thinks": THINK_END in self.shipped_template}

    async def tokenize(self, text: str, special: bool, add: bool = False) -> list[int]:
        """The engine's tokens for `text`: special tokens parsed or not, its own BOS added or not."""
        r = await self.engine_post("/tokenize", {"content": text, "add_special": add, "parse_special": special})
        r.raise_for_status()
        return r.json()["tokens"]

    async def chat_ids(self, params: dict) -> list[int] | None:
        """A chat prompt's ids from its parts (deploy/wire/prompt.py), as the model's own chat code
        builds them: the template's control tokens, its text and every message's text tokenised as
        text. None for a raw prompt (a completion's), which the engine tokenises itself."""
        parts = params.get("prompt_parts")
        if parts is None:
            return None
        ids: list[int] = []
        for special, text in text_runs(parts, self.controls, separately_encoded(self.template)):
            ids += await self.tokenize(text, special)
        return with_prefix(ids, self.prefix_ids)

    async def prompt_ids(self, params: dict) -> list[int]:
        """The ids the engine is fed: a chat prompt's (chat_ids), or a raw prompt as the engine
        tokenises a completion (its own BOS added, special tokens parsed)."""
        ids = await self.chat_ids(params)
        return ids if ids is not None else await self.tokenize(self.text_for_tokenizer(params["prompt"]), True, True)

    def live_info(self) -> dict:
        """For /fleet_info: speculation's drafted and accepted tokens so far (bench/speculation.py)."""
        return {"speculation": self.entry.options.speculation, "drafted_tokens": self.drafted,
                "accepted_tokens": self.accepted}

    async def close(self) -> None:
        await self._engine_http.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.slots is not None:
            self.slots.close()

    async def count_token(self, params: dict) -> dict:
        return {"count": len(await self.prompt_ids(params)), "error_code": 0}

    async def engine_stream(self, body: dict):
        """One engine request's chunks as they come; leaving early stops it (the engine is told at
        its next token)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk):  # engine thread
            if cancelled.is_set():
                return True  # True asks the engine to stop this request
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return False

        def run():
            try:
                self.engine.handle_completions(body, on_chunk)
            except Exception as e:  # surfaces as an error chunk, never a dead stream
                loop.call_soon_threadsafe(queue.put_nowait, {"error": {"message": str(e)}})
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        loop.run_in_executor(self._pool, run)
        try:
            while (item := await queue.get()) is not _DONE:
                yield item
        finally:
            cancelled.set()

    async def answer_chunks(self, params: dict, prompt, stop_texts: list[str]):
        """The engine's chunks for a request. With a reasoning budget, a trace that reaches it is
        closed (CLOSE written after it, as llama.cpp's server forces its end tag) and the answer goes
        on from there, in a second request that finds the first one's tokens in the slot's cache."""
        budget = params.get("reasoning_budget")
        body = engine_request({**params, "prompt": prompt}, True, stop_texts)
        if budget is None or params.get("grammar") or params.get("json_schema") is not None:
            # a grammar holds the whole answer from its first token, trace and all: it decides
            async with aclosing(self.engine_stream(body)) as chunks:
                async for item in chunks:
                    yield item
            return
        count, text = TraceCount(opens_thinking(params["prompt"]), int(budget)), ""
        if not count.over:
            async with aclosing(self.engine_stream(body)) as chunks:
                async for item in chunks:
                    yield item
                    choice = (item.get("choices") or [{}])[0]
                    if choice.get("text"):
                        text += choice["text"]
                        count.add(choice["text"])
                    if count.over and not choice.get("finish_reason") and "usage" not in item and "error" not in item:
                        break  # leaving the stream stops the engine's request
                else:
                    return
        ids = prompt if isinstance(prompt, list) else await self.tokenize(prompt, True, True)
        closing = await self.tokenize(CLOSE, True)
        given = len(ids)
        ids = ids + await self.tokenize(text, True) + closing
        spent = count.tokens + len(closing)
        usage = {"prompt_tokens": given, "completion_tokens": spent, "total_tokens": given + spent}
        yield {"choices": [{"text": CLOSE, "finish_reason": None}], "usage": usage}
        left = int(params.get("max_new_tokens") or 256) - spent
        if left <= 0:
            yield {"choices": [{"text": "", "finish_reason": "length"}], "usage": usage}
            return
        rest = engine_request({**params, "prompt": ids, "max_new_tokens": left}, True, stop_texts)
        async with aclosing(self.engine_stream(rest)) as chunks:
            async for item in chunks:
                if "usage" in item:  # the second request's counts, as the answer's
                    u, n = item["usage"], spent + item["usage"]["completion_tokens"]
                    item = {**item, "usage": {**u, "prompt_tokens": given, "completion_tokens": n,
                                              "total_tokens": given + n}}
                yield item

    async def generate_stream_gate(self, params: dict):
        """FastChat stream protocol: cumulative text per chunk, NUL-delimited JSON."""
        self.call_ct += 1
        loop = asyncio.get_running_loop()
        stop_texts = await self.stop_token_texts(params.get("stop_token_ids"))
        ids = await self.chat_ids(params)
        prompt = ids if ids is not None else self.text_for_tokenizer(params["prompt"])
        text = params["prompt"] if params.get("echo") else ""
        logprobs = TokenLogprobs(len(text), params.get("logprobs"))
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        last_sent, sent_text = 0.0, None
        async with aclosing(self.answer_chunks(params, prompt, stop_texts)) as chunks:
            async for item in chunks:
                if "error" in item or "choices" not in item:
                    err = item.get("error", item)
                    msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                    yield frame({"text": f"llama.cpp engine error: {msg}", "error_code": ENGINE_ERROR})
                    continue
                choice = item["choices"][0]
                logprobs.add(choice.get("logprobs"))
                text += choice.get("text") or ""
                if "usage" in item:
                    u = item["usage"]
                    usage = {k: u[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                    cached = cached_tokens(u)
                    if cached is not None:  # the prompt's tokens the slot's KV cache already held
                        usage["prompt_tokens_details"] = {"cached_tokens": cached}
                elif choice.get("text"):
                    usage["completion_tokens"] += 1
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                timings = item.get("timings") or {}
                if timings.get("draft_n"):  # speculation: what was drafted and how much the model kept
                    self.drafted += int(timings["draft_n"])
                    self.accepted += int(timings.get("draft_n_accepted") or 0)
                finish = choice.get("finish_reason")
                now = loop.time()
                # Coalesce tokens into frames at most every stream_interval_ms: every frame costs
                # a wake-up and JSON work in this worker, the API server and the client, CPU the
                # engine's threads lose on a small machine. The first text and the end go at once.
                if finish is None and (text == (sent_text or "") or
                                       (sent_text and now - last_sent < self.frame_interval)):
                    continue
                last_sent, sent_text = now, text
                yield frame({"text": text, "error_code": 0, "usage": usage, "finish_reason": finish,
                              **logprobs.fields()})

    async def get_embeddings(self, params: dict) -> dict:
        """FastChat's embeddings protocol: L2-normalised mean-pooled vectors, float or base64."""
        if not self.embeddings:
            return {"text": f"model '{self.model_names[0]}' serves no embeddings. Fix: set embeddings = true for it "
                            f"in model_paths.toml.", "error_code": VALIDATION_ERROR}
        inputs = params.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        out = await asyncio.get_running_loop().run_in_executor(
            self._pool, self.engine.handle_embeddings, {"input": inputs})
        if "data" not in out:
            err = out.get("error", out)
            return {"text": f"llama.cpp engine error: {err.get('message', err) if isinstance(err, dict) else err}",
                    "error_code": VALIDATION_ERROR}
        return embeddings_reply(out, params.get("encoding_format"))

    async def generate_gate(self, params: dict) -> dict:
        return await last_frame(self.generate_stream_gate(params))
