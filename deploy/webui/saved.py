"""Conversations and settings kept in the user's own browser (local storage, through
gr.BrowserState): a reload, or a visit next week, finds them again, and nothing leaves the machine.
A conversation is kept after each answer ends (direct chat and side by side; a battle is not: its
point is the vote), listed newest first, opened again into its tab, or deleted. An edited question
starts a branch: the conversation before the edit stays in the list."""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ValidationError

from deploy.webui.arena import Side, Speed, Trace, as_text, render
from deploy.webui.export import CUT_OFF, turns
from deploy.wire.client import AsyncFleetClient

KEPT = 30  # conversations per browser; the oldest goes first (local storage holds a few MB)
# Gradio encrypts a BrowserState's value with this key; a random one (its default) is new at every
# start of the web UI, and the browser's conversations would be unreadable after a restart. It is a
# constant on purpose: the page carries it anyway, and the value never leaves the user's browser.
STORAGE_SECRET = "fastchat-fleet-local"
SETTINGS_KEYS = ("system_prompt", "temperature", "top_p", "max_new_tokens", "seed")


class SavedTurn(BaseModel):
    user: str
    assistant: str = ""
    reasoning: str | None = None
    cut: bool = False  # it stopped at the most new tokens: Continue goes on


class SavedPane(BaseModel):
    model: str | None = None
    system: str = ""
    turns: list[SavedTurn] = []


class SavedConversation(BaseModel):
    id: str
    tab: Literal["direct", "named"]
    saved: float
    panes: list[SavedPane]

    @property
    def title(self) -> str:
        first = next((p.turns[0].user for p in self.panes if p.turns), "")
        first = " ".join(first.split())
        return first if len(first) <= 48 else first[:47] + "…"

    def label(self) -> str:
        models = " · ".join(p.model or "?" for p in self.panes)
        turns = max((len(p.turns) for p in self.panes), default=0)
        when = time.strftime("%m-%d %H:%M", time.localtime(self.saved))
        return f"{when} · {self.title} ({models}; {turns} turn{'s' if turns != 1 else ''})"


def snapshot(sides: list[Side], tab: Literal["direct", "named"]) -> SavedConversation | None:
    """The conversation the panes hold now, as the browser keeps it; None when nothing was asked."""
    panes = [SavedPane(model=s.model, system=s.conv.system_message if s.conv is not None else "",
                       turns=[] if s.error else [SavedTurn(user=t["user"], assistant=t["assistant"],
                                                           reasoning=t["reasoning"], cut=t["incomplete"] == CUT_OFF)
                                                 for t in turns(s)])
             for s in sides]
    if not any(p.turns for p in panes):
        return None
    return SavedConversation(id=sides[0].conv_id, tab=tab, saved=time.time(), panes=panes)


def load_all(store) -> list[SavedConversation]:
    """What the browser holds; anything unreadable (an older page's shape, a hand edit) is skipped."""
    out = []
    for item in store if isinstance(store, list) else []:
        try:
            out.append(SavedConversation.model_validate(item))
        except ValidationError:
            continue
    return out


def keep(store, conv: SavedConversation | None) -> list[dict]:
    """The store with `conv` in it (replacing its earlier copy), newest first, at most KEPT."""
    kept = [c for c in load_all(store) if conv is None or c.id != conv.id]
    if conv is not None:
        kept.insert(0, conv)
    return [c.model_dump() for c in kept[:KEPT]]


def forget(store, conv_id: str | None) -> list[dict]:
    return [c.model_dump() for c in load_all(store) if c.id != conv_id]


def choices(store, tab: str) -> list[tuple[str, str]]:
    return [(c.label(), c.id) for c in load_all(store) if c.tab == tab]


def find(store, conv_id: str | None) -> SavedConversation | None:
    return next((c for c in load_all(store) if c.id == conv_id), None)


async def restore(client: AsyncFleetClient, pane: SavedPane, conv_id: str) -> Side:
    """A pane's conversation as it was, in its model's template now (raises ModelUnavailable when
    that model is not served now). Speed lines are not kept: they were measured then."""
    side = Side(model=pane.model, conv_id=conv_id)
    side.conv = await client.conversation(pane.model)
    if pane.system:
        side.conv.set_system_message(pane.system)
    for i, t in enumerate(pane.turns):
        side.conv.append_message(side.conv.roles[0], t.user)
        side.conv.append_message(side.conv.roles[1], t.assistant)
        side.answers.append(t.assistant)
        side.raw.append(t.assistant)
        side.cut.append(t.cut and t.reasoning is None)  # a trace is not kept as the model wrote it
        side.speeds.append(Speed())
        side.traces.append(Trace(text=t.reasoning, done=True, closed=bool(t.assistant))
                           if t.reasoning is not None else None)
        side.turn_models.append((pane.model, side.conv.system_message))
        side.history.append([as_text(t.user), None])
        side.history[-1][1] = render(side, i)
    return side


def settings_of(store) -> dict:
    """The settings kept between visits (shared by the tabs), those that are there."""
    return {k: v for k, v in store.items() if k in SETTINGS_KEYS} if isinstance(store, dict) else {}
