"""A round: one question asked of several panes at once (2 to 4 in side by side, 2 in a battle),
with the widgets every such tab shares, the frames its stream sends to them, and their wiring:
Stop per pane and for all, Regenerate, New round, votes, export.

Per-user state is the `Battle` in the tab's gr.State; Stop, New round and a change of the number
of panes set flags on it, which the running stream reads (see deploy/webui/app.py's docstring)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from deploy.webui.arena import CUT_STATUS, Arena, Battle, GenSettings, Side
from deploy.webui.export import as_json, as_markdown, share_text, write_file
from deploy.webui.votes import VOTES
from deploy.webui.widgets import (NO_CHANGE, OFF, ON, Controls, input_row, pane, picker, refusing, settings_dict,
                                  settings_from)

LETTERS = "ABCD"
MAX_PANES = len(LETTERS)
NEW_ROUND = "New round: ask a question."
PAIR_VOTES = ("leftvote", "rightvote")  # shown with two panes; with more, "best" buttons instead
BEST = [f"best_{c.lower()}" for c in LETTERS]


@dataclass
class Round:
    state: gr.State
    bots: list[gr.Chatbot]
    box: gr.Textbox
    status: gr.Markdown
    votes: list[gr.Button]  # FastChat's four (A better, B better, tie, both bad), then "best" per pane
    regen: gr.Button
    send: gr.Button
    cont: gr.Button  # Continue: the answers cut off at the most new tokens go on
    pane_columns: list[gr.Column]  # a pane with its picker and its Stop
    count: gr.Radio | None  # how many panes, where there can be more than two
    undo: gr.Button | None  # brings back the round a change of that number replaced

    @property
    def kinds(self) -> list[str]:
        """The vote each button casts, in the buttons' order."""
        return (list(VOTES) + BEST)[:len(self.votes)]

    def outputs(self) -> list:
        return [self.state, *self.bots, self.box, self.status, *self.votes, self.regen, self.send, self.cont]

    def frame(self, battle: Battle, box=NO_CHANGE, status=NO_CHANGE, votes=NO_CHANGE, regen=NO_CHANGE,
              send=NO_CHANGE, cont=NO_CHANGE) -> tuple:
        """Every pane of the round (an unused one emptied), then the controls; `votes` is one
        update for every vote button, or a list of one per button."""
        panes = [shown if battle.titles is None else gr.update(value=shown, label=t)
                 for shown, t in zip(battle.panes(), battle.titles or [None] * len(battle.sides))]
        panes += [[]] * (len(self.bots) - len(panes))
        votes = votes if isinstance(votes, list) else [votes] * len(self.votes)
        return (battle, *panes, box, status, *votes, regen, send, cont)

    def refuse(self, battle: Battle, message: str) -> tuple:
        return (battle, *[NO_CHANGE] * len(self.bots), NO_CHANGE, message, *[NO_CHANGE] * len(self.votes), NO_CHANGE, ON,
                NO_CHANGE)

    def abandoned(self, battle: Battle) -> tuple:
        """The last update of a stream whose round was replaced: the new round, as New round drew
        it. Gradio sends each update of a stream one step late (when the next is ready, or the
        stream ends), so a stream that just stopped would otherwise repaint its old text over the
        cleared panes."""
        return self.frame(battle.replaced_by, NO_CHANGE, NEW_ROUND, OFF, OFF, ON, OFF)


def outcome(sides: list[Side], vote_prompt: str) -> tuple[str, bool]:
    """(status, whether votes and Regenerate make sense) once every pane has finished."""
    failed = [s for s in sides if s.conv is None or s.error]
    if not failed:
        return vote_prompt, True
    if len(failed) == len(sides):
        every = "Both models" if len(sides) == 2 else f"All {len(sides)} models"
        return (f"{every} failed: their panes say why and what to do. Votes and Regenerate need answers; "
                f"ask again (or start over)."), False
    some = "One model" if len(failed) == 1 else f"{len(failed)} models"
    return f"{some} failed (its pane says why); votes need every answer.", False


async def stream(rnd: Round, arena: Arena, battle: Battle, settings: GenSettings, labels: list[str], note: str,
                 vote_prompt: str):
    """Stream every side of the round into its pane; ends with votes open when all answered."""
    yield rnd.frame(battle, "", note + "Answering… (**Stop** ends it; what was said so far stays)", OFF, OFF, OFF, OFF)
    async for _ in arena.stream_sides(battle.sides, settings, labels):
        if battle.abandoned:
            yield rnd.abandoned(battle)
            return
        yield rnd.frame(battle)
    if battle.abandoned:
        yield rnd.abandoned(battle)
        return
    text, ok = outcome(battle.sides, vote_prompt)
    cut = [s for s in battle.sides if s.cut and s.cut[-1] and not s.error]
    if cut:
        text += " " + CUT_STATUS
    yield rnd.frame(battle, NO_CHANGE, text, ON if ok else OFF, ON if ok else OFF, ON, ON if cut else OFF)


async def play(rnd: Round, arena: Arena, battle: Battle, models: list[str], text: str, settings: GenSettings,
               labels: list[str], note: str, vote_prompt: str):
    battle.question = text
    for side, model, label in zip(battle.sides, models, labels):
        await arena.begin_turn(side, model, text, label, settings.system_prompt)
    async for out in stream(rnd, arena, battle, settings, labels, note, vote_prompt):
        yield out


def round_ui(prefix: str, placeholder: str, names: bool, panes: int = 2) -> tuple[Round, gr.Button, list]:
    """`panes` columns, each its picker (when `names`) above its pane and its Stop; those beyond the
    round's count are hidden until the count grows. Side by side on a wide screen, stacked on a phone
    (CSS), where each pane stays under its own picker, so the first answer is on the first screen."""
    state = gr.State(Battle())
    pickers, bots, stops, pane_columns = [], [], [], []
    with gr.Row(elem_classes="panes"):
        for i in range(panes):
            c = LETTERS[i].lower()
            with gr.Column(min_width=120, visible=i < 2) as col:
                if names:
                    pickers.append(picker(f"Model {LETTERS[i]}", f"{prefix}_model_{c}"))
                bots.append(pane(f"Model {LETTERS[i]}", f"pane_{c}" if prefix == "named" else f"{prefix}_pane_{c}",
                                 editable=names))
                stops.append(gr.Button(f"Stop {LETTERS[i]}", size="sm", elem_id=f"{prefix}_stop_{c}"))
            pane_columns.append(col)
    box, send, stop = input_row(prefix, placeholder)
    with gr.Row(elem_classes="vote-row"):
        votes = [gr.Button(vote_label(kind, 2), interactive=False, visible=_shown(kind, 2), size="sm",
                           elem_id=f"{prefix}_{kind}") for kind in (list(VOTES) + BEST[:panes] if panes > 2 else VOTES)]
        regen = gr.Button("Regenerate", size="sm", interactive=False, elem_id=f"{prefix}_regen")
        cont = gr.Button("Continue", size="sm", interactive=False, elem_id=f"{prefix}_continue")
        new = gr.Button("New round" if names else "New battle", size="sm", elem_id=f"{prefix}_new")
        count = gr.Radio(list(range(2, panes + 1)), value=2, label="Panes", show_label=True, min_width=160,
                         elem_id=f"{prefix}_count", elem_classes="pane-count") if panes > 2 else None
        undo = gr.Button("Undo", size="sm", visible=False, elem_id=f"{prefix}_undo") if panes > 2 else None
    status = gr.Markdown(elem_id=f"{prefix}_status")
    rnd = Round(state, bots, box, status, votes, regen, send, cont, pane_columns, count, undo)
    for i, b in enumerate(stops):
        b.click(stop_sides(i), state, None, queue=False)
    stop.click(stop_sides(None), state, None, queue=False)
    return rnd, new, pickers


def stop_sides(index: int | None):
    """Stop one pane (its index) or all (None): what each said so far stays."""
    def fn(battle: Battle):
        for i, s in enumerate(battle.sides):
            if index is None or i == index:
                s.stop = True
    return fn


def replace_round(battle: Battle, panes: int, titles: list[str] | None) -> Battle:
    """New round: the running stream ends at its next look, writing nothing more."""
    battle.abandoned = True
    for s in battle.sides:
        s.stop = True
    battle.replaced_by = Battle(sides=[Side() for _ in range(panes)], titles=titles)
    return battle


def wire_round(rnd: Round, new: gr.Button, send_fn, send_inputs: list, regen_fn, continue_fn, regen_inputs: list,
               titles: list[str] | None = None) -> list:
    """`titles`: the pane headings a new round starts with (a battle's "Model A", "Model B").
    Returns the events after which the round's answers have ended."""
    ended = []
    for event in (gr.on([rnd.box.submit, rnd.send.click], send_fn, send_inputs, rnd.outputs(), trigger_mode="once",
                        concurrency_limit=None),
                  rnd.regen.click(regen_fn, regen_inputs, rnd.outputs(), trigger_mode="once", concurrency_limit=None),
                  rnd.cont.click(continue_fn, regen_inputs, rnd.outputs(), trigger_mode="once", concurrency_limit=None)):
        ended.append(event.then(lambda: ON, None, rnd.send, queue=False))  # Send comes back however the round ended
    # New round; a pane's own clear button (Gradio's) means the same: the round's panes go together
    gr.on([new.click, *[bot.clear for bot in rnd.bots]], lambda b: rnd.abandoned(replace_round(b, len(b.sides), titles)),
          rnd.state, rnd.outputs())
    return ended


def wire_pane_count(rnd: Round) -> None:
    """A new number of panes starts a new round with that many, shown with their pickers and the
    votes that fit: A/B/tie/both bad for two, "best" per pane (and tie, all bad) for more. A round
    that had a conversation is kept: Undo brings it back, with its own number of panes."""
    def shown(n: int) -> list:
        votes = [gr.update(visible=_shown(kind, n), value=vote_label(kind, n)) for kind in rnd.kinds]
        return votes, [gr.update(visible=i < n) for i in range(len(rnd.bots))]

    def fn(battle: Battle, n):
        n = max(2, min(int(n or 2), len(rnd.bots)))
        votes, columns = shown(n)
        if n == len(battle.sides):  # Undo put this round back (or the count is what it was): show it as it is
            return (*rnd.frame(battle, votes=votes), NO_CHANGE, *columns)
        asked = any(s.conv is not None for s in battle.sides)  # else the page setting its default count
        new = replace_round(battle, n, None).replaced_by
        new.previous = battle if asked else None
        status = (f"A new round with {n} panes: ask a question. **Undo** brings back the conversation with "
                  f"{len(battle.sides)} panes." if asked else NO_CHANGE)
        votes = [{**v, "interactive": False} for v in votes]
        return (*rnd.frame(new, NO_CHANGE, status, votes, OFF, ON, OFF), gr.update(visible=asked), *columns)

    def undo(battle: Battle):
        old = battle.previous
        if old is None:
            return (*rnd.refuse(battle, "Nothing to undo."), NO_CHANGE, gr.update(visible=False))
        battle.abandoned, battle.replaced_by = True, old  # a round asked since then ends, writing nothing more
        for s in battle.sides:
            s.stop = True
        old.abandoned, old.replaced_by = False, None
        answered = outcome(old.sides, "")[1] and all(s.answers for s in old.sides)
        votes = ON if answered and not old.voted else OFF
        cut = answered and any(s.cut and s.cut[-1] for s in old.sides)
        return (*rnd.frame(old, NO_CHANGE, f"Back to the conversation with {len(old.sides)} panes.", votes,
                           ON if answered else OFF, ON, ON if cut else OFF), gr.update(value=len(old.sides)),
                gr.update(visible=False))

    rnd.count.change(fn, [rnd.state, rnd.count], [*rnd.outputs(), rnd.undo, *rnd.pane_columns])
    rnd.undo.click(undo, rnd.state, [*rnd.outputs(), rnd.count, rnd.undo])


def _shown(kind: str, n: int) -> bool:
    """A/B better for two panes, "X is best" for each of more; tie and all bad always."""
    if kind in PAIR_VOTES:
        return n == 2
    return kind not in BEST or (n > 2 and BEST.index(kind) < n)


def vote_label(kind: str, n: int) -> str:
    """A vote button's words with n panes."""
    if kind in BEST:
        return f"{LETTERS[BEST.index(kind)]} is best"
    if n > 2 and kind in ("tievote", "bothbad_vote"):
        return {"tievote": "All tie", "bothbad_vote": "All are bad"}[kind]
    return VOTES[kind][0]


def regen_fn(rnd: Round, arena: Arena, labels_of, vote_prompt, allow_after_vote: bool):
    """`vote_prompt(battle)`: what the status says when every pane has answered."""
    @refusing(rnd.refuse)
    async def fn(battle: Battle, *params):
        if battle.voted and not allow_after_vote:
            yield rnd.refuse(battle, "This battle is over; ask a new question to start the next one.")
            return
        if not all([arena.retract(s) for s in battle.sides]):
            yield rnd.refuse(battle, "Nothing to regenerate yet.")
            return
        battle.voted = False
        async for out in stream(rnd, arena, battle, settings_from(*params), labels_of(battle), "Regenerating. ",
                                vote_prompt(battle)):
            yield out
    return fn


def continue_fn(rnd: Round, arena: Arena, labels_of, vote_prompt):
    """Continue: each pane whose answer was cut off at the most new tokens goes on; the others keep theirs."""
    @refusing(rnd.refuse)
    async def fn(battle: Battle, *params):
        if battle.voted and battle.titles is not None:
            yield rnd.refuse(battle, "This battle is over; ask a new question to start the next one.")
            return
        if not any([arena.extend(s) for s in battle.sides]):
            yield rnd.refuse(battle, "Nothing to continue: no answer was cut off at the most new tokens.")
            return
        async for out in stream(rnd, arena, battle, settings_from(*params), labels_of(battle), "Continuing. ",
                                vote_prompt(battle)):
            yield out
    return fn


def wire_votes(arena: Arena, rnd: Round, anony: bool, share: gr.Textbox | None) -> None:
    """A vote. In a battle it ends the battle: the panes are relabelled with the models' names,
    Regenerate is off, and the share box offers the result. With more than two panes, "X is
    best" is recorded as X beating each of the others, "all tie" and "all bad" for every pair:
    pairwise outcomes in FastChat's log format."""
    outs = [rnd.state, rnd.status, *rnd.votes, rnd.regen, *rnd.bots] + ([share] if share else [])
    keep = [NO_CHANGE] * (1 + len(rnd.bots) + (1 if share else 0))
    ip_of = lambda request: request.client.host if request and request.client else ""  # noqa: E731

    def handler(kind: str):
        def fn(battle: Battle, request: gr.Request):
            if battle.voted or any(s.conv is None or s.error for s in battle.sides):
                return battle, "Nothing to vote on.", *[OFF] * len(rnd.votes), *keep
            if len(battle.sides) > 2:
                pairs = arena.vote_best(battle, BEST.index(kind) if kind in BEST else kind, ip_of(request))
                return (battle, f"Vote recorded: {vote_label(kind, len(battle.sides))} ({pairs} pairwise outcomes). Ask a follow-up: every "
                                f"conversation goes on (or **New round** to start over).", *[OFF] * len(rnd.votes), *keep)
            arena.vote(battle, kind, anony, ip_of(request))
            if anony:
                a, b = battle.sides
                battle.titles = [f"Model A: {a.model}", f"Model B: {b.model}"]
                msg = (f"Vote recorded: {VOTES[kind][0]}. Model A was **{a.model}**, Model B was **{b.model}**. "
                       f"This battle is over: your next question starts a new one with two models drawn again.")
                return (battle, msg, *[OFF] * len(rnd.votes), OFF,
                        *[gr.update(label=t, value=shown) for t, shown in zip(battle.titles, battle.panes())],
                        gr.update(value=share_text(battle, kind), visible=True))
            return (battle, f"Vote recorded: {VOTES[kind][0]}. Ask a follow-up: both conversations go on "
                            f"(or **New round** to start over).", *[OFF] * len(rnd.votes), *keep)
        return fn

    for btn, kind in zip(rnd.votes, rnd.kinds):
        btn.click(handler(kind), [rnd.state], outs)


def wire_export(md: gr.Button, js: gr.Button, file: gr.File, state: gr.State, ctl: Controls, sides_of,
                stale: list) -> None:
    """sides_of(state) -> (sides, labels, hidden): hidden is a battle before its vote, whose
    export names no model and carries no template's system prompt (which can name one). `stale`:
    the triggers after which a file made earlier no longer is the conversation shown (a new
    question, a new chat or round, a vote), so it is taken away."""
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
    gr.on(stale, lambda: gr.update(value=None, visible=False), None, file, queue=False, show_progress="hidden")


def round_changes(rnd: Round, new: gr.Button) -> list:
    """What makes a round's export stale: a question, Regenerate, Continue, a new round, a vote."""
    return [rnd.box.submit, rnd.send.click, rnd.regen.click, rnd.cont.click, new.click,
            *[b.clear for b in rnd.bots], *[b.edit for b in rnd.bots], *[v.click for v in rnd.votes]]
