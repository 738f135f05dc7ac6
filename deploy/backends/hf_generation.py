"""Generation on the transformers backend: token ids in, FastChat's frames out.

The model's own `generate()` runs the decoding loop (its remote code's cache handling included, on
every transformers version the backend runs), with three pieces of ours:

- `Sampler`, the last logits processor: it applies the request's temperature, top-k, top-p and
  presence/frequency penalties, draws the token with the request's own random generator (a seed is
  per request, whatever else the worker answers at once), records its log-probability and
  alternatives, and hands `generate` a one-hot distribution, so the greedy loop takes exactly that
  token.
- `Streamer`, which receives each token as it is made and decodes the answer so far, and ends the
  answer at a stop string.
- `Stop`, the stopping criterion that ends it there, or when the client left.

So the prompt is the ids the worker built (the model's own chat code's: deploy/wire/prompt.py), the
count of generated tokens is exact (the token that ended the answer counts: it was generated), and
the finish reason says whether max_tokens stopped it ("length") or the model did ("stop").
"""
from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from deploy.wire.frames import ENGINE_ERROR


@dataclass
class Request:
    """What one answer asks, from the worker protocol's params."""
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logprobs: int | None = None      # alternatives per token (0: the chosen token's only)
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    reasoning_budget: int | None = None  # a trace's most tokens; then its end is forced

    @classmethod
    def of(cls, params: dict, stop_ids: list[int]) -> "Request":
        stop = params.get("stop") or []
        temperature = params.get("temperature")
        return cls(max_new_tokens=int(params.get("max_new_tokens") or 256),
                   temperature=1.0 if temperature is None else float(temperature),
                   top_p=float(params.get("top_p") or 1.0), top_k=int(params.get("top_k") or -1),
                   presence_penalty=float(params.get("presence_penalty") or 0.0),
                   frequency_penalty=float(params.get("frequency_penalty") or 0.0),
                   repetition_penalty=float(params.get("repetition_penalty") or 1.0),
                   seed=params.get("seed"), logprobs=params.get("logprobs"),
                   stop=[stop] if isinstance(stop, str) else [s for s in stop if s],
                   stop_token_ids=sorted({*(params.get("stop_token_ids") or ()), *stop_ids}),
                   reasoning_budget=params.get("reasoning_budget"))


@dataclass
class TraceBudget:
    """A thinking model's trace held to a budget of tokens, as llama.cpp's reasoning budget does:
    counted from the start tag (or from the first token, when the prompt opened the trace), and when
    the budget is spent the end tag is forced, token by token, so the model answers."""
    budget: int
    start: list[int]
    forced: list[int]             # a line break and the end tag
    end: list[int]
    inside: bool = False
    spent: int = 0
    queue: list[int] = field(default_factory=list)
    done: bool = False

    def next_forced(self, made: list[int]) -> int | None:
        """The token to force now, or None; `made`: the tokens generated so far."""
        if self.done:
            return None
        if not self.inside and made[-len(self.start):] == self.start and self.start:
            self.inside, self.spent = True, 0
        if self.inside and self.end and made[-len(self.end):] == self.end:
            self.done = True
            return None
        if self.inside:
            if self.queue:
                return self.queue.pop(0)
            if self.spent >= self.budget:
                self.queue = list(self.forced)
                return self.queue.pop(0)
            self.spent += 1
        return None


@lru_cache(maxsize=1)
def _sampler_class():
    import torch
    from transformers import LogitsProcessor

    class Sampler(LogitsProcessor):
        """The request's sampling, drawn with its own generator; see the module's docstring."""

        def __init__(self, req: Request, prompt_len: int, budget: TraceBudget | None = None):
            self.req, self.prompt_len, self.budget = req, prompt_len, budget
            seed = req.seed if req.seed is not None else int.from_bytes(os.urandom(8), "little")
            self.generator = torch.Generator().manual_seed(int(seed) % (2**63))
            self.picked: list[dict] = []  # per token: its id, log-probability and alternatives

        def __call__(self, input_ids, scores):
            r = self.req
            logits = scores[0].float()
            raw = torch.log_softmax(logits, dim=-1)  # log-probabilities as the model gave them
            made = input_ids[0, self.prompt_len:]
            forced = self.budget.next_forced(made.tolist()) if self.budget else None
            if forced is not None:  # the trace's budget is spent: its end, token by token
                self.picked.append({"id": forced, "logprob": float(raw[forced])})
                out = torch.full_like(scores, -math.inf)
                out[0, forced] = 0.0
                return out
            if len(made) and (r.presence_penalty or r.frequency_penalty):
                ids, counts = torch.unique(made, return_counts=True)
                logits = logits.clone()
                logits[ids] -= r.presence_penalty + r.frequency_penalty * counts.to(logits.dtype)
            if r.temperature < 1e-5:
                token = int(torch.argmax(logits))
            else:
                logits = logits / r.temperature
                if 0 < r.top_k < logits.shape[-1]:
                    kth = torch.topk(logits, r.top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                if r.top_p < 1.0:
                    ordered, order = torch.sort(logits, descending=True)
                    probs = torch.softmax(ordered, dim=-1)
                    drop = torch.cumsum(probs, dim=-1) - probs > r.top_p  # keep the smallest set reaching top_p
                    logits = logits.clone()
                    logits[order[drop]] = -math.inf
                probs = torch.softmax(logits, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=self.generator))
            pick = {"id": token, "logprob": float(raw[token])}
            if r.logprobs:
                top = torch.topk(raw, r.logprobs)
                pick["top"] = list(zip(top.indices.tolist(), top.values.tolist()))
            self.picked.append(pick)
            out = torch.full_like(scores, -math.inf)
            out[0, token] = 0.0
            return out

    return Sampler


class Streamer:
    """Receives the generated tokens (transformers' streamer protocol) and keeps the answer's text;
    a stop string ends it (the text before it kept)."""

    def __init__(self, tokenizer, req: Request, on_token=lambda streamer: None):
        self.tokenizer, self.req, self.on_token = tokenizer, req, on_token
        self.ids: list[int] = []
        self.text = ""
        self.prompt_seen = False
        self.stopped = False  # by a stop string or a stop token
        self.cancelled = threading.Event()

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() hands the prompt first
            self.prompt_seen = True
            return
        token = int(value.reshape(-1)[-1])
        self.ids.append(token)
        if token in self.req.stop_token_ids:
            self.stopped = True
        else:
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True, spaces_between_special_tokens=False,
                                         clean_up_tokenization_spaces=True)
            for s in self.req.stop:
                at = text.find(s)
                if at >= 0:
                    text, self.stopped = text[:at], True
            if not text.endswith("\ufffd"):  # a character whose bytes are not all made yet waits
                self.text = text
        self.on_token(self)

    def end(self) -> None:
        pass


@lru_cache(maxsize=1)
def _stop_class():
    import torch
    from transformers import StoppingCriteria

    class Stop(StoppingCriteria):
        def __init__(self, streamer: Streamer):
            self.streamer = streamer

        def __call__(self, input_ids, scores, **kwargs):
            done = self.streamer.stopped or self.streamer.cancelled.is_set()
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

    return Stop


def trace_budget(tokenizer, req: Request, opened: bool) -> TraceBudget | None:
    """The request's budget for a trace, in this tokenizer's ids (None: unlimited)."""
    if req.reasoning_budget is None:
        return None
    from deploy.wire.reasoning import CLOSE, END, START

    ids = lambda t: tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
    return TraceBudget(req.reasoning_budget, ids(START), ids(CLOSE), ids(END), inside=opened)


def generate(model, tokenizer, prompt_ids: list[int], req: Request, streamer: Streamer, opened: bool = False):
    """Run one answer to its end (the streamer sees every token, and ends it at a stop string or
    when cancelled); returns the sampler, which knows what each token was. `opened`: the prompt
    opened a trace (its budget counts from the first token)."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    sampler = _sampler_class()(req, len(prompt_ids), trace_budget(tokenizer, req, opened))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (req.stop_token_ids or [0])[0]
    config = GenerationConfig(do_sample=False, max_new_tokens=req.max_new_tokens, num_beams=1,
                              repetition_penalty=req.repetition_penalty, eos_token_id=req.stop_token_ids or None,
                              pad_token_id=pad)
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                       logits_processor=LogitsProcessorList([sampler]),
                       stopping_criteria=StoppingCriteriaList([_stop_class()(streamer)]), streamer=streamer)
    return sampler


def frames(model, tokenizer, prompt_ids: list[int], params: dict, stop_ids: list[int], echo_text: str = "",
           opened: bool = False):
    """FastChat's frames for one answer (a blocking generator: the worker app runs it off its loop):
    cumulative text, exact usage, the finish reason, and log-probabilities when asked. Closing it
    (the client left) stops the answer at its next token."""
    from deploy.backends.openai_shapes import TokenLogprobs
    from deploy.wire.frames import frame

    req = Request.of(params, stop_ids)
    q: queue.Queue = queue.Queue()
    streamer = Streamer(tokenizer, req, lambda s: q.put((s.text, len(s.ids))))
    state: dict = {}

    def run():
        try:
            state["sampler"] = generate(model, tokenizer, prompt_ids, req, streamer, opened)
        except Exception as e:  # an error frame, never a dead stream
            state["error"] = e
        finally:
            q.put(None)

    def usage(n: int) -> dict:
        return {"prompt_tokens": len(prompt_ids), "completion_tokens": n, "total_tokens": len(prompt_ids) + n}

    thread = threading.Thread(target=run, name="generate", daemon=True)
    thread.start()
    sent = ""
    try:
        while (item := q.get()) is not None:
            text, n = item
            if text != sent:
                sent = text
                yield frame({"text": echo_text + text, "error_code": 0, "usage": usage(n), "finish_reason": None})
        if "error" in state:
            e = state["error"]
            yield frame({"text": f"transformers generation failed: {type(e).__name__}: {e}", "error_code": ENGINE_ERROR})
            return
        n = len(streamer.ids)
        finish = "stop" if streamer.stopped or n < req.max_new_tokens else "length"
        lp = TokenLogprobs(len(echo_text), req.logprobs)
        lp.add({"content": [_token_logprob(tokenizer, p) for p in state["sampler"].picked[:n]]})
        yield frame({"text": echo_text + streamer.text, "error_code": 0, "usage": usage(n), "finish_reason": finish,
                     **lp.fields()})
    finally:
        streamer.cancelled.set()  # a no-op once the answer is done; else it stops at its next token


def _token_logprob(tokenizer, pick: dict) -> dict:
    piece = lambda i: tokenizer.decode([i])  # noqa: E731
    return {"token": piece(pick["id"]), "logprob": pick["logprob"],
            "top_logprobs": [{"token": piece(i), "logprob": v} for i, v in pick.get("top", [])]}
