"""This deployment's web page: a side-by-side arena, an anonymous battle, direct chat and a
leaderboard, on FastChat's controller and workers. Built by a factory, one builder per tab;
per-user state lives in gr.State, shared state on the `Arena` object, nothing on module globals.

Nothing is loaded from outside the machine: no third-party branding, images, scripts or web
fonts (Gradio's default theme would fetch Google Fonts; ours names local fonts only).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import gradio as gr

from deploy.fleet_client import AsyncFleetClient, ModelUnavailable
from deploy.webui.arena import Arena, Battle, GenSettings, Side
from deploy.webui.votes import PRELIMINARY_BATTLES, VOTES, VoteLog

TITLE = "fastchat-fleet · model arena"
CSS = """
footer {display: none !important}
#pane_a .message, #pane_b .message {font-size: 15px}
.model-table table {font-size: 13px}
"""
THEME_FONTS = ["Noto Sans CJK SC", "Noto Sans", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", "sans-serif"]
NO_CHANGE = gr.update()


def _vote_row(prefix: str) -> list[gr.Button]:
    return [gr.Button(label, interactive=False, elem_id=f"{prefix}_{kind}") for kind, (label, _) in VOTES.items()]


def _on_submit(box: gr.Textbox, button: gr.Button, fn, inputs: list, outputs: list) -> None:
    """Enter in the box and a click on the button do the same thing."""
    button.click(fn, inputs, outputs)
    box.submit(fn, inputs, outputs)


def _wire_votes(arena: Arena, buttons: list[gr.Button], state: gr.State, status: gr.Markdown, anony: bool) -> None:
    def handler(kind: str):
        def fn(battle: Battle, request: gr.Request):
            if battle.voted or any(s.conv is None for s in battle.sides):
                return battle, "Nothing to vote on.", *[gr.update(interactive=False)] * len(VOTES)
            arena.vote(battle, kind, anony, request.client.host if request and request.client else "")
            msg = f"Vote recorded: {VOTES[kind][0]}."
            if anony:
                msg += f" Model A was **{battle.sides[0].model}**, Model B was **{battle.sides[1].model}**."
            else:
                msg += " Thanks!"
            return battle, msg, *[gr.update(interactive=False)] * len(VOTES)
        return fn

    for btn, kind in zip(buttons, VOTES):
        btn.click(handler(kind), [state], [state, status, *buttons])


async def _play_round(arena: Arena, battle: Battle, models: list[str], text: str, settings: GenSettings,
                      labels: list[str]):
    """Both sides answer at once; yields (battle, history A, history B, input, status, *vote buttons)."""
    for side, model, label in zip(battle.sides, models, labels):
        await arena.begin_turn(side, model, text, label)
    off = [gr.update(interactive=False)] * len(VOTES)
    yield battle, battle.sides[0].history, battle.sides[1].history, "", "", *off
    async for _ in arena.stream_sides(battle.sides, settings, labels):
        yield battle, battle.sides[0].history, battle.sides[1].history, "", "", *[NO_CHANGE] * len(VOTES)
    ok = not any(s.error for s in battle.sides)
    yield (battle, battle.sides[0].history, battle.sides[1].history, "",
           "Which answer is better?" if ok else "One model failed; votes need two answers.",
           *[gr.update(interactive=ok)] * len(VOTES))


def _refuse(battle, message: str):
    return battle, NO_CHANGE, NO_CHANGE, NO_CHANGE, message, *[NO_CHANGE] * len(VOTES)


def _new_round():
    return Battle(), [], [], "", *[gr.update(interactive=False)] * len(VOTES)


@dataclass
class SideBySide:
    model_a: gr.Dropdown
    model_b: gr.Dropdown


def _side_by_side_tab(arena: Arena, max_new_tokens: int) -> SideBySide:
    state = gr.State(Battle)
    with gr.Row():
        sel_a = gr.Dropdown(label="Model A", elem_id="named_model_a")
        sel_b = gr.Dropdown(label="Model B", elem_id="named_model_b")
    with gr.Row():
        bot_a = gr.Chatbot(label="Model A", elem_id="pane_a", height=420)
        bot_b = gr.Chatbot(label="Model B", elem_id="pane_b", height=420)
    with gr.Row():
        box = gr.Textbox(placeholder="输入问题，两个模型同时回答 / ask both models", show_label=False, scale=8,
                         elem_id="named_input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="named_send")
    with gr.Row():
        votes = _vote_row("named")
        clear = gr.Button("New round", elem_id="named_clear")
    with gr.Row():
        temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.1, label="Temperature")
        max_tokens = gr.Slider(16, 4096, value=max_new_tokens, step=16, label="Max new tokens",
                               elem_id="named_max_tokens")
        seed = gr.Number(label="Seed (empty: random)", precision=0, elem_id="named_seed")
    status = gr.Markdown(elem_id="named_status")

    async def send_fn(battle: Battle, a, b, text, temp, max_new, seed_value):
        if not text or not text.strip():
            yield _refuse(battle, "Type a question first.")
            return
        if not a or not b:
            yield _refuse(battle, "Pick two models.")
            return
        if battle.voted:
            battle = Battle()
        settings = GenSettings(temperature=temp, max_new_tokens=int(max_new),
                               seed=None if seed_value is None else int(seed_value))
        async for out in _play_round(arena, battle, [a, b], text, settings, [a, b]):
            yield out

    _on_submit(box, send, send_fn, [state, sel_a, sel_b, box, temperature, max_tokens, seed],
               [state, bot_a, bot_b, box, status, *votes])
    _wire_votes(arena, votes, state, status, anony=False)
    clear.click(_new_round, None, [state, bot_a, bot_b, status, *votes])
    return SideBySide(sel_a, sel_b)


def _battle_tab(arena: Arena, max_new_tokens: int) -> None:
    state = gr.State(Battle)
    gr.Markdown("Two models drawn at random from those registered now answer your question; "
                "their names are revealed after you vote.")
    with gr.Row():
        bot_a = gr.Chatbot(label="Model A", elem_id="anony_pane_a", height=420)
        bot_b = gr.Chatbot(label="Model B", elem_id="anony_pane_b", height=420)
    with gr.Row():
        box = gr.Textbox(placeholder="输入问题 / ask", show_label=False, scale=8, elem_id="anony_input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="anony_send")
    with gr.Row():
        votes = _vote_row("anony")
        clear = gr.Button("New battle", elem_id="anony_clear")
    status = gr.Markdown(elem_id="anony_status")

    async def send_fn(battle: Battle, text):
        if not text or not text.strip():
            yield _refuse(battle, "Type a question first.")
            return
        if battle.voted or battle.sides[0].model is None:
            try:
                models = await arena.client.list_models()
            except ModelUnavailable as e:
                yield _refuse(battle, str(e))
                return
            if len(models) < 2:
                yield _refuse(battle, "A battle needs two registered models.")
                return
            battle = Battle()
            for side, m in zip(battle.sides, random.sample(models, 2)):
                side.model = m
        async for out in _play_round(arena, battle, [s.model for s in battle.sides], text,
                                     GenSettings(max_new_tokens=max_new_tokens), ["Model A", "Model B"]):
            yield out

    _on_submit(box, send, send_fn, [state, box], [state, bot_a, bot_b, box, status, *votes])
    _wire_votes(arena, votes, state, status, anony=True)
    clear.click(_new_round, None, [state, bot_a, bot_b, status, *votes])


def _direct_tab(arena: Arena, max_new_tokens: int) -> gr.Dropdown:
    state = gr.State(Side)
    sel = gr.Dropdown(label="Model", elem_id="direct_model")
    bot = gr.Chatbot(label="Chat", elem_id="direct_pane", height=460)
    with gr.Row():
        box = gr.Textbox(placeholder="输入问题 / ask", show_label=False, scale=8, elem_id="direct_input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="direct_send")
    clear = gr.Button("Clear")

    async def send_fn(side: Side, model, text):
        if not text or not text.strip() or not model:
            yield side, NO_CHANGE, NO_CHANGE
            return
        ok = await arena.begin_turn(side, model, text, model)
        yield side, side.history, ""
        if ok:
            async for _ in arena.stream_sides([side], GenSettings(max_new_tokens=max_new_tokens), [model]):
                yield side, side.history, ""

    _on_submit(box, send, send_fn, [state, sel, box], [state, bot, box])
    clear.click(lambda: (Side(), []), None, [state, bot])
    return sel


def _leaderboard_tab(votes: VoteLog, demo: gr.Blocks, tab: gr.Tab) -> None:
    note = gr.Markdown(elem_id="leaderboard_note")
    table = gr.Dataframe(headers=["model", "rating (BT)", "95% CI", "Elo (online)", "battles", "wins"],
                         interactive=False, elem_id="leaderboard_table", label="Ratings")
    pairs = gr.Dataframe(interactive=False, elem_id="leaderboard_pairs",
                         label="Pairwise: share of decided battles (ties left out) the row model won "
                               "against the column model, with the counts")
    refresh = gr.Button("Refresh", elem_id="leaderboard_refresh")

    def leaderboard():
        lb = votes.leaderboard()
        named = (f" {lb.n_named} side-by-side vote(s), cast with the names shown, are kept in the log but "
                 f"not ranked (as on Chatbot Arena, to keep brand bias out).") if lb.n_named else ""
        if not lb.ratings:
            return "No battle votes yet: vote in *Battle (anonymous)*." + named, [], []
        rows = [[r["model"], r["rating"], f"{r['ci_low']} – {r['ci_high']}" + (" (preliminary)" if r["preliminary"] else ""),
                 r["elo"], r["battles"], r["wins"]] for r in lb.ratings]
        text = (f"{lb.n_votes} anonymous battle vote(s). Bradley–Terry ratings (FastChat's monitor code) with 95% "
                f"bootstrap intervals; ties count half. Ratings from fewer than {PRELIMINARY_BATTLES} battles are "
                f"preliminary: their intervals are wide." + named)
        return text, rows, gr.update(value=lb.pairwise[1:], headers=lb.pairwise[0])

    for event in (refresh.click, tab.select, demo.load):
        event(leaderboard, None, [note, table, pairs])


def _choice(models: list[str], current, index: int, preferred: list[str] | None = None):
    """Keep the user's pick while its model is registered; else the index-th of `preferred`
    (the models in the order defaults are picked from)."""
    order = preferred or models
    value = current if current in models else (order[min(index, len(order) - 1)] if order else None)
    return gr.update(choices=models, value=value)


def create_webui(client: AsyncFleetClient, votes: VoteLog, refresh_seconds: float = 5.0,
                 max_new_tokens: int = 512) -> gr.Blocks:
    arena = Arena(client, votes)
    theme = gr.themes.Default(font=THEME_FONTS, font_mono=["Noto Sans Mono CJK SC", "DejaVu Sans Mono", "monospace"])
    with gr.Blocks(title=TITLE, theme=theme, css=CSS, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nChat with the models this machine serves, two at a time, and vote for the "
                    "better answer. Each model runs in its own FastChat worker, pinned to its own CPU cores "
                    "and memory budget; votes feed the leaderboard.")
        models_df = gr.Dataframe(headers=["model", "backend", "cores", "memory budget", "context", "template"],
                                 interactive=False, elem_classes="model-table", label="Models registered now")
        with gr.Tabs():
            with gr.Tab("Side by side", id="named"):
                named = _side_by_side_tab(arena, max_new_tokens)
            with gr.Tab("Battle (anonymous)", id="anony"):
                _battle_tab(arena, max_new_tokens)
            with gr.Tab("Direct chat", id="direct"):
                direct = _direct_tab(arena, max_new_tokens)
            with gr.Tab("Leaderboard", id="leaderboard") as lb_tab:
                _leaderboard_tab(votes, demo, lb_tab)

        async def refresh_models(a, b, d):
            """Registered-later models appear, gone ones disappear."""
            try:
                models = await client.list_models()
            except ModelUnavailable:
                models = []
            table = await arena.models_table(models)
            quick = await arena.quick_first(models)
            return (table, _choice(models, a, 0, quick), _choice(models, b, 1, quick), _choice(models, d, 0, quick))

        selects = [named.model_a, named.model_b, direct]
        gr.Timer(refresh_seconds).tick(refresh_models, selects, [models_df, *selects])
        demo.load(refresh_models, selects, [models_df, *selects])
    return demo
