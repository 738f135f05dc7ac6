"""The Puzzles tab's verdicts: an answer stopped before its end is not graded, one cut off at the
most new tokens is graded as it stands and says so, and each model's tally adds up over the runs of
the page. The grader here is a stand-in that scores a fixed word: what is tested is the tab's use of
the verdicts, the eval's own rules are tested in test_grading.py."""
from dataclasses import dataclass

from fastchat.conversation import get_conv_template

from deploy.webui.arena import Battle, Side
from deploy.webui.puzzles_tab import _grading
from eval.askall.book import EvalPuzzleBook


@dataclass
class Verdict:
    score: float
    max_score: float = 1.0
    label: str = "right"
    confident: bool = True

    def in_words(self) -> str:
        return "It names the reference." if self.score else "It misses the reference."


@dataclass
class Puzzle:
    id: str = "p1"
    question: str = "q"
    reference: str = "白白"


class Book:
    source = "a stand-in"

    def grade(self, puzzle, answer: str) -> Verdict:
        return Verdict(1.0 if puzzle.reference in answer else 0.0)


def side(model: str, answer: str, stopped: bool = False, cut: bool = False) -> Side:
    s = Side(model=model, conv=get_conv_template("qwen-7b-chat"), answers=[answer], cut=[cut])
    s.stop = stopped
    return s


def test_a_stopped_answer_is_not_graded_a_cut_one_says_so_and_the_tally_adds_up():
    tally: dict = {}
    text = _grading(Book(), Puzzle(), Battle(sides=[side("a", "是白白"), side("b", "是明", stopped=True)]), tally)
    assert "Model A (**a**): **1.00** / 1" in text and "Model B (b): stopped before its end, so not graded" in text
    assert tally == {"a": [1.0, 1.0, 1]}
    text = _grading(Book(), Puzzle(), Battle(sides=[side("a", "明明", cut=True), side("b", "白白")]), tally)
    assert "**0.00** / 1" in text and "cut off at the most new tokens" in text
    assert tally == {"a": [1.0, 2.0, 2], "b": [1.0, 1.0, 1]}
    assert "This page's tally:** b 1.00 / 1 (1 puzzle) · a 1.00 / 2 (2 puzzles)" in text


def test_the_verdict_is_told_in_plain_words_naming_what_the_answer_got_and_missed():
    """With the eval's own puzzles and rules: each part of the answer named as the puzzle names it,
    quoted from the answer; none of the rules' bookkeeping ("rules: met 1/2", "missed:")."""
    book = EvalPuzzleBook()
    puzzle = next(p for p in book.puzzles() if p.id == "winter-summer")
    text = _grading(book, puzzle, Battle(sides=[side("a", "冬天尽可能多穿保暖。夏天嘛，也一样。"),
                                                side("b", "冬天要多穿，夏天要少穿，两句话的意思一样。")]), {})
    a, b = (line for line in text.splitlines() if line.startswith("- Model"))
    assert "partial. It gets: winter means wear as much as you can (“尽可能多”). " \
           "It misses: summer means wear as little as you can." in a, a
    assert "It says something wrong: the two sentences mean the same (“两句话的意思一样”). So no credit for: " in b, b
    assert "rules:" not in text and "missed:" not in text
