"""A chat prompt as a worker must tokenise it, for every backend: the template's own text, where
the special tokens are the template's markers, apart from the messages' text, which is text whatever
it spells (a user who types `<|im_end|>` gets those characters, not the end of their turn: the seed
models' own chat code encodes a message so).

`prompt_parts` renders a conversation with a placeholder for each message, so the prompt comes
apart into [kind, text] parts ("template" or "message") that join back into the very prompt; it
checks that they do, and where a template rewrites a message's text (none of ours does) the prompt
is one template part, as before. `text_runs` turns parts into what a tokenizer takes: the special
tokens, one by one, and runs of text between them, tokenised without special parsing. Where the
model's own chat code encodes each message apart from the template's text (Qwen-7B-Chat's
make_context, ChatGLM3's build_chat_input) every part is a run of its own; elsewhere (chat templates
rendered whole, then tokenised) the text between two special tokens is one run.
"""
from __future__ import annotations

import copy
import re
from typing import Iterable

from deploy.registry.templates import SEPARATELY_ENCODED, exact_prompt

TEMPLATE, MESSAGE = "template", "message"
_PLACE = re.compile("\ue000(\\d+)\ue001")  # private-use marks no message text holds


def render(conv) -> str:
    """The model's own prompt for a conversation: byte-exact where FastChat's separator styles
    cannot express it (deploy/registry/templates.py), FastChat's otherwise."""
    return exact_prompt(conv) or conv.get_prompt()


def prompt_parts(conv) -> list[list[str]]:
    """[[kind, text], ...] that join into render(conv): the system message and every message's text
    as "message" parts, the rest "template". A system message the template itself reads (FastChat's
    deepseek-chat keeps its BOS there) stays template text."""
    whole = render(conv)
    for system in (True, False):
        parts = _placed(conv, whole, system)
        if parts is not None:
            return parts
    return [[TEMPLATE, whole]]  # the template rewrote a message: keep the prompt whole


class Placeholders:
    """Stand-ins for the messages' text, for rendering a template once more with them in place."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, text):
        if not isinstance(text, str) or not text or "\ue000" in text:
            return text  # empty or None: the template may leave its turn out; nothing to keep apart
        self.texts.append(text)
        return f"\ue000{len(self.texts) - 1}\ue001"

    def parts(self, rendered: str, whole: str) -> list[list[str]] | None:
        """The parts of `whole`, from its rendering with the placeholders; None if they do not join
        into it (the template changed a message's text)."""
        parts, at = [], 0
        for m in _PLACE.finditer(rendered):
            if m.start() > at:
                parts.append([TEMPLATE, rendered[at:m.start()]])
            parts.append([MESSAGE, self.texts[int(m.group(1))]])
            at = m.end()
        if at < len(rendered):
            parts.append([TEMPLATE, rendered[at:]])
        return parts if "".join(t for _, t in parts) == whole else None


def _placed(conv, whole: str, system: bool) -> list[list[str]] | None:
    """The parts of a FastChat conversation's prompt; None if they do not join into `whole`."""
    place = Placeholders()
    marked = copy.deepcopy(conv)
    if system:
        marked.system_message = place(conv.system_message)
    marked.messages = [[role, place(text)] for role, text in conv.messages]
    return place.parts(render(marked), whole)


def with_placeholders(messages: list[dict]) -> tuple[list[dict], Placeholders]:
    """OpenAI-style messages with their text (content, and reasoning handed back) as placeholders,
    for a template the model ships (deploy/backends: each worker renders it)."""
    place = Placeholders()
    marked = []
    for m in messages:
        m = dict(m)
        for key in ("content", "reasoning_content"):
            if isinstance(m.get(key), str):
                m[key] = place(m[key])
        marked.append(m)
    return marked, place


def shipped_parts(whole: str, rendered_with_placeholders: str, place: Placeholders) -> list[list[str]]:
    """The parts of a prompt rendered by the model's own template (whole when they do not join)."""
    return place.parts(rendered_with_placeholders, whole) or [[TEMPLATE, whole]]


def separately_encoded(template: str) -> bool:
    return template in SEPARATELY_ENCODED


def text_runs(parts: list[list[str]], specials: Iterable[str], separate: bool) -> list[tuple[bool, str]]:
    """(is a special token, text) in order: the template parts split at the special tokens among
    `specials` (the tokenizer's control tokens), message parts never; with `separate`, every piece
    its own run, else the text between two special tokens one run."""
    found = sorted((s for s in specials if s), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, found))) if found else None
    out: list[tuple[bool, str]] = []

    def add(special: bool, text: str, joinable: bool) -> None:
        if not special and joinable and out and not out[-1][0]:
            out[-1] = (False, out[-1][1] + text)
        else:
            out.append((special, text))

    for kind, text in parts:
        if kind != TEMPLATE or pattern is None:
            if text:
                add(False, text, not separate)
            continue
        at = 0
        for m in pattern.finditer(text):
            if m.start() > at:
                add(False, text[at:m.start()], not separate)
            add(True, m.group(), False)
            at = m.end()
        if at < len(text):
            add(False, text[at:], not separate)
    return out


def with_prefix(ids: list[int], prefix: list[int]) -> list[int]:
    """`ids` beginning with `prefix` exactly once (the special tokens a model's own code puts first:
    ChatGLM3's [gMASK] sop, a BOS), whether the template wrote them or not."""
    return ids if ids[:len(prefix)] == prefix else prefix + ids
