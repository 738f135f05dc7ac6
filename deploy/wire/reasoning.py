"""A thinking model's trace apart from its answer, as the peers return it (vLLM's reasoning parsers,
llama.cpp's --reasoning-format): what the model writes between `<think>` and `</think>` is reasoning,
the rest is the answer. A template that opens `<think>` itself (DeepSeek-R1's distills; Qwen3 with
thinking on leaves it to the model) makes everything reasoning until `</think>`; an answer cut off
inside the trace is reasoning only, with an empty answer.

`ThinkSplit` reads an answer as it streams, tags cut across two chunks included. The API server
and the web UI both read answers with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

START, END = "<think>", "</think>"
CLOSE = "\n" + END + "\n\n"  # what a trace's budget writes when it runs out: the model then answers


def opens_thinking(prompt: str) -> bool:
    """Whether the prompt leaves the model inside a trace: it ends with `<think>` (and whitespace)."""
    return prompt.rstrip().endswith(START)


@dataclass
class ThinkSplit:
    """Feed an answer's new text; get (kind, text) pieces, kind "reasoning" or "content"."""
    opened: bool = False                 # the prompt opened <think> itself
    state: str = field(init=False)       # "start": may open a trace; "reasoning"; "content"
    held: str = field(init=False, default="")  # text that may be the start of a tag

    def __post_init__(self):
        self.state = "reasoning" if self.opened else "start"

    @property
    def in_reasoning(self) -> bool:
        return self.state == "reasoning"

    @property
    def thought(self) -> bool:
        """Whether the answer had a trace (opened by the prompt or by the model)."""
        return self.opened or self.state in ("reasoning", "after") or self._thought

    _thought: bool = field(init=False, default=False)
    _begun: bool = field(init=False, default=False)

    def feed(self, text: str) -> list[tuple[str, str]]:
        text, self.held = self.held + text, ""
        out: list[tuple[str, str]] = []
        while text:
            if self.state == "start":
                body = text.lstrip()
                if not body:
                    self.held = text
                    return out
                if body.startswith(START):
                    self.state, text, self._thought = "reasoning", body[len(START):], True
                elif START.startswith(body):
                    self.held = text  # perhaps "<thi": wait for more
                    return out
                else:
                    self.state = "content"
            elif self.state == "reasoning":
                if not self._begun:  # the trace's own first line break is the tag's, not the trace's
                    text = text.lstrip("\n")
                    if not text:
                        return out
                    self._begun = True
                at = text.find(END)
                if at >= 0:
                    if text[:at].rstrip():
                        out.append(("reasoning", text[:at].rstrip()))
                    self.state, text = "after", text[at + len(END):]
                    continue
                # held back: what may begin the closing tag, and trailing blank space (the tag's line break)
                keep = _partial_tail(text, END)
                body = text[:len(text) - keep]
                kept = body[len(body.rstrip()):] + text[len(text) - keep:]
                if body.rstrip():
                    out.append(("reasoning", body.rstrip()))
                self.held = kept
                return out
            elif self.state == "after":  # the blank lines between the trace and the answer
                body = text.lstrip("\n")
                if not body:
                    return out
                self.state, text = "content", body
            else:
                out.append(("content", text))
                return out
        return out

    def end(self) -> list[tuple[str, str]]:
        """The text held back at the end of the answer (a tag that never finished is text)."""
        held, self.held = self.held, ""
        if not held:
            return []
        return [("reasoning" if self.state == "reasoning" else "content", held)] if held.strip() else []


def _partial_tail(text: str, tag: str) -> int:
    """How many of `text`'s last characters could begin `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def split_whole(text: str, opened: bool) -> tuple[str | None, str]:
    """(reasoning or None, answer) of a whole answer."""
    s = ThinkSplit(opened)
    pieces = s.feed(text) + s.end()
    reasoning = "".join(t for k, t in pieces if k == "reasoning")
    return (reasoning if s.thought else None), "".join(t for k, t in pieces if k == "content")


@dataclass
class TraceCount:
    """A trace's length in tokens as an answer streams (one piece of text per token), against a
    budget: `over` says when the trace has used it and is still open."""
    opened: bool
    budget: int
    tokens: int = 0   # of the answer so far
    traced: int = 0   # of them in the trace
    split: ThinkSplit = field(init=False)

    def __post_init__(self):
        self.split = ThinkSplit(self.opened)

    def add(self, piece: str, tokens: int = 1) -> None:
        inside = self.split.in_reasoning
        self.split.feed(piece)
        self.tokens += tokens
        if inside or self.split.in_reasoning:
            self.traced += tokens

    @property
    def over(self) -> bool:
        return self.split.in_reasoning and self.traced >= self.budget
