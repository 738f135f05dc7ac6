"""The Puzzles tab: the same puzzle set `python eval/ask_all.py` asks, sent to two models with one
click; once both have answered, the reference answer and the eval's own rule grading of each
answer appear, so the page and the eval speak about the same questions and the same verdicts.

The puzzles and their grading come in as a `PuzzleBook` (eval's, handed in by `python -m deploy
webui`): the page does not import eval."""
from __future__ import annotations

import html
from typing import Protocol

import gradio as gr

from deploy.webui.arena import Arena, Battle
from deploy.webui.widgets import Pickers, controls, pane, picker, refusing, settings_from


class PuzzleBook(Protocol):
    """Puzzles (each with `id`, `question`, `reference`) and a grader of answers to them (a verdict
    with `score`, `max_score`, `label`, `confident`, and `in_words()`: what the answer got, missed
    and got wrong, in plain words)."""

    source: str  # where the puzzles come from, as the tab's intro names it

    def puzzles(self) -> list: ...

    def grade(self, puzzle, answer: str): ...


def _grading(book: PuzzleBook, puzzle, battle: Battle, tally: dict) -> str:
    """The reference, each answer's verdict, and each model's tally over the puzzles asked in this
    page (added to `tally`: model -> [score, most, puzzles]). An answer stopped before its end is
    not graded; one cut off at the most new tokens is graded as it stands, and says so."""
    lines = [f"**Reference answer:** {html.escape(puzzle.reference)}", ""]
    for label, side in zip(("A", "B"), battle.sides):
        name = html.escape(side.model or "?")
        if side.error or not side.answers:
            lines.append(f"- Model {label} ({name}): no answer to grade")
            continue
        if side.stop:
            lines.append(f"- Model {label} ({name}): stopped before its end, so not graded. Ask again and let "
                         f"it finish.")
            continue
        v = book.grade(puzzle, side.answers[-1])
        cut = " It was cut off at the most new tokens: raise **Max new tokens** for a whole answer." \
            if side.cut and side.cut[-1] else ""
        lines.append(f"- Model {label} (**{name}**): **{v.score:.2f}** / {v.max_score:g}, "
                     f"{v.label}{'' if v.confident else ' (the rules are unsure: read it yourself)'}. "
                     f"{html.escape(v.in_words())}{cut}")
        score, most, n = tally.get(side.model, (0.0, 0.0, 0))
        tally[side.model] = [score + v.score, most + v.max_score, n + 1]
    if tally:
        lines += ["", "**This page's tally:** " + " · ".join(
            f"{html.escape(m)} {s:.2f} / {most:g} ({n} puzzle{'s' if n != 1 else ''})"
            for m, (s, most, n) in sorted(tally.items(), key=lambda kv: -kv[1][0] / max(kv[1][1], 1)))]
    return "\n".join(lines)


def puzzles_tab(arena: Arena, max_new_tokens: int, book: PuzzleBook | None):
    puzzles = book.puzzles() if book else []
    if not puzzles:
        gr.Markdown(f"No puzzles to show ({book.source if book else 'the page was started without them'}).")
        return Pickers([], [])
    labels = [f"{p.id}: {p.question[:40]}{'…' if len(p.question) > 40 else ''}" for p in puzzles]
    by_label = dict(zip(labels, puzzles))
    gr.Markdown("Brain-teasers with a known answer: the same set the fleet's report script puts to every model. "
                "Pick one and ask two models; once both have answered you see the right answer and a score for "
                "each (checked by simple rules, so read the answers too).", elem_classes="intro",
                elem_id="puzzles_intro")
    state = gr.State(Battle())
    tally = gr.State({})  # model -> [score, most, puzzles] over this page's runs
    pickers = []
    with gr.Row(elem_classes="pickers"):
        for side in ("a", "b"):
            with gr.Column(min_width=120):
                pickers.append(picker(f"Model {side.upper()}", f"puzzle_model_{side}"))
    with gr.Row(equal_height=True):
        choose = gr.Dropdown(labels, value=labels[0], label="Puzzle", scale=6, elem_id="puzzle_pick")
        send = gr.Button("Ask both", variant="primary", scale=1, min_width=90, elem_id="puzzle_send")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=70, elem_id="puzzle_stop")
    question = gr.Markdown(puzzles[0].question, elem_id="puzzle_question")
    with gr.Row(elem_classes="panes"):
        bots = []
        for s in ("A", "B"):
            with gr.Column(min_width=120):
                bots.append(pane(f"Model {s}", f"puzzle_pane_{s.lower()}"))
    status = gr.Markdown(elem_id="puzzle_status")
    reference = gr.Markdown(elem_id="puzzle_reference")
    ctl = controls("puzzles", max_new_tokens, temperature=0.0)  # the eval asks at temperature 0

    @refusing(lambda old, message: (old, gr.update(), gr.update(), message, gr.update()))
    async def ask(old: Battle, tally: dict, a, b, label, *params):
        p = by_label.get(label)
        if p is None or not a or not b:
            yield old, gr.update(), gr.update(), "Pick a puzzle and two models.", gr.update()
            return
        old.abandoned = True
        battle = Battle(question=p.question)
        settings = settings_from(*params)
        for side, m in zip(battle.sides, (a, b)):
            await arena.begin_turn(side, m, p.question, m, settings.system_prompt)
        yield battle, battle.sides[0].messages, battle.sides[1].messages, "Answering…", ""
        async for _ in arena.stream_sides(battle.sides, settings, [a, b]):
            if battle.abandoned:
                return
            yield battle, battle.sides[0].messages, battle.sides[1].messages, gr.update(), gr.update()
        failed = [lab for lab, sd in zip("AB", battle.sides) if sd.error or not sd.answers]
        stopped = [lab for lab, sd in zip("AB", battle.sides) if sd.stop and lab not in failed]
        done = ("Both models failed: their panes say why." if len(failed) == 2
                else f"Model {failed[0]} failed (its pane says why)." if failed else "")
        done += (" Stopped before the end: " + ", ".join(f"Model {s}" for s in stopped) + "." if stopped else "")
        yield battle, battle.sides[0].messages, battle.sides[1].messages, done.strip() or "Both answered.", \
            _grading(book, p, battle, tally)

    choose.change(lambda label: by_label[label].question if label in by_label else "", choose, question)
    send.click(ask, [state, tally, *[p.select for p in pickers], choose, *ctl.inputs],
                      [state, *bots, status, reference], trigger_mode="once", concurrency_limit=None)

    def stop_fn(battle: Battle):
        for s in battle.sides:
            s.stop = True
    stop.click(stop_fn, state, None, queue=False)
    return Pickers.of(pickers)
