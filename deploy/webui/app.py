"""This deployment's web page: side by side, an anonymous battle, direct chat, the eval's puzzles
and a leaderboard, on FastChat's controller and workers. Built by a factory, one builder per tab;
per-user state lives in gr.State, shared state on the `Arena` object, nothing on module globals.

Every tab has the same controls (system prompt, temperature, top_p, max tokens, seed), Stop
(each pane and both) and Regenerate, speed under every answer, and export. Gradio details this
relies on, and how: Enter and a click on Send are one listener (`gr.on`, trigger_mode "once"), so
a quick Enter-then-click sends once; Stop, New round and New chat set flags on the session's state
object, which the running stream reads (Gradio passes every event of a session the same State
object): a stopped answer keeps what was said so far, as context, and an abandoned round's stream
ends without writing into the cleared panes again. Gradio's own `cancels=` was tried for New round
and lost a race: the cancelled stream's event sometimes swallowed the new round's update.

Nothing is loaded from outside the machine: no third-party branding, images, scripts or web
fonts (Gradio's default theme would fetch Google Fonts; ours names local fonts only).
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from deploy.webui.arena import Arena, Battle, GenSettings, Side
from deploy.webui.export import as_json, as_markdown, share_text, write_file
from deploy.webui.puzzles_tab import PuzzleBook, puzzles_tab
from deploy.webui.votes import PRELIMINARY_BATTLES, VOTES, VoteLog
from deploy.webui.widgets import (Controls, Pickers, controls, export_row, input_row, pane, picker, settings_dict,
                                  settings_from)
from deploy.wire.client import AsyncFleetClient, ModelUnavailable

TITLE = "fastchat-fleet · model arena"
# The page's own scripts (deploy/webui/head.html): each pane follows its newest text, copies leave
# out the speed line, and one known Gradio console warning is held back; why each, in that file.
HEAD = (Path(__file__).parent / "head.html").read_text(encoding="utf-8")
CSS = """
footer {display: none !important}
.pane .message {font-size: 15px; overflow-wrap: anywhere}
.pane .message pre {white-space: pre-wrap}
.model-table table {font-size: 13px}
.pane {height: min(46vh, 400px) !important}
.model-info {min-height: 1.2em; margin-top: -6px}
.model-info p {margin: 0; color: #555}
@media (max-width: 700px) {
  /* a phone: the panes one above the other, each under its own label; the pickers too; every tab
     in view (wrapped, not scrolled off the side); the question box is fixed at the bottom of the screen */
  .panes, .pickers {flex-direction: column !important; gap: 8px !important}
  .panes > .column, .pickers > .column {width: 100% !important; min-width: 0 !important}
  .pane {height: 34vh !important}
  .pane .message {font-size: 14px !important; padding: 6px !important}
  .model-info {display: none}
  .tab-nav {flex-wrap: wrap !important}
  .tab-nav button {flex: 0 0 auto; padding: 4px 8px !important}
  .vote-row {flex-wrap: wrap !important; flex-direction: row !important; gap: 6px !important}
  .vote-row > button {flex: 1 1 40% !important; min-width: 0 !important}
  .input-row {flex-wrap: nowrap !important}
  .input-row > * {min-width: 0 !important}
  .input-row {position: fixed; left: 0; right: 0; bottom: 0; z-index: 20; margin: 0 !important;
              background: var(--background-fill-primary); padding: 6px 10px;
              box-shadow: 0 -4px 8px rgba(0, 0, 0, 0.08)}
  .gradio-container {padding-bottom: 96px !important}
  .table-wrap, .model-table {overflow-x: auto}
  h1 {font-size: 1.2em !important; margin: 0 !important}
  .intro {display: none}
}
"""
THEME_FONTS = ["Noto Sans CJK SC", "Noto Sans", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", "sans-serif"]
NO_CHANGE = gr.update()
OFF, ON = gr.update(interactive=False), gr.update(interactive=True)


def _wire_export(md: gr.Button, js: gr.Button, file: gr.File, state: gr.State, ctl: Controls, sides_of) -> None:
    """sides_of(state) -> (sides, labels, hidden): hidden is a battle before its vote, whose
    export names no model and carries no template's system prompt (which can name one)."""
    def make(fmt):
        def fn(st, *params):
            sides, labels, hidden = sides_of(st)
            if not any(s.conv is not None for s in sides):
                return gr.update(visible=False)
            render = as_markdown if fmt == "md" else as_json
            text = render(sides, labels, settings_dict(*params), None, hidden)
            return gr.update(value=write_file(text, "conversation", ".md" if fmt == "md" else ".json"), visible=True)
        return fn
    md.click(make("md"), [state, *ctl.inputs], file)
    js.click(make("json"), [state, *ctl.inputs], file)


def _vote_buttons(prefix: str) -> list[gr.Button]:
    return [gr.Button(label, interactive=False, size="sm", elem_id=f"{prefix}_{kind}") for kind, (label, _) in VOTES.items()]


def _outcome(sides: list[Side], vote_prompt: str) -> tuple[str, bool]:
    """(status, whether votes and Regenerate make sense) once every pane has finished."""
    failed = [s for s in sides if s.conv is None or s.error]
    if not failed:
        return vote_prompt, True
    if len(failed) == len(sides):
        return ("Both models failed: their panes say why and what to do. Votes and Regenerate need answers; "
                "ask again (or start over)."), False
    return "One model failed (its pane says why); votes need two answers.", False


# ---- two panes: side by side, battle -----------------------------------------------------------
@dataclass
class Round:
    state: gr.State
    bots: list[gr.Chatbot]
    box: gr.Textbox
    status: gr.Markdown
    votes: list[gr.Button]
    regen: gr.Button
    send: gr.Button

    def outputs(self) -> list:
        return [self.state, *self.bots, self.box, self.status, *self.votes, self.regen, self.send]


def _panes(battle: Battle) -> list:
    if battle.titles is None:
        return [s.history for s in battle.sides]
    return [gr.update(value=s.history, label=t) for s, t in zip(battle.sides, battle.titles)]


def _frame(battle: Battle, box=NO_CHANGE, status=NO_CHANGE, votes=None, regen=NO_CHANGE, send=NO_CHANGE) -> tuple:
    return (battle, *_panes(battle), box, status, *(votes or [NO_CHANGE] * len(VOTES)), regen, send)


def _refuse(battle: Battle, message: str) -> tuple:
    return (battle, *[NO_CHANGE] * len(battle.sides), NO_CHANGE, message, *[NO_CHANGE] * len(VOTES), NO_CHANGE, ON)


NEW_ROUND = "New round: ask a question."


def _abandoned(battle: Battle) -> tuple:
    """The last update of a stream whose round was replaced: the new round, as New round drew it.
    Gradio sends each update of a stream one step late (when the next is ready, or the stream
    ends), so a stream that just stopped would otherwise repaint its old text over the cleared panes."""
    return _frame(battle.replaced_by, NO_CHANGE, NEW_ROUND, [OFF] * len(VOTES), OFF, ON)


async def _stream(arena: Arena, battle: Battle, settings: GenSettings, labels: list[str], note: str, vote_prompt: str):
    """Stream every side of the round into its pane; ends with votes open when both answered."""
    yield _frame(battle, "", note + "Answering… (**Stop** ends it; what was said so far stays)", [OFF] * len(VOTES),
                 OFF, OFF)
    async for _ in arena.stream_sides(battle.sides, settings, labels):
        if battle.abandoned:
            yield _abandoned(battle)
            return
        yield _frame(battle)
    if battle.abandoned:
        yield _abandoned(battle)
        return
    text, ok = _outcome(battle.sides, vote_prompt)
    yield _frame(battle, NO_CHANGE, text, [ON if ok else OFF] * len(VOTES), ON if ok else OFF, ON)


async def _play(arena: Arena, battle: Battle, models: list[str], text: str, settings: GenSettings,
                labels: list[str], note: str, vote_prompt: str):
    battle.question = text
    for side, model, label in zip(battle.sides, models, labels):
        await arena.begin_turn(side, model, text, label, settings.system_prompt)
    async for out in _stream(arena, battle, settings, labels, note, vote_prompt):
        yield out


def _round_ui(prefix: str, placeholder: str, names: bool) -> tuple[Round, gr.Button, list]:
    state = gr.State(Battle)
    pickers = []
    if names:
        with gr.Row(elem_classes="pickers"):
            for side in ("a", "b"):
                with gr.Column(min_width=120):
                    pickers.append(picker(f"Model {side.upper()}", f"{prefix}_model_{side}"))
    bots, side_stops = [], []
    with gr.Row(elem_classes="panes"):  # side by side; one above the other on a phone (CSS)
        for side in ("a", "b"):
            with gr.Column(min_width=120):
                pane_id = f"pane_{side}" if prefix == "named" else f"{prefix}_pane_{side}"
                bots.append(pane(f"Model {side.upper()}", pane_id))
                side_stops.append(gr.Button(f"Stop {side.upper()}", size="sm", elem_id=f"{prefix}_stop_{side}"))
    box, send, stop = input_row(prefix, placeholder)
    with gr.Row(elem_classes="vote-row"):
        votes = _vote_buttons(prefix)
        regen = gr.Button("Regenerate", size="sm", interactive=False, elem_id=f"{prefix}_regen")
        new = gr.Button("New round" if names else "New battle", size="sm", elem_id=f"{prefix}_new")
    status = gr.Markdown(elem_id=f"{prefix}_status")
    rnd = Round(state, bots, box, status, votes, regen, send)
    for i, b in enumerate(side_stops):
        b.click(_stop_sides([i]), state, None, queue=False)
    stop.click(_stop_sides([0, 1]), state, None, queue=False)
    return rnd, new, pickers


def _stop_sides(indexes: list[int]):
    def fn(battle: Battle):
        for i in indexes:
            battle.sides[i].stop = True
    return fn


def _wire_round(rnd: Round, new: gr.Button, send_fn, send_inputs: list, regen_fn, regen_inputs: list,
                titles: list[str] | None = None) -> None:
    """`titles`: the pane headings a new round starts with (a battle's "Model A", "Model B")."""
    for event in (gr.on([rnd.box.submit, rnd.send.click], send_fn, send_inputs, rnd.outputs(), trigger_mode="once",
                        concurrency_limit=None),
                  rnd.regen.click(regen_fn, regen_inputs, rnd.outputs(), trigger_mode="once", concurrency_limit=None)):
        event.then(lambda: ON, None, rnd.send, queue=False)  # Send comes back however the round ended

    def new_round(battle: Battle):
        battle.abandoned = True  # the running stream ends at its next look, writing nothing more
        for s in battle.sides:
            s.stop = True
        battle.replaced_by = Battle(titles=titles)
        return _abandoned(battle)
    new.click(new_round, rnd.state, rnd.outputs())


def _regen_fn(arena: Arena, labels_of, vote_prompt: str, allow_after_vote: bool):
    async def fn(battle: Battle, *params):
        if battle.voted and not allow_after_vote:
            yield _refuse(battle, "This battle is over; ask a new question to start the next one.")
            return
        if not all([arena.retract(s) for s in battle.sides]):
            yield _refuse(battle, "Nothing to regenerate yet.")
            return
        battle.voted = False
        async for out in _stream(arena, battle, settings_from(*params), labels_of(battle), "Regenerating. ", vote_prompt):
            yield out
    return fn


def _wire_votes(arena: Arena, rnd: Round, anony: bool, share: gr.Textbox | None) -> None:
    """A vote. In a battle it ends the battle: the panes are relabelled with the models' names,
    Regenerate is off, and the share box offers the result."""
    outs = [rnd.state, rnd.status, *rnd.votes, rnd.regen, *rnd.bots] + ([share] if share else [])
    keep = [NO_CHANGE] * (1 + len(rnd.bots) + (1 if share else 0))

    def handler(kind: str):
        def fn(battle: Battle, request: gr.Request):
            if battle.voted or any(s.conv is None or s.error for s in battle.sides):
                return battle, "Nothing to vote on.", *[OFF] * len(VOTES), *keep
            arena.vote(battle, kind, anony, request.client.host if request and request.client else "")
            if anony:
                a, b = battle.sides
                battle.titles = [f"Model A: {a.model}", f"Model B: {b.model}"]
                msg = (f"Vote recorded: {VOTES[kind][0]}. Model A was **{a.model}**, Model B was **{b.model}**. "
                       f"This battle is over: your next question starts a new one with two models drawn again.")
                return (battle, msg, *[OFF] * len(VOTES), OFF, *[gr.update(label=t) for t in battle.titles],
                        gr.update(value=share_text(battle, kind), visible=True))
            return (battle, f"Vote recorded: {VOTES[kind][0]}. Ask a follow-up: both conversations go on "
                            f"(or **New round** to start over).", *[OFF] * len(VOTES), *keep)
        return fn

    for btn, kind in zip(rnd.votes, VOTES):
        btn.click(handler(kind), [rnd.state], outs)


def _side_by_side_tab(arena: Arena, max_new_tokens: int) -> Pickers:
    rnd, new, pickers = _round_ui("named", "输入问题，两个模型同时回答 / ask both models", names=True)
    (sel_a, info_a), (sel_b, info_b) = pickers
    ctl = controls("named", max_new_tokens)
    md, js, file = export_row("named")
    prompt = "Which answer is better? (or ask a follow-up)"

    async def send_fn(battle: Battle, a, b, text, *params):
        if not text or not text.strip():
            yield _refuse(battle, "Type a question first.")
            return
        if not a or not b:
            yield _refuse(battle, "Pick two models.")
            return
        battle.voted = False  # a follow-up after a vote: the same conversations go on
        async for out in _play(arena, battle, [a, b], text, settings_from(*params), [a, b], "", prompt):
            yield out

    _wire_round(rnd, new, send_fn, [rnd.state, sel_a, sel_b, rnd.box, *ctl.inputs],
                _regen_fn(arena, lambda b: [s.model for s in b.sides], prompt, True), [rnd.state, *ctl.inputs])
    _wire_votes(arena, rnd, anony=False, share=None)
    _wire_export(md, js, file, rnd.state, ctl, lambda b: (b.sides, [s.model or "Model" for s in b.sides], False))
    return Pickers([sel_a, sel_b], [info_a, info_b])


BATTLE_TITLES = ["Model A", "Model B"]


def _battle_tab(arena: Arena, max_new_tokens: int) -> None:
    gr.Markdown("Two models drawn at random from those registered now answer your question; their names "
                "are revealed after you vote. Voting ends the battle.", elem_classes="intro")
    rnd, new, _ = _round_ui("anony", "输入问题 / ask", names=False)
    share = gr.Textbox(label="Share this result (copy it anywhere)", show_copy_button=True, visible=False,
                       interactive=False, lines=4, elem_id="anony_share")
    ctl = controls("anony", max_new_tokens)
    md, js, file = export_row("anony")
    prompt = "Which answer is better? Vote to see who they are."

    async def send_fn(battle: Battle, text, *params):
        if not text or not text.strip():
            yield _refuse(battle, "Type a question first.")
            return
        note = ""
        if battle.voted or battle.sides[0].model is None:
            try:
                models = await arena.client.list_models()
            except ModelUnavailable as e:
                yield _refuse(battle, str(e))
                return
            if len(models) < 2:
                yield _refuse(battle, "A battle needs two registered models.")
                return
            note = "**New battle**: two models drawn again. " if battle.voted else ""
            battle = Battle(titles=BATTLE_TITLES)
            for side, m in zip(battle.sides, random.sample(models, 2)):
                side.model = m
        async for out in _play(arena, battle, [s.model for s in battle.sides], text, settings_from(*params),
                               BATTLE_TITLES, note, prompt):
            yield out

    _wire_round(rnd, new, send_fn, [rnd.state, rnd.box, *ctl.inputs],
                _regen_fn(arena, lambda b: BATTLE_TITLES, prompt, False), [rnd.state, *ctl.inputs], BATTLE_TITLES)
    _wire_votes(arena, rnd, anony=True, share=share)
    gr.on([rnd.box.submit, rnd.send.click], lambda b: gr.update(visible=False) if b.voted else NO_CHANGE, rnd.state, share)
    _wire_export(md, js, file, rnd.state, ctl,
                 lambda b: (b.sides, [f"Model A ({b.sides[0].model})", f"Model B ({b.sides[1].model})"] if b.voted
                            else BATTLE_TITLES, not b.voted))


# ---- one pane: direct chat ---------------------------------------------------------------------
def _direct_tab(arena: Arena, max_new_tokens: int) -> Pickers:
    state = gr.State(Side)
    sel, info = picker("Model", "direct_model")
    bot = pane("Chat", "direct_pane")
    box, send, stop = input_row("direct", "输入问题 / ask")
    with gr.Row():
        regen = gr.Button("Regenerate", size="sm", interactive=False, elem_id="direct_regen")
        clear = gr.Button("New chat", size="sm", elem_id="direct_new")
    status = gr.Markdown(elem_id="direct_status")
    ctl = controls("direct", max_new_tokens)
    md, js, file = export_row("direct")
    outputs = [state, bot, box, status, regen, send]

    async def stream(side: Side, settings: GenSettings):
        yield side, side.history, "", "Answering… (**Stop** ends it)", OFF, OFF
        async for _ in arena.stream_sides([side], settings, [side.model]):
            if side.abandoned:
                break
            yield side, side.history, NO_CHANGE, NO_CHANGE, NO_CHANGE, NO_CHANGE
        if side.abandoned:  # its last update shows the new chat (see _abandoned)
            yield side.replaced_by, [], NO_CHANGE, "New chat.", OFF, ON
        elif side.error:
            yield side, side.history, NO_CHANGE, "The model failed: its answer says why and what to do.", OFF, ON
        else:
            yield side, side.history, NO_CHANGE, "", ON, ON

    async def send_fn(side: Side, model, text, *params):
        if not text or not text.strip():
            yield side, NO_CHANGE, NO_CHANGE, "Type a question first.", NO_CHANGE, ON
            return
        if not model:
            yield side, NO_CHANGE, NO_CHANGE, "Pick a model.", NO_CHANGE, ON
            return
        settings = settings_from(*params)
        if not await arena.begin_turn(side, model, text, model, settings.system_prompt):
            yield side, side.history, "", "", OFF, ON
            return
        async for out in stream(side, settings):
            yield out

    async def regen_fn(side: Side, *params):
        if not arena.retract(side):
            yield side, NO_CHANGE, NO_CHANGE, "Nothing to regenerate yet.", NO_CHANGE, ON
            return
        async for out in stream(side, settings_from(*params)):
            yield out

    for event in (gr.on([box.submit, send.click], send_fn, [state, sel, box, *ctl.inputs], outputs,
                        trigger_mode="once", concurrency_limit=None),
                  regen.click(regen_fn, [state, *ctl.inputs], outputs, trigger_mode="once", concurrency_limit=None)):
        event.then(lambda: ON, None, send, queue=False)

    def stop_fn(side: Side):
        side.stop = True
    stop.click(stop_fn, state, None, queue=False)

    def clear_fn(side: Side):
        side.stop, side.abandoned, side.replaced_by = True, True, Side()
        return side.replaced_by, [], NO_CHANGE, "New chat.", OFF, ON
    clear.click(clear_fn, state, outputs)
    _wire_export(md, js, file, state, ctl, lambda s: ([s], [s.model or "Model"], False))
    return Pickers([sel], [info])


# ---- leaderboard --------------------------------------------------------------------------------
def _leaderboard_tab(votes: VoteLog, demo: gr.Blocks, tab: gr.Tab) -> None:
    note = gr.Markdown(elem_id="leaderboard_note")
    ratings = gr.Dataframe(headers=["model", "rating (BT)", "95% CI", "Elo (online)", "battles", "wins"],
                         interactive=False, elem_id="leaderboard_table", label="Ratings")
    pairs = gr.Dataframe(interactive=False, elem_id="leaderboard_pairs",
                         label="Pairwise: share of decided battles (ties left out) the row model won "
                               "against the column model, with the counts")
    refresh = gr.Button("Refresh", elem_id="leaderboard_refresh")

    def table(lb) -> tuple:
        named = (f" {lb.n_named} side-by-side vote(s), cast with the names shown, are kept in the log but "
                 f"not ranked (as on Chatbot Arena, to keep brand bias out).") if lb.n_named else ""
        if not lb.ratings:
            return "No battle votes yet: vote in *Battle (anonymous)*." + named, [], []

        def interval(r):
            if r["ci_low"] is None:
                return "computing…"
            return f"{r['ci_low']} – {r['ci_high']}" + (" (preliminary)" if r["preliminary"] else "")
        rows = [[r["model"], r["rating"], interval(r), r["elo"], r["battles"], r["wins"]] for r in lb.ratings]
        text = (f"{lb.n_votes} anonymous battle vote(s). Bradley–Terry ratings (FastChat's monitor code) with 95% "
                f"bootstrap intervals; ties count half. Ratings from fewer than {PRELIMINARY_BATTLES} battles are "
                f"preliminary: their intervals are wide." + named
                + ("" if lb.intervals else " The intervals are being computed (a few seconds)."))
        return text, rows, gr.update(value=lb.pairwise[1:], headers=lb.pairwise[0])

    async def at_once():
        """The votes at once: ratings, counts, pairwise (intervals marked as being computed)."""
        return table(await asyncio.to_thread(votes.leaderboard, False))

    async def with_intervals():
        """Then the bootstrap intervals, which take seconds. A second event rather than a second
        yield: Gradio 4.44 streams a generator's later values as diffs, and its Dataframe does not
        redraw for a diff, so the table kept "computing…"."""
        return table(await asyncio.to_thread(votes.leaderboard))

    for event in (refresh.click, tab.select, demo.load):
        event(at_once, None, [note, ratings, pairs], show_progress="hidden").then(
            with_intervals, None, [note, ratings, pairs], show_progress="hidden")


# ---- the page -----------------------------------------------------------------------------------
def _choice(models: list[str], current, index: int, preferred: list[str] | None = None):
    """Keep the user's pick while its model is registered; else the index-th of `preferred`
    (the models in the order defaults are picked from)."""
    order = preferred or models
    value = current if current in models else (order[min(index, len(order) - 1)] if order else None)
    return gr.update(choices=models, value=value)


def create_webui(client: AsyncFleetClient, votes: VoteLog, refresh_seconds: float = 15.0,
                 max_new_tokens: int = 512, puzzles: PuzzleBook | None = None) -> gr.Blocks:
    arena = Arena(client, votes)
    votes.warm()
    theme = gr.themes.Default(font=THEME_FONTS, font_mono=["Noto Sans Mono CJK SC", "DejaVu Sans Mono", "monospace"])
    with gr.Blocks(title=TITLE, theme=theme, css=CSS, head=HEAD, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown("Ask the models this machine serves side by side and vote for the better answer. Each runs in "
                    "its own FastChat worker, held to its memory budget, on the CPU cores its entry names.",
                    elem_classes="intro")
        with gr.Tabs(selected="named", elem_id="tabs"):
            with gr.Tab("Side by side", id="named"):
                named = _side_by_side_tab(arena, max_new_tokens)
            with gr.Tab("Battle (anonymous)", id="anony"):
                _battle_tab(arena, max_new_tokens)
            with gr.Tab("Direct chat", id="direct"):
                direct = _direct_tab(arena, max_new_tokens)
            with gr.Tab("Puzzles", id="puzzles"):
                puzzle_pickers = puzzles_tab(arena, max_new_tokens, puzzles)
            with gr.Tab("Leaderboard", id="leaderboard") as lb_tab:
                _leaderboard_tab(votes, demo, lb_tab)
        with gr.Accordion("Models registered now", open=False, elem_id="models_accordion"):
            models_df = gr.Dataframe(headers=["model", "backend", "quantisation", "cores", "memory budget", "context",
                                              "template", "source"],
                                     interactive=False, elem_classes="model-table", label="Models")
        known = gr.State(list)
        selects = [*named.selects, *direct.selects, *puzzle_pickers.selects]
        infos = [*named.infos, *direct.infos, *puzzle_pickers.infos]
        order = [i for p in (named, direct, puzzle_pickers) for i in range(len(p.selects))]  # A first, B second

        async def refresh_models(seen: list, *picked):
            """Registered-later models appear, gone ones disappear; while the list is unchanged the
            dropdowns are left alone, so an open one is never redrawn under the user's pointer."""
            try:
                models = await client.list_models()
            except ModelUnavailable:
                models = []
            if models == seen:
                return (seen, NO_CHANGE, *[NO_CHANGE] * len(selects))
            table = await arena.models_table(models)
            quick = await arena.quick_first(models)
            return (models, table, *[_choice(models, p, i, quick) for p, i in zip(picked, order)])

        async def refresh_infos(*picked):
            """The line under each picker, with whether its model is in memory now."""
            return [await arena.describe(p) for p in picked]

        timer = gr.Timer(refresh_seconds)
        timer.tick(refresh_models, [known, *selects], [known, models_df, *selects])
        timer.tick(refresh_infos, selects, infos)
        demo.load(refresh_models, [known, *selects], [known, models_df, *selects])
        for sel, info in zip(selects, infos):
            sel.change(arena.describe, sel, info)
    return demo
