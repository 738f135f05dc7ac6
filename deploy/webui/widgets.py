"""The widgets every tab of the web page is built from: the same parameters, panes, model pickers,
input row and export row everywhere (deploy/webui/app.py and puzzles_tab.py build the tabs)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import gradio as gr
from pydantic import TypeAdapter, ValidationError

from deploy.webui.arena import GenSettings
from deploy.wire.fields import Seed

SEED = TypeAdapter(Seed)
NO_CHANGE = gr.update()
OFF, ON = gr.update(interactive=False), gr.update(interactive=True)


@dataclass
class Controls:
    """The same parameters in every tab."""
    system: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_tokens: gr.Slider
    seed: gr.Textbox

    @property
    def inputs(self) -> list:
        return [self.system, self.temperature, self.top_p, self.max_tokens, self.seed]


class Refusal(ValueError):
    """What a tab refuses, in words (a setting typed wrong, an edit it cannot make): see refusing."""


def refusing(refuse):
    """An event's answer stream (an async generator taking the tab's state first) that meets a
    Refusal refuses with its message, through `refuse(state, message)`: raised to Gradio, it would
    make Gradio mark every output of the event with a red "Error" badge that hides the typed text."""
    def wrap(fn):
        @functools.wraps(fn)
        async def run(state, *args, **kwargs):
            try:
                async for out in fn(state, *args, **kwargs):
                    yield out
            except Refusal as e:
                yield refuse(state, str(e))
        return run
    return wrap


def seed_from(text) -> int | None:
    """The Seed box: empty is a new random answer each time (and lets a follow-up reuse the
    conversation's KV cache: a seeded request computes its whole prompt again, to be repeatable)."""
    text = str(text if text is not None else "").strip()
    if not text:
        return None
    try:
        return SEED.validate_python(int(text))
    except (ValueError, ValidationError):
        raise Refusal(f"The seed '{text[:24]}' is not a whole number of at most 19 digits. Type one, e.g. 42, to "
                       f"make answers repeatable, or leave the box empty for a different answer each time.") from None


def settings_from(system, temperature, top_p, max_tokens, seed) -> GenSettings:
    return GenSettings(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_tokens),
                       seed=seed_from(seed), system_prompt=system or "")


def settings_dict(system, temperature, top_p, max_tokens, seed) -> dict:
    """The settings as an export records them (a seed typed wrong is recorded as typed)."""
    try:
        s, typed = settings_from(system, temperature, top_p, max_tokens, seed), None
    except Refusal:
        s, typed = settings_from(system, temperature, top_p, max_tokens, None), str(seed)
    return {"system_prompt": s.system_prompt, "temperature": s.temperature, "top_p": s.top_p,
            "max_new_tokens": s.max_new_tokens, "seed": s.seed if typed is None else typed}


def controls(prefix: str, max_new_tokens: int, temperature: float = 0.7) -> Controls:
    with gr.Accordion("Parameters · system prompt, temperature, top_p, max tokens, seed", open=False,
                      elem_id=f"{prefix}_params"):
        system = gr.Textbox(label="System prompt", lines=2, placeholder="empty: each model's own default",
                            elem_id=f"{prefix}_system")
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=temperature, step=0.05, label="Temperature", elem_id=f"{prefix}_temperature")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p", elem_id=f"{prefix}_top_p")
            max_tokens = gr.Slider(16, 4096, value=max_new_tokens, step=16, label="Max new tokens",
                                   elem_id=f"{prefix}_max_tokens")
            seed = gr.Textbox(label="Seed (empty: random)", placeholder="random", max_lines=1, elem_id=f"{prefix}_seed")
    return Controls(system, temperature, top_p, max_tokens, seed)


def pane(label: str, elem_id: str, editable: bool = False) -> gr.Chatbot:
    """A conversation pane: each message its own bubble with a copy button (a note such as a model
    taking over is not copied with the answer beside it); HTML in a message is shown escaped
    (arena.as_text, safe_markdown), and Gradio strips tags besides. `editable`: the user's own
    questions can be edited, and the conversation is asked again from there."""
    return gr.Chatbot(label=label, elem_id=elem_id, elem_classes="pane", buttons=["copy"], height=400,
                      group_consecutive_messages=False, allow_tags=False, editable="user" if editable else None)


@dataclass
class Picker:
    select: gr.Dropdown
    info: gr.Markdown
    load: gr.Button
    unload: gr.Button
    pin: gr.Button


def picker(label: str, elem_id: str) -> Picker:
    """A model dropdown with a line about the chosen model under it, and buttons that load the model
    now, unload it, and pin or unpin it (the API's /models/load, /models/unload, /models/pin and
    /models/unpin, for a user managing memory; the pin button says which it does)."""
    sel = gr.Dropdown(label=label, elem_id=elem_id)
    with gr.Row(equal_height=True, elem_classes="model-line"):
        info = gr.Markdown(elem_id=f"{elem_id}_info", elem_classes="model-info")
        load = gr.Button("Load", size="sm", min_width=60, scale=0, elem_id=f"{elem_id}_load")
        unload = gr.Button("Unload", size="sm", min_width=60, scale=0, elem_id=f"{elem_id}_unload")
        pin = gr.Button("Pin", size="sm", min_width=60, scale=0, elem_id=f"{elem_id}_pin")
    return Picker(sel, info, load, unload, pin)


def input_row(prefix: str, placeholder: str) -> tuple[gr.Textbox, gr.Button, gr.Button]:
    with gr.Row(equal_height=True, elem_classes="input-row"):
        box = gr.Textbox(placeholder=placeholder, show_label=False, scale=8, lines=1, max_lines=6,
                         elem_id=f"{prefix}_input")
        send = gr.Button("Send", variant="primary", scale=1, min_width=70, elem_id=f"{prefix}_send")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=70, elem_id=f"{prefix}_stop")
    return box, send, stop


def export_row(prefix: str) -> tuple[gr.Button, gr.Button, gr.File]:
    with gr.Accordion("Export", open=False, elem_id=f"{prefix}_export"):
        with gr.Row():
            md = gr.Button("Markdown", size="sm", elem_id=f"{prefix}_export_md")
            js = gr.Button("JSON", size="sm", elem_id=f"{prefix}_export_json")
        file = gr.File(label="Download", visible=False, elem_id=f"{prefix}_export_file", interactive=False)
    return md, js, file


@dataclass
class SavedRow:
    pick: gr.Dropdown
    open: gr.Button
    delete: gr.Button


def saved_row(prefix: str) -> SavedRow:
    """The conversations this browser keeps for the tab (deploy/webui/saved.py): open one, delete one."""
    with gr.Accordion("Saved conversations (kept in this browser only)", open=False, elem_id=f"{prefix}_saved"):
        pick = gr.Dropdown(label="Saved conversations", choices=[], value=None, elem_id=f"{prefix}_saved_pick")
        with gr.Row():
            opened = gr.Button("Open", size="sm", elem_id=f"{prefix}_saved_open")
            delete = gr.Button("Delete", size="sm", variant="stop", elem_id=f"{prefix}_saved_delete")
    return SavedRow(pick, opened, delete)


@dataclass
class Pickers:
    selects: list[gr.Dropdown]
    infos: list[gr.Markdown]
    buttons: list[tuple[gr.Button, gr.Button, gr.Button]] = field(default_factory=list)  # (load, unload, pin) each

    @classmethod
    def of(cls, pickers: list[Picker]) -> "Pickers":
        return cls([p.select for p in pickers], [p.info for p in pickers],
                   [(p.load, p.unload, p.pin) for p in pickers])
