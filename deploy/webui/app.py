"""This deployment's web page: side by side, an anonymous battle, direct chat, the eval's puzzles
and a leaderboard, on FastChat's controller and workers. Built by a factory, one builder per tab;
per-user state lives in gr.State, shared state on the `Arena` object, nothing on module globals.

Side by side asks 2 to 4 models at once (every registered model by default, when they are 4 or
fewer), a battle two drawn at random. Every tab has the same controls (system prompt, temperature,
top_p, max tokens, seed), Stop (each pane and all) and Regenerate, speed under every answer, and
export (the round's pieces: deploy/webui/rounds.py). Gradio details this
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
import uuid
from pathlib import Path

import gradio as gr

from deploy.webui.arena import CUT_STATUS, Arena, Battle, GenSettings, Side
from deploy.webui.puzzles_tab import PuzzleBook, puzzles_tab
from deploy.webui.rounds import (LETTERS, MAX_PANES, continue_fn, play, regen_fn, replace_round, round_changes,
                                 round_ui, wire_export, wire_pane_count, wire_round, wire_votes)
from deploy.webui.saved import SETTINGS_KEYS, STORAGE_SECRET, choices, find, forget, keep, restore, settings_of, snapshot
from deploy.webui.votes import CATEGORIES, MIN_BATTLES, PAIRS_CORNER, VoteLog
from deploy.webui.widgets import (NO_CHANGE, OFF, ON, Controls, Pickers, Refusal, SavedRow, controls, export_row,
                                  input_row, pane, picker, refusing, saved_row, settings_from)
from deploy.wire.client import AsyncFleetClient, ModelUnavailable

TITLE = "fastchat-fleet · model arena"
# The page's own scripts (deploy/webui/head.html): each pane follows its newest text, copies leave
# out the speed line, and Enter while answers stream says the message was not sent; why each, in that file.
HEAD = (Path(__file__).parent / "head.html").read_text(encoding="utf-8")
CSS = """
.pane .message {font-size: 15px; overflow-wrap: anywhere}
/* a long code line wraps (Gradio keeps code on one line, scrolled sideways), with room for its copy button */
.pane .message pre, .pane .message pre code {white-space: pre-wrap !important; overflow-wrap: anywhere}
.pane .message pre {padding-right: 40px !important}
.model-table table {font-size: 13px}
.pane {height: min(46vh, 400px) !important}
.model-info {min-height: 1.2em; margin-top: -6px; overflow: hidden; max-width: 100%; min-width: 0}
.pane-count {flex: 0 1 auto !important; min-width: 150px !important; padding: 2px 8px !important}
.pane-count label {padding: 2px 8px !important}
.model-info p {margin: 0; color: #555; white-space: nowrap; overflow: hidden; text-overflow: ellipsis}
@media (max-width: 700px) {
  /* a phone: the panes one above the other, each under its own label; the pickers too; every tab
     in view (wrapped, not scrolled off the side); the question box is fixed at the bottom of the screen */
  .panes, .pickers {flex-direction: column !important; gap: 8px !important}
  .panes > *, .pickers > * {width: 100% !important; max-width: 100% !important; min-width: 0 !important}
  .pane {height: 34vh !important}
  .pane .message {font-size: 14px !important; padding: 6px !important}
  .vote-row {flex-wrap: wrap !important; flex-direction: row !important; gap: 6px !important}
  .vote-row > button {flex: 1 1 40% !important; min-width: 0 !important}
  .input-row {flex-wrap: nowrap !important}
  .input-row > * {min-width: 0 !important}
  .input-row {position: fixed; left: 0; right: 0; bottom: 0; z-index: 20; margin: 0 !important;
              background: var(--background-fill-primary); padding: 6px 10px;
              box-shadow: 0 -4px 8px rgba(0, 0, 0, 0.08)}
  /* room under the last control for the fixed question bar, until head.html measures the bar as drawn
     (it grows with the text typed in it) */
  .gradio-container {padding-bottom: 140px}
  .table-wrap, .model-table {overflow-x: auto}
  h1 {font-size: 1.2em !important; margin: 0 !important}
  .intro p {font-size: 13px}
}
"""
PHONE_WIDTH = 700  # CSS pixels: the CSS above stacks the panes below it
THEME_FONTS = ["Noto Sans CJK SC", "Noto Sans", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", "sans-serif"]
# ---- several panes: side by side, battle ---------------------------------------------------------
def _side_by_side_tab(arena: Arena, max_new_tokens: int,
                      store: gr.BrowserState) -> tuple[Pickers, gr.Radio, Controls, SavedRow]:
    rnd, new, pickers = round_ui("named", "输入问题，所有模型同时回答 / ask every pane's model", names=True,
                                 panes=MAX_PANES)
    selects = [p.select for p in pickers]
    ctl = controls("named", max_new_tokens)
    md, js, file = export_row("named")
    saved = saved_row("named")

    def prompt(n: int) -> str:
        return ("Which answer is better? (or ask a follow-up)" if n == 2 else
                "Which answer is best? (or ask a follow-up)")

    @refusing(rnd.refuse)
    async def send_fn(battle: Battle, n, *rest):
        models, (text, *params) = rest[:MAX_PANES], rest[MAX_PANES:]
        n = int(n or 2)
        if not text or not text.strip():
            yield rnd.refuse(battle, "Type a question first.")
            return
        if not all(models[:n]):
            yield rnd.refuse(battle, "Pick a model for every pane.")
            return
        if len(battle.sides) != n:  # a round drawn before the count changed
            battle = Battle(sides=[Side() for _ in range(n)])
        battle.voted = False  # a follow-up after a vote: the same conversations go on
        async for out in play(rnd, arena, battle, list(models[:n]), text, settings_from(*params), list(models[:n]),
                              "", prompt(n)):
            yield out

    def edit_fn(i: int):
        """An edited question in pane i: every pane goes back to that turn and is asked the new text
        (the conversation before the edit stays in Saved conversations)."""
        @refusing(rnd.refuse)
        async def fn(battle: Battle, system, temperature, top_p, max_tokens, seed, edit: gr.EditData):
            turn, text = edited(battle.sides, i, edit)
            for side in battle.sides:
                branch(side, min(turn, len(side.answers)))
            battle.voted = False
            models = [s.model for s in battle.sides]
            async for out in play(rnd, arena, battle, models, text, settings_from(system, temperature, top_p,
                                  max_tokens, seed), models, "", prompt(len(battle.sides))):
                yield out
        return fn

    labels = lambda b: [s.model for s in b.sides]  # noqa: E731
    ended = wire_round(rnd, new, send_fn, [rnd.state, rnd.count, *selects, rnd.box, *ctl.inputs],
                       regen_fn(rnd, arena, labels, lambda b: prompt(len(b.sides)), True),
                       continue_fn(rnd, arena, labels, lambda b: prompt(len(b.sides))), [rnd.state, *ctl.inputs])
    for i, bot in enumerate(rnd.bots):
        ended.append(bot.edit(edit_fn(i), [rnd.state, *ctl.inputs], rnd.outputs(), trigger_mode="once",
                              concurrency_limit=None).then(lambda: ON, None, rnd.send, queue=False))
    for event in ended:
        event.then(lambda b, kept: keep_side(b.sides, "named", kept), [rnd.state, store], [store, saved.pick],
                   queue=False)
    wire_pane_count(rnd)

    async def open_fn(battle: Battle, kept, conv_id):
        keep_count = [NO_CHANGE] * (1 + len(selects))
        conv = find(kept, conv_id)
        if conv is None or conv.tab != "named":
            return (*rnd.refuse(battle, "Pick a saved conversation first."), *keep_count)
        try:
            # the first pane's id is the conversation's (deploy/webui/saved.py keeps it under that id)
            sides = [await restore(arena.client, p, conv.id if i == 0 else uuid.uuid4().hex)
                     for i, p in enumerate(conv.panes)]
        except ModelUnavailable as e:
            return (*rnd.refuse(battle, f"Not opened: {e}"), *keep_count)
        opened = replace_round(battle, len(sides), None).replaced_by  # a running round ends here
        opened.sides = sides
        cut = any(s.cut and s.cut[-1] for s in sides)
        frame = rnd.frame(opened, NO_CHANGE, opened_status(conv.title), OFF, ON, ON,
                          ON if cut else OFF)
        models = [s.model for s in sides] + [NO_CHANGE] * (len(selects) - len(sides))
        return (*frame, gr.update(value=len(sides)), *models)
    saved.open.click(open_fn, [rnd.state, store, saved.pick], [*rnd.outputs(), rnd.count, *selects])
    wire_forget(saved, store, "named")
    gr.on([rnd.box.submit, rnd.send.click], lambda: gr.update(visible=False), None, rnd.undo, queue=False)
    for sel, bot, letter in zip(selects, rnd.bots, LETTERS):  # a pane is headed by its model's name, not a letter only
        sel.change(lambda m, letter=letter: gr.update(label=f"Model {letter}: {m}" if m else f"Model {letter}"),
                   sel, bot, queue=False, show_progress="hidden")
    wire_votes(arena, rnd, anony=False, share=None)
    wire_export(md, js, file, rnd.state, ctl, lambda b: (b.sides, [s.model or "Model" for s in b.sides], False),
                round_changes(rnd, new) + [rnd.count.change, rnd.undo.click, saved.open.click])
    return Pickers.of(pickers), rnd.count, ctl, saved


BATTLE_TITLES = ["Model A", "Model B"]


def _battle_tab(arena: Arena, max_new_tokens: int) -> Controls:
    gr.Markdown("Two models drawn at random from those registered now answer your question; their names "
                "are revealed after you vote. Voting ends the battle.", elem_classes="intro")
    rnd, new, _ = round_ui("anony", "输入问题 / ask", names=False)
    share = gr.Textbox(label="Share this result (copy it anywhere)", buttons=["copy"], visible=False,
                       interactive=False, lines=4, elem_id="anony_share")
    ctl = controls("anony", max_new_tokens)
    md, js, file = export_row("anony")
    prompt = "Which answer is better? Vote to see who they are."

    @refusing(rnd.refuse)
    async def send_fn(battle: Battle, text, *params):
        if not text or not text.strip():
            yield rnd.refuse(battle, "Type a question first.")
            return
        note = ""
        if battle.voted or battle.sides[0].model is None:
            try:
                models = await arena.client.list_models()
            except ModelUnavailable as e:
                yield rnd.refuse(battle, str(e))
                return
            if len(models) < 2:
                yield rnd.refuse(battle, "A battle needs two registered models.")
                return
            note = "**New battle**: two models drawn again. " if battle.voted else ""
            battle = Battle(titles=BATTLE_TITLES)
            for side, m in zip(battle.sides, random.sample(models, 2)):
                side.model = m
        async for out in play(rnd, arena, battle, [s.model for s in battle.sides], text, settings_from(*params),
                              BATTLE_TITLES, note, prompt):
            yield out

    wire_round(rnd, new, send_fn, [rnd.state, rnd.box, *ctl.inputs],
               regen_fn(rnd, arena, lambda b: BATTLE_TITLES, lambda b: prompt, False),
               continue_fn(rnd, arena, lambda b: BATTLE_TITLES, lambda b: prompt), [rnd.state, *ctl.inputs],
               BATTLE_TITLES)
    wire_votes(arena, rnd, anony=True, share=share)
    gr.on([rnd.box.submit, rnd.send.click], lambda b: gr.update(visible=False) if b.voted else NO_CHANGE, rnd.state, share)
    wire_export(md, js, file, rnd.state, ctl,
                lambda b: (b.sides, [f"Model A ({b.sides[0].model})", f"Model B ({b.sides[1].model})"] if b.voted
                           else BATTLE_TITLES, not b.voted), round_changes(rnd, new))
    return ctl


# ---- one pane: direct chat ---------------------------------------------------------------------
def _direct_tab(arena: Arena, max_new_tokens: int, store: gr.BrowserState) -> tuple[Pickers, Controls, SavedRow]:
    state = gr.State(Side())
    chosen = picker("Model", "direct_model")
    sel = chosen.select
    bot = pane("Chat", "direct_pane", editable=True)
    box, send, stop = input_row("direct", "输入问题 / ask")
    with gr.Row():
        regen = gr.Button("Regenerate", size="sm", interactive=False, elem_id="direct_regen")
        cont = gr.Button("Continue", size="sm", interactive=False, elem_id="direct_continue")
        clear = gr.Button("New chat", size="sm", elem_id="direct_new")
    status = gr.Markdown(elem_id="direct_status")
    ctl = controls("direct", max_new_tokens)
    md, js, file = export_row("direct")
    saved = saved_row("direct")
    outputs = [state, bot, box, status, regen, send, cont]

    async def stream(side: Side, settings: GenSettings):
        yield side, side.messages, "", "Answering… (**Stop** ends it)", OFF, OFF, OFF
        async for _ in arena.stream_sides([side], settings, [side.model]):
            if side.abandoned:
                break
            yield side, side.messages, NO_CHANGE, NO_CHANGE, NO_CHANGE, NO_CHANGE, NO_CHANGE
        if side.abandoned:  # its last update shows the new chat (see _abandoned)
            yield side.replaced_by, side.replaced_by.messages, NO_CHANGE, "New chat.", OFF, ON, OFF
        elif side.error:
            yield side, side.messages, NO_CHANGE, "The model failed: its answer says why and what to do.", OFF, ON, OFF
        elif side.cut and side.cut[-1]:
            yield side, side.messages, NO_CHANGE, CUT_STATUS, ON, ON, ON
        else:
            yield side, side.messages, NO_CHANGE, "", ON, ON, OFF

    def refuse(side: Side, message: str) -> tuple:
        return side, NO_CHANGE, NO_CHANGE, message, NO_CHANGE, ON, NO_CHANGE

    @refusing(refuse)
    async def send_fn(side: Side, model, text, *params):
        if not text or not text.strip():
            yield refuse(side, "Type a question first.")
            return
        if not model:
            yield refuse(side, "Pick a model.")
            return
        settings = settings_from(*params)
        if not await arena.begin_turn(side, model, text, model, settings.system_prompt):
            yield side, side.messages, "", "", OFF, ON, OFF
            return
        async for out in stream(side, settings):
            yield out

    @refusing(refuse)
    async def regen_fn(side: Side, *params):
        if not arena.retract(side):
            yield refuse(side, "Nothing to regenerate yet.")
            return
        async for out in stream(side, settings_from(*params)):
            yield out

    @refusing(refuse)
    async def continue_fn(side: Side, *params):
        if not arena.extend(side):
            yield refuse(side, "Nothing to continue: the last answer was not cut off at the most new tokens.")
            return
        async for out in stream(side, settings_from(*params)):
            yield out

    @refusing(refuse)
    async def edit_fn(side: Side, system, temperature, top_p, max_tokens, seed, edit: gr.EditData):
        turn, text = edited([side], 0, edit)
        branch(side, turn)  # the conversation before the edit stays in Saved conversations
        settings = settings_from(system, temperature, top_p, max_tokens, seed)
        if not await arena.begin_turn(side, side.model, text, side.model, settings.system_prompt):
            yield side, side.messages, "", "", OFF, ON, OFF
            return
        async for out in stream(side, settings):
            yield out

    for event in (gr.on([box.submit, send.click], send_fn, [state, sel, box, *ctl.inputs], outputs,
                        trigger_mode="once", concurrency_limit=None),
                  regen.click(regen_fn, [state, *ctl.inputs], outputs, trigger_mode="once", concurrency_limit=None),
                  cont.click(continue_fn, [state, *ctl.inputs], outputs, trigger_mode="once", concurrency_limit=None),
                  bot.edit(edit_fn, [state, *ctl.inputs], outputs, trigger_mode="once", concurrency_limit=None)):
        event.then(lambda: ON, None, send, queue=False).then(
            lambda side, kept: keep_side([side], "direct", kept), [state, store], [store, saved.pick], queue=False)

    def stop_fn(side: Side):
        side.stop = True
    stop.click(stop_fn, state, None, queue=False)

    def clear_fn(side: Side):
        side.stop, side.abandoned, side.replaced_by = True, True, Side()
        return side.replaced_by, [], NO_CHANGE, "New chat.", OFF, ON, OFF
    gr.on([clear.click, bot.clear], clear_fn, state, outputs)  # New chat, or the pane's own clear button

    async def open_fn(side: Side, kept, conv_id):
        conv = find(kept, conv_id)
        if conv is None or conv.tab != "direct":
            return *refuse(side, "Pick a saved conversation first."), NO_CHANGE
        try:
            new = await restore(arena.client, conv.panes[0], conv.id)
        except ModelUnavailable as e:
            return *refuse(side, f"Not opened: {e}"), NO_CHANGE
        side.stop, side.abandoned, side.replaced_by = True, True, new  # a running answer ends here
        cut = bool(new.cut and new.cut[-1])
        return (new, new.messages, NO_CHANGE, opened_status(conv.title), ON, ON, ON if cut else OFF, new.model)
    saved.open.click(open_fn, [state, store, saved.pick], [*outputs, sel])
    wire_forget(saved, store, "direct")
    wire_export(md, js, file, state, ctl, lambda s: ([s], [s.model or "Model"], False),
                [box.submit, send.click, regen.click, cont.click, clear.click, bot.clear, bot.edit, saved.open.click])
    return Pickers.of([chosen]), ctl, saved


def edited(sides: list[Side], i: int, edit: gr.EditData) -> tuple[int, str]:
    """(the turn, the new text) of a question edited in pane i of `sides`; a Refusal when it is not
    the user's own question in a conversation every pane has a model for, or the text is empty."""
    turn, value = sides[i].turn_at(edit.index), edit.value
    if turn is None or not all(s.model for s in sides):
        raise Refusal("Only your own questions can be edited.")
    blocks = [value] if isinstance(value, (str, dict)) else value  # a string, or the message's text blocks
    text = "".join(b if isinstance(b, str) else b.get("text", "") if isinstance(b, dict) else str(b) for b in blocks)
    if not text.strip():
        raise Refusal("The edited question is empty: type it again.")
    return turn, text


def opened_status(title: str) -> str:
    return f"Opened “{title}”. Ask a follow-up to go on."


def branch(side: Side, turn: int) -> None:
    """Keep the first `turn` turns for an edited question, as a new conversation: the one before the
    edit was kept under the old id."""
    side.keep_turns(turn)
    side.conv_id = uuid.uuid4().hex


def keep_side(sides: list[Side], tab, kept) -> tuple:
    """After an answer: the browser's copy of the conversation, and the list that offers it."""
    kept = keep(kept, snapshot(sides, tab))
    return kept, gr.update(choices=choices(kept, tab))


def wire_forget(saved: SavedRow, store: gr.BrowserState, tab: str) -> None:
    def forget_fn(kept, conv_id):
        kept = forget(kept, conv_id)
        return kept, gr.update(choices=choices(kept, tab), value=None)
    saved.delete.click(forget_fn, [store, saved.pick], [store, saved.pick], queue=False)


# ---- settings kept and shared -----------------------------------------------------------------------
def wire_shared_settings(demo: gr.Blocks, tabs: list[Controls], kept: gr.BrowserState) -> None:
    """The chat tabs' settings are one set: a change in one tab shows in the others, and the browser
    keeps them for the next visit. (The Puzzles tab keeps its own: the eval asks at temperature 0.)
    Changes are read from `.input` (the user's own), so the updates made here start nothing again."""
    def restore_fn(store):
        have = settings_of(store)
        return [gr.update(value=have[key]) if key in have and have[key] is not None else NO_CHANGE
                for _ in tabs for key in SETTINGS_KEYS]
    demo.load(restore_fn, kept, [c for ctl in tabs for c in ctl.inputs])

    for t, ctl in enumerate(tabs):
        for key, widget in zip(SETTINGS_KEYS, ctl.inputs):
            others = [o.inputs[SETTINGS_KEYS.index(key)] for u, o in enumerate(tabs) if u != t]

            def changed(value, store, key=key, n=len(others)):
                return ({**settings_of(store), key: value}, *[gr.update(value=value)] * n)
            widget.input(changed, [widget, kept], [kept, *others], queue=False, show_progress="hidden")


# ---- leaderboard --------------------------------------------------------------------------------
def _leaderboard_tab(votes: VoteLog, demo: gr.Blocks, tab: gr.Tab) -> None:
    kind = gr.Radio([("All questions", "all"), ("Chinese", "chinese"), ("Code", "code"), ("Other", "other")],
                    value="all", label="Questions", elem_id="leaderboard_category")
    note = gr.Markdown(elem_id="leaderboard_note")
    ratings = gr.Dataframe(headers=["model", "rating", "95% interval", "battles", "wins"],
                           interactive=False, elem_id="leaderboard_table", label="Ratings")
    pairs = gr.Dataframe(headers=[PAIRS_CORNER], interactive=False, elem_id="leaderboard_pairs",
                         label="Pairwise: share of decided battles (ties left out) the row model won "
                               "against the column model, with the counts")
    refresh = gr.Button("Refresh", elem_id="leaderboard_refresh")

    def table(lb) -> tuple:
        named = (f" {lb.n_named} side-by-side vote(s), cast with the names shown, are kept in the log but "
                 f"not ranked (as on Chatbot Arena, to keep brand bias out).") if lb.n_named else ""
        dropped = (f" {lb.n_discarded} vote(s) left out: a model said who it was in its answer."
                   if lb.n_discarded else "")
        if not lb.ratings:
            what = "" if lb.category == "all" else " on this kind of question"
            return (f"No battle votes yet{what}: vote in *Battle (anonymous)*." + named + dropped, [],
                    gr.update(value=[], headers=[PAIRS_CORNER]))

        def interval(r):
            if r["rating"] is None:
                return "–"
            return "computing…" if r["ci_low"] is None else f"{r['ci_low']} – {r['ci_high']}"
        rows = [[r["model"], r["rating"] if r["rating"] is not None else f"not enough votes ({r['battles']} of "
                 f"{MIN_BATTLES} battles)", interval(r), r["battles"], r["wins"]] for r in lb.ratings]
        head = (f"{lb.n_votes} anonymous battle vote(s). " + (
            "The rating is a Bradley–Terry fit (FastChat's, as on Chatbot Arena): a model 100 points above another "
            "wins about 64 % of their battles; ties count half. The interval is where the rating lies in 95 of "
            "100 resamplings of the votes: when two intervals overlap, the votes do not yet tell the two apart."
            if lb.rated else f"Not enough votes yet: a model gets a rating after {MIN_BATTLES} battles."))
        text = (head + named + dropped
                + ("" if lb.intervals or not lb.rated else " The intervals are being computed (a few seconds)."))
        return text, rows, gr.update(value=lb.pairwise[1:], headers=lb.pairwise[0])

    async def at_once(which: str):
        """The votes at once: ratings, counts, pairwise (intervals marked as being computed)."""
        return table(await asyncio.to_thread(votes.leaderboard, False, _category(which)))

    async def with_intervals(which: str):
        """Then the bootstrap intervals, which take seconds. A second event rather than a second
        yield: a Dataframe redraws for a whole value, not for a generator's later diffs."""
        return table(await asyncio.to_thread(votes.leaderboard, True, _category(which)))

    shown = [note, ratings, pairs]
    slow = [event(at_once, kind, shown, show_progress="hidden").then(with_intervals, kind, shown, show_progress="hidden")
            for event in (refresh.click, tab.select, demo.load)]
    # another category picked: a board still being computed for the last one must not land after it
    kind.change(at_once, kind, shown, show_progress="hidden", trigger_mode="always_last", cancels=slow).then(
        with_intervals, kind, shown, show_progress="hidden")


def _category(which) -> str:
    """The Radio's value; anything else (a hand-made request) is every question."""
    return which if which in CATEGORIES else "all"


# ---- the page -----------------------------------------------------------------------------------
def _choice(models: list[str], current, index: int, preferred: list[str] | None = None):
    """Keep the user's pick while its model is registered; else the index-th of `preferred`
    (the models in the order defaults are picked from)."""
    order = preferred or models
    value = current if current in models else (order[min(index, len(order) - 1)] if order else None)
    return gr.update(choices=models, value=value)


def page_style() -> dict:
    """The page's theme (local fonts only), CSS and head scripts: Gradio 6 takes them where the page
    is mounted (deploy/webui/server.py), not from gr.Blocks."""
    theme = gr.themes.Default(font=THEME_FONTS, font_mono=["Noto Sans Mono CJK SC", "DejaVu Sans Mono", "monospace"])
    # Text at 4.5:1 at least (WCAG AA): white on a darker orange (Send) and red (Stop), and darker grey
    # for placeholders and the unselected tabs' names, where the default theme gave 2.1-3.9:1.
    theme = theme.set(
        button_primary_background_fill="#c2410c", button_primary_background_fill_hover="#9a3412",
        button_primary_border_color="#c2410c", button_primary_text_color="#ffffff",
        button_primary_text_color_hover="#ffffff",
        button_cancel_background_fill="#b91c1c", button_cancel_background_fill_hover="#991b1b",
        button_cancel_border_color="#b91c1c", button_cancel_text_color="#ffffff", button_cancel_text_color_hover="#ffffff",
        body_text_color_subdued="#4b5563", input_placeholder_color="#6b7280")
    return {"theme": theme, "css": CSS, "head": HEAD}


def create_webui(client: AsyncFleetClient, votes: VoteLog, refresh_seconds: float = 15.0,
                 max_new_tokens: int = 512, puzzles: PuzzleBook | None = None) -> gr.Blocks:
    arena = Arena(client, votes)
    votes.warm()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        # kept in this browser's local storage (deploy/webui/saved.py): conversations, and the settings
        conversations = gr.BrowserState([], storage_key="fleet_conversations", secret=STORAGE_SECRET)
        kept_settings = gr.BrowserState({}, storage_key="fleet_settings", secret=STORAGE_SECRET)
        gr.Markdown(f"# {TITLE}")
        gr.Markdown("Ask a question in the box below the panes: every pane's model answers at once. Then vote for "
                    "the better answer, or ask a follow-up.", elem_classes="intro")
        with gr.Tabs(selected="named", elem_id="tabs", overflow_behavior="wrap"):  # every tab in view on a phone
            with gr.Tab("Side by side", id="named"):
                named, count, named_ctl, named_saved = _side_by_side_tab(arena, max_new_tokens, conversations)
            with gr.Tab("Battle (anonymous)", id="anony"):
                battle_ctl = _battle_tab(arena, max_new_tokens)
            with gr.Tab("Direct chat", id="direct"):
                direct, direct_ctl, direct_saved = _direct_tab(arena, max_new_tokens, conversations)
            with gr.Tab("Puzzles", id="puzzles"):
                puzzle_pickers = puzzles_tab(arena, max_new_tokens, puzzles)
            with gr.Tab("Leaderboard", id="leaderboard") as lb_tab:
                _leaderboard_tab(votes, demo, lb_tab)
        with gr.Accordion("Models registered now", open=False, elem_id="models_accordion"):
            models_df = gr.Dataframe(headers=["model", "backend", "quantisation", "cores", "memory budget", "context",
                                              "template", "source"],
                                     interactive=False, elem_classes="model-table", label="Models")
        known = gr.State([])
        selects = [*named.selects, *direct.selects, *puzzle_pickers.selects]
        infos = [*named.infos, *direct.infos, *puzzle_pickers.infos]
        order = [i for p in (named, direct, puzzle_pickers) for i in range(len(p.selects))]  # A first, B second

        async def refresh_models(seen: list, width, *picked):
            """Registered-later models appear, gone ones disappear; while the list is unchanged the
            dropdowns are left alone, so an open one is never redrawn under the user's pointer.
            `width`: the page's, in CSS pixels (the page's own script reads it when it loads)."""
            try:
                models = await client.list_models()
            except ModelUnavailable:
                models = []
            if models == seen:
                return (seen, width, NO_CHANGE, NO_CHANGE, *[NO_CHANGE] * len(selects))
            table = await arena.models_table(models)
            quick = await arena.quick_first(models)
            # the first time models are listed: a pane for each of them, when they fit (2 to 4); two on
            # a phone, where panes stack and each more pushes the others a screen further down
            most = 2 if width and float(width) <= PHONE_WIDTH else MAX_PANES
            panes = gr.update(value=min(most, max(2, len(models)))) if not seen and models else NO_CHANGE
            return (models, width, table, panes, *[_choice(models, p, i, quick) for p, i in zip(picked, order)])

        async def refresh_infos(*picked):
            """The line under each picker, with whether its model is in memory now, and its pin
            button's text (a pin from the CLI or the API shows too): the lines, then the texts."""
            states = [await arena.picker_state(p) for p in picked]
            return [line for line, _ in states] + [pin for _, pin in states]

        width = gr.Number(0, visible="hidden", elem_id="page_width")
        timer = gr.Timer(refresh_seconds)
        listed = [known, width, models_df, count, *selects]
        timer.tick(refresh_models, [known, width, *selects], listed)
        buttons = [*named.buttons, *direct.buttons, *puzzle_pickers.buttons]
        timer.tick(refresh_infos, selects, infos + [pin for _, _, pin in buttons])
        demo.load(refresh_models, [known, width, *selects], listed,
                  js="(seen, width, ...picked) => [seen, window.innerWidth, ...picked]")
        for sel, info, (load, unload, pin) in zip(selects, infos, buttons):
            sel.change(arena.picker_state, sel, [info, pin])
            load.click(arena.load, sel, info)
            unload.click(arena.unload, sel, info)
            pin.click(arena.toggle_pin, sel, [info, pin])
        wire_shared_settings(demo, [named_ctl, battle_ctl, direct_ctl], kept_settings)
        demo.load(lambda kept: [gr.update(choices=choices(kept, tab)) for tab in ("named", "direct")],
                  conversations, [named_saved.pick, direct_saved.pick])
    for fn in demo.fns.values():  # the page's own events: no API for other clients (the fleet has one)
        fn.api_visibility = "private"
    return demo
