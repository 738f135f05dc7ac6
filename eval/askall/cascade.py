"""One grading pipeline for ask_all, --regrade and eval/grade.py: rules, then a judge only where
the rules are unsure (or a puzzle has none), then a human override over both.

As in OpenCompass's cascade evaluator, the cheap and exact grader decides where it can; the
model judge is the fallback, never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from eval.askall.grading import Verdict, grade
from eval.askall.judge import Judge
from eval.askall.overrides import override_for
from eval.askall.puzzles import Puzzle


@dataclass
class Graded:
    rec: dict
    final: Verdict
    others: list[Verdict] = field(default_factory=list)  # the other verdicts of the chain (rules, judge)

    @property
    def rules(self) -> Verdict:
        return next(v for v in [self.final, *self.others] if v.source == "rules")

    @property
    def judged(self) -> Verdict | None:
        return next((v for v in [self.final, *self.others] if v.source.startswith("judge:")), None)

    @property
    def cut_off(self) -> bool:
        """The answer stopped at the token limit, not at its end."""
        return self.rec.get("finish_reason") == "length"


class JudgementCache(Protocol):
    def get(self, k: tuple) -> Verdict | None: ...
    def put(self, k: tuple, rec: dict, v: Verdict) -> None: ...


class MemoryCache:
    def __init__(self):
        self.items: dict[tuple, Verdict] = {}

    def get(self, k):
        return self.items.get(k)

    def put(self, k, rec, v):
        self.items[k] = v


class Cascade:
    def __init__(self, puzzles: list[Puzzle], judge: Judge | None = None, overrides: list[dict] | None = None,
                 run: str = "", cache: JudgementCache | None = None):
        self.by_id = {p.id: p for p in puzzles}
        self.judge, self.overrides, self.run = judge, overrides or [], run
        self.cache = cache or MemoryCache()
        self.judge_calls = 0

    def _judge(self, p: Puzzle, rec: dict) -> Verdict:
        k = (rec.get("model", ""), rec["puzzle"], int(rec.get("repeat", 0)), self.judge.model, rec.get("answer"))
        v = self.cache.get(k)
        if v is None:
            self.judge_calls += 1
            v = self.judge.verdict(p, rec["answer"])
            if v.label != "error":  # a failed judgement is asked again next time, never reused
                self.cache.put(k, rec, v)
        return v

    def grade(self, rec: dict) -> Graded | None:
        p = self.by_id.get(rec["puzzle"])
        if p is None:
            return None
        rules = grade(p, rec.get("answer"), rec.get("error"))
        chain, final = [rules], rules
        if self.judge and rec.get("answer") and not rec.get("error") and not rules.confident:
            v = self._judge(p, rec)
            chain.append(v)
            if v.label != "error":
                final = v
        human = override_for(self.overrides, self.run, rec.get("model", ""), rec["puzzle"],
                             int(rec.get("repeat", 0)), p.max_score)
        if human:
            chain.append(human)
            final = human
        return Graded(rec, final, [v for v in chain if v is not final])

    def grade_all(self, records: list[dict]) -> list[Graded]:
        order = list(self.by_id)
        recs = sorted((r for r in records if r["puzzle"] in self.by_id),
                      key=lambda r: (r.get("model", ""), order.index(r["puzzle"]), int(r.get("repeat", 0))))
        return [self.grade(r) for r in recs]
