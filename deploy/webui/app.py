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

import random
from dataclasses import dataclass

import gradio as gr

from deploy.webui.arena import Arena, Battle, GenSettings, Side
from deploy.webui.export import as_json, as_markdown, share_text, write_file
from deploy.webui.puzzles_tab import PuzzleBook, puzzles_tab
from deploy.webui.votes import PRELIMINARY_BATTLES, VOTES, VoteLog
from deploy.webui.widgets import (Controls, Pickers, controls, export_row, input_row, pane, picker, settings_dict,
                                  settings_from)
from deploy.wire.client import AsyncFleetClient, ModelUnavailable

TITLE = "fastchat-fleet · model arena"
# Each pane follows its newest text, unless its reader has scrolled up. Gradio's own autoscroll
# decides before an update is laid out, and misses what grows after it (the speed footer, a
# table rendered late): this decides on every change of a pane's content, once it is laid out.
FOLLOW_PANES = """<script>
(() => {
  const NEAR = 80, follows = new WeakMap();
  const gap = (w) => w.scrollHeight - w.clientHeight - w.scrollTop;
  document.addEventListener("scroll", (e) => {
    const w = e.target;
    if (w.classList && w.classList.contains("bubble-wrap")) follows.set(w, gap(w) <= NEAR);
  }, true);
  const settle = (w) => requestAnimationFrame(() => { if (follows.get(w) !== false) w.scrollTop = w.scrollHeight; });
  new MutationObserver((changes) => {
    const panes = new Set();
    for (const c of changes) {
      const n = c.target.nodeType === 1 ? c.target : c.target.parentElement;
      if (!n) continue;
      const w = n.closest(".pane .bubble-wrap");
      if (w) panes.add(w); else n.querySelectorAll(".pane .bubble-wrap").forEach((x) => panes.add(x));
    }
    panes.forEach(settle);
  }).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
})();
</script>"""
CSS = """
footer {display: none !important}
.pane .message {font-size: 15px}
.model-table table {font-size: 13px}
.pane {height: min(46vh, 400px) !important}
.model-info {min-height: 1.2em; margin-top: -6px}
.model-info p {margin: 0; color: #555}
@media (max-width: 700px) {
  .pane {height: 36vh !important}
  .pane .message {font-size: 13px !important; padding: 6px !important}
  .model-info {display: none}
  .tab-nav {flex-wrap: nowrap !important; overflow-x: auto}
  .tab-nav button {flex: 0 0 auto}
  .table-wrap, .model-table {overflow-x: auto}
  h1 {font-size: 1.2em !important; margin: 0 !important}
  .intro {display: none}
}
"""
THEME_FONTS = ["Noto Sans CJK SC", "Noto Sans", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", "sans-serif"]
NO_CHANGE = gr.update()
OFF, ON = gr.update(interactive=False), gr.update(interactive=True)


def _wire_export(md: gr.Button, js: gr.Button, file: gr.File, state: gr.State, ctl: Controls, sides_of) -> None:
    """sides_of(state) -> (sides, labels, vote or None)."""
    def make(fmt):
        def fn(st, *params):
            sides, labels, vote = sides_of(st)
            if not any(s.conv is not None for s in sides):
                return gr.update(visible=False)
            render = as_markdown if fmt == "md" else as_json
            text = render(sides, labels, settings_dict(*params), vote)
            return gr.update(value=write_file(text, "conversation", ".md" if fmt == "md" else ".json"), visible=True)
        return fn
    md.click(make("md"), [state, *ctl.inputs], file)
    js.click(make("json"), [state, *ctl.inputs], file)


def _vote_buttons(prefix: str) -> list[gr.Button]:
    return [gr.Button(label, interactive=False, size="sm", elem_id=f"{prefix}_{kind}") for kind, (label, _) in VOTES.items()]


# ---- two panes: side by side, battle -----------------------------------------------------------
@dataclass
class Round:
    state: gr.State
    bots: list[gr.Chatbot]
    box: gr.Textbox
    status: gr.Markdown
    votes: list[gr.Button]
    regen: gr.Button

    def outputs(self) -> list:
        return [self.state, *self.bots, self.box, self.status, *self.votes, self.regen]


def _frame(battle: Battle, box=NO_CHANGE, status=NO_CHANGE, votes=None, regen=NO_CHANGE) -> tuple:
    return (battle, *[s.history for s in battle.sides], box, status, *(votes or [NO_CHANGE] * len(VOTES)), regen)


def _refuse(battle: Battle, message: str) -> tuple:
    return (battle, *[NO_CHANGE] * len(battle.sides), NO_CHANGE, message, *[NO_CHANGE] * len(VOTES), NO_CHANGE)


NEW_ROUND = "New round: ask a question."


def _abandoned(battle: Battle) -> tuple:
    """The last update of a stream whose round was replaced: the new round, as New round drew it.
    Gradio sends each update of a stream one step late (when the next is ready, or the stream
    ends), so a stream that just stopped would otherwise repaint its old text over the cleared panes."""
    return _frame(battle.replaced_by, NO_CHANGE, NEW_ROUND, [OFF] * len(VOTES), OFF)


async def _stream(arena: Arena, battle: Battle, settings: GenSettings, labels: list[str], note: str, vote_prompt: str):
    """Stream every side of the round into its pane; ends with votes open when both answered."""
    yield _frame(battle, "", note + "Answering… (**Stop** ends it; what was said so far stays)", [OFF] * len(VOTES), OFF)
    async for _ in arena.stream_sides(battle.sides, settings, labels):
        if battle.abandoned:
            yield _abandoned(battle)
            return
        yield _frame(battle)
    if battle.abandoned:
        yield _abandoned(battle)
        return
    ok = all(s.conv is not None and not s.error for s in battle.sides)
    yield _frame(battle, NO_CHANGE, vote_prompt if ok else "One model failed; votes need two answers.",
                 [ON if ok else OFF] * len(VOTES), ON)


async def _play(arena: Arena, battle: Battle, models: list[str], text: str, settings: GenSettings,
                labels: list[str], note: str, vote_prompt: str):
    battle.question = text
    for side, model, label in zip(battle.sides, models, labels):
        await arena.begin_turn(side, model, text, label, settings.system_prompt)
    async for out in _stream(arena, battle, settings, labels, note, vote_prompt):
        yield out


def _round_ui(prefix: str, placeholder: str, names: bool) -> tuple[Round, gr.Button, gr.Button, list]:
    state = gr.State(Battle)
    pickers = []
    if names:
        with gr.Row():
            for side in ("a", "b"):
                with gr.Column(min_width=120):
                    pickers.append(picker(f"Model {side.upper()}", f"{prefix}_model_{side}"))
    bots, side_stops = [], []
    with gr.Row():
        for side in ("a", "b"):
            with gr.Column(min_width=120):  # side by side on a phone too: comparing is the point
                pane_id = f"pane_{side}" if prefix == "named" else f"{prefix}_pane_{side}"
                bots.append(pane(f"Model {side.upper()}", pane_id))
                side_stops.append(gr.Button(f"Stop {side.upper()}", size="sm", elem_id=f"{prefix}_stop_{side}"))
    box, send, stop = input_row(prefix, placeholder)
    with gr.Row():
        votes = _vote_buttons(prefix)
        regen = gr.Button("Regenerate", size="sm", interactive=False, elem_id=f"{prefix}_regen")
        new = gr.Button("New round" if names else "New battle", size="sm", elem_id=f"{prefix}_new")
    status = gr.Markdown(elem_id=f"{prefix}_status")
    rnd = Round(state, bots, box, status, votes, regen)
    for i, b in enumerate(side_stops):
        b.click(_stop_sides([i]), state, None, queue=False)
    stop.click(_stop_sides([0, 1]), state, None, queue=False)
    return rnd, send, new, pickers


def _stop_sides(indexes: list[int]):
    def fn(battle: Battle):
        for i in indexes:
            battle.sides[i].stop = True
    return fn


def _wire_round(rnd: Round, send: gr.Button, new: gr.Button, send_fn, send_inputs: list,
                regen_fn, regen_inputs: list) -> None:
    gr.on([rnd.box.submit, send.click], send_fn, send_inputs, rnd.outputs(), trigger_mode="once",
          concurrency_limit=None)
    rnd.regen.click(regen_fn, regen_inputs, rnd.outputs(), trigger_mode="once", concurrency_limit=None)

    def new_round(battle: Battle):
        battle.abandoned = True  # the running stream ends at its next look, writing nothing more
        for s in battle.sides:
            s.stop = True
        battle.replaced_by = Battle()
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
    outs = [rnd.state, rnd.status, *rnd.votes] + ([share] if share else [])

    def handler(kind: str):
        def fn(battle: Battle, request: gr.Request):
            if battle.voted or any(s.conv is None or s.error for s in battle.sides):
                return battle, "Nothing to vote on.", *[OFF] * len(VOTES), *([NO_CHANGE] if share else [])
            arena.vote(battle, kind, anony, request.client.host if request and request.client else "")
            if anony:
                a, b = battle.sides
                msg = (f"Vote recorded: {VOTES[kind][0]}. Model A was **{a.model}**, Model B was **{b.model}**. "
                       f"This battle is over: your next question starts a new one with two models drawn again.")
                return battle, msg, *[OFF] * len(VOTES), gr.update(value=share_text(battle, kind), visible=True)
            return (battle, f"Vote recorded: {VOTES[kind][0]}. Ask a follow-up: both conversations go on "
                            f"(or **New round** to start over).", *[OFF] * len(VOTES))
        return fn

    for btn, kind in zip(rnd.votes, VOTES):
        btn.click(handler(kind), [rnd.state], outs)


def _side_by_side_tab(arena: Arena, max_new_tokens: int) -> Pickers:
    rnd, send, new, pickers = _round_ui("named", "输入问题，两个模型同时回答 / ask both models", names=True)
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

    _wire_round(rnd, send, new, send_fn, [rnd.state, sel_a, sel_b, rnd.box, *ctl.inputs],
                _regen_fn(arena, lambda b: [s.model for s in b.sides], prompt, True), [rnd.state, *ctl.inputs])
    _wire_votes(arena, rnd, anony=False, share=None)
    _wire_export(md, js, file, rnd.state, ctl, lambda b: (b.sides, [s.model or "Model" for s in b.sides], None))
    return Pickers([sel_a, sel_b], [info_a, info_b])


def _battle_tab(arena: Arena, max_new_tokens: int) -> None:
    gr.Markdown("Two models drawn at random from those registered now answer your question; their names "
                "are revealed after you vote. Voting ends the battle.", elem_classes="intro")
    rnd, send, new, _ = _round_ui("anony", "输入问题 / ask", names=False)
    share = gr.Textbox(label="Share this result (copy it anywhere)", show_copy_button=True, visible=False,
                       interactive=False, lines=4, elem_id="anony_share")
    ctl = controls("anony", max_new_tokens)
    md, js, file = export_row("anony")
    labels = ["Model A", "Model B"]
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
            battle = Battle()
            for side, m in zip(battle.sides, random.sample(models, 2)):
                side.model = m
        async for out in _play(arena, battle, [s.model for s in battle.sides], text, settings_from(*params),
                               labels, note, prompt):
            yield out

    _wire_round(rnd, send, new, send_fn, [rnd.state, rnd.box, *ctl.inputs],
                _regen_fn(arena, lambda b: labels, prompt, False), [rnd.state, *ctl.inputs])
    _wire_votes(arena, rnd, anony=True, share=share)
    gr.on([rnd.box.submit, send.click], lambda b: gr.update(visible=False) if b.voted else NO_CHANGE, rnd.state, share)
    _wire_export(md, js, file, rnd.state, ctl,
                 lambda b: (b.sides, [f"Model A ({b.sides[0].model})", f"Model B ({b.sides[1].model})"] if b.voted
                            else labels, None))


# ---- one pane: direct chat ---------------------------------------------------------------------
def _direct_tab(arena: Arena, max_new_tokens: int) -> Pickers:
    state = gr.State(Side)
    sel, info = picker("Model", "direct_model")
    bot = pane("Chat", "direct_pane")
    box, send, stop = input_row("direct", "输入问题 / ask")
    with gr.Row():
        regen = gr.Button("Regenerate", size="sm", elem_id="direct_regen")
        clear = gr.Button("New chat", size="sm", elem_id="direct_new")
    status = gr.Markdown(elem_id="direct_status")
    ctl = controls("direct", max_new_tokens)
    md, js, file = export_row("direct")
    outputs = [state, bot, box, status]

    async def stream(side: Side, settings: GenSettings):
        yield side, side.history, "", "Answering… (**Stop** ends it)"
        async for _ in arena.stream_sides([side], settings, [side.model]):
            if side.abandoned:
                break
            yield side, side.history, NO_CHANGE, NO_CHANGE
        if side.abandoned:  # its last update shows the new chat (see _abandoned)
            yield side.replaced_by, [], NO_CHANGE, "New chat."
        else:
            yield side, side.history, NO_CHANGE, ""

    async def send_fn(side: Side, model, text, *params):
        if not text or not text.strip():
            yield side, NO_CHANGE, NO_CHANGE, "Type a question first."
            return
        if not model:
            yield side, NO_CHANGE, NO_CHANGE, "Pick a model."
            return
        settings = settings_from(*params)
        if not await arena.begin_turn(side, model, text, model, settings.system_prompt):
            yield side, side.history, "", ""
            return
        async for out in stream(side, settings):
            yield out

    async def regen_fn(side: Side, *params):
        if not arena.retract(side):
            yield side, NO_CHANGE, NO_CHANGE, "Nothing to regenerate yet."
            return
        async for out in stream(side, settings_from(*params)):
            yield out

    gr.on([box.submit, send.click], send_fn, [state, sel, box, *ctl.inputs], outputs, trigger_mode="once",
          concurrency_limit=None)
    regen.click(regen_fn, [state, *ctl.inputs], outputs, trigger_mode="once", concurrency_limit=None)

    def stop_fn(side: Side):
        side.stop = True
    stop.click(stop_fn, state, None, queue=False)

    def clear_fn(side: Side):
        side.stop, side.abandoned, side.replaced_by = True, True, Side()
        return side.replaced_by, [], NO_CHANGE, "New chat."
    clear.click(clear_fn, state, outputs)
    _wire_export(md, js, file, state, ctl, lambda s: ([s], [s.model or "Model"], None))
    return Pickers([sel], [info])


# ---- leaderboard --------------------------------------------------------------------------------
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
    theme = gr.themes.Default(font=THEME_FONTS, font_mono=["Noto Sans Mono CJK SC", "DejaVu Sans Mono", "monospace"])
    with gr.Blocks(title=TITLE, theme=theme, css=CSS, head=FOLLOW_PANES, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown("Chat with the models this machine serves, two at a time, and vote for the better answer. "
                    "Each model runs in its own FastChat worker, pinned to its own CPU cores and memory budget.",
                    elem_classes="intro")
        with gr.Tabs():
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
