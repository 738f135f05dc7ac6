"""The text the rules match against, and the way back to the answer as written.

Rules and answers go through the same `normalize`, so a rule written one way matches the common
variants of its wording: full-width and half-width punctuation, every kind of quote, 的/地/得,
没有/没. `normalize_map` also returns, for each character kept, its offset in the original
answer, so evidence can be highlighted in the answer the model actually wrote.
"""
from __future__ import annotations

import unicodedata

SPACES = " \t\u3000\u00a0"
QUOTES = {c: '"' for c in "“”„‟「」『』〝〞‘’‚‛'＂"}
PARTICLES = {"地": "的", "得": "的"}
MASK = "\x00"  # a removed span: a sentence boundary, never matched by a rule
REAL_ENDS = "。!?;\n"
SENTENCE_ENDS = REAL_ENDS + MASK


def normalize_map(text: str) -> tuple[str, list[int]]:
    """(normalized text, original offset of each of its characters)."""
    out: list[str] = []
    idx: list[int] = []
    for i, ch in enumerate(text or ""):
        for c in unicodedata.normalize("NFKC", ch):
            if c in SPACES:
                continue
            c = QUOTES.get(c, PARTICLES.get(c, c))
            if c == "有" and out and out[-1] == "没":
                continue  # 没有 → 没: "没有什么大不了" meets a rule written "没什么大不了"
            out.append(c)
            idx.append(i)
    return "".join(out), idx


def normalize(text: str) -> str:
    return normalize_map(text)[0]


def sentences(text: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """Spans of the sentences of text[lo:hi]: a rule never matches across a sentence end."""
    hi = len(text) if hi is None else hi
    spans, start = [], lo
    for i in range(lo, hi):
        if text[i] in SENTENCE_ENDS:
            if i > start:
                spans.append((start, i))
            start = i + 1
    if hi > start:
        spans.append((start, hi))
    return spans


def sentence_start(text: str, pos: int) -> int:
    while pos > 0 and text[pos - 1] not in SENTENCE_ENDS:
        pos -= 1
    return pos


def masked(text: str, spans) -> str:
    """text with each span replaced by MASK characters (same length, so offsets still hold)."""
    chars = list(text)
    for a, b in spans:
        chars[a:b] = MASK * (b - a)
    return "".join(chars)
