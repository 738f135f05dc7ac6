"""A model judge that has to earn its place: checked, calibrated, and held to its own reason.

A judge is any registered model or any OpenAI-compatible endpoint. Before it grades anything it
must be registered and answering (`check`), and it must agree with the puzzles' labelled
examples on at least MIN_AGREEMENT of them (`calibrate`); a tiny model that gives 0.5 to
everything is refused with its figure. Each verdict must be consistent: the label it names, its
score and its reason must say the same thing, or the verdict counts as failed (and is asked
again on --resume, never cached).
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field

from eval.askall.grading import Verdict, label_for
from eval.askall.puzzles import Puzzle

MIN_AGREEMENT = 0.8
TOLERANCE = 0.25  # |judge - label| within this counts as agreement, as for the human agreement target

PROMPT = """You grade answers to a Chinese language puzzle against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Give partial credit for the parts of the reference the answer gets right. An answer that only
repeats the question, restates it as its own answer, or states several contradictory answers
so as to be safe, is wrong.
Reply with one line of JSON and nothing else:
{{"verdict": "right" | "partial" | "wrong", "score": <a number from 0 to 1>, "reason": "<one sentence>"}}"""

NEGATIVE = re.compile(r"(不正确|错误|答错|不对|没有答|未能|incorrect|wrong|fails?|does not|doesn't|not correct)", re.I)
POSITIVE = re.compile(r"(完全正确|全部正确|答对了|fully correct|entirely correct|all correct)", re.I)


class JudgeError(Exception):
    """The judge cannot be used: not registered, not answering, or below the calibration bar."""


def parse_reply(text: str) -> tuple[str, float, str]:
    """(verdict, score, reason) from the judge's reply; ValueError when they contradict each other."""
    m = re.search(r"\{.*?\}", text or "", flags=re.S)
    if not m:
        raise ValueError(f"no JSON object in the judge's reply: {text[:200]!r}")
    obj = json.loads(m.group(0))
    score = float(obj["score"])
    if not 0 <= score <= 1:
        raise ValueError(f"judge score {score} is outside 0..1")
    verdict, reason = str(obj.get("verdict", "")).strip().lower(), str(obj.get("reason", ""))
    if verdict not in ("right", "partial", "wrong"):
        raise ValueError(f"judge verdict {verdict!r} is not right, partial or wrong")
    if label_for(score, 1.0) != verdict:
        raise ValueError(f"judge says '{verdict}' but scores {score:g}")
    if score >= 0.75 and NEGATIVE.search(reason) and not POSITIVE.search(reason):
        raise ValueError(f"judge scores {score:g} but its reason says the answer is wrong: {reason!r}")
    if score <= 0.25 and POSITIVE.search(reason):
        raise ValueError(f"judge scores {score:g} but its reason says the answer is right: {reason!r}")
    return verdict, score, reason


@dataclass
class Calibration:
    judge: str
    agree: int = 0
    total: int = 0
    misses: list[dict] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.agree / self.total if self.total else 0.0

    def summary(self) -> str:
        return f"judge {self.judge} agrees with {self.agree} of {self.total} labelled examples ({self.rate:.0%})"


class Judge:
    """One judge model behind an OpenAI-compatible client."""

    def __init__(self, client, model: str, max_tokens: int = 256):
        self.client, self.model, self.max_tokens = client, model, max_tokens
        self.source = f"judge:{model}"

    def check(self) -> None:
        """Registered and answering, or JudgeError naming the endpoint and the fix."""
        where = str(self.client.base_url)
        try:
            names = [m.id for m in self.client.models.list().data]
        except Exception as e:
            raise JudgeError(f"judge endpoint {where} does not answer ({type(e).__name__}: {e}). "
                             f"Fix: start the fleet, or pass --judge-api-base") from None
        if self.model not in names:
            raise JudgeError(f"judge '{self.model}' is not registered at {where} (registered: "
                             f"{', '.join(names) or 'none'}). Fix: pass one of those to --judge") from None
        try:
            self.client.chat.completions.create(model=self.model, max_tokens=4, temperature=0,
                                                messages=[{"role": "user", "content": "ok"}])
        except Exception as e:
            raise JudgeError(f"judge '{self.model}' is registered but does not answer ({type(e).__name__}: {e})") from None

    def verdict(self, puzzle: Puzzle, answer: str) -> Verdict:
        mx = puzzle.max_score
        try:
            r = self.client.chat.completions.create(
                model=self.model, temperature=0, max_tokens=self.max_tokens,
                messages=[{"role": "user", "content": PROMPT.format(question=puzzle.question,
                                                                    reference=puzzle.reference, answer=answer)}])
            _, score, reason = parse_reply(r.choices[0].message.content)
        except Exception as e:
            return Verdict(0.0, mx, "error", f"judge {self.model} gave no usable verdict: {type(e).__name__}: {e}",
                           source=self.source, confident=False)
        score = round(score * mx, 4)
        return Verdict(score, mx, label_for(score, mx), f"judge {self.model}: {reason}", source=self.source)

    def calibrate(self, puzzles: list[Puzzle]) -> Calibration:
        """Grade every labelled example of these puzzles; agreement is |judge - label| <= TOLERANCE."""
        cal = Calibration(self.model)
        for p in puzzles:
            for ex in p.examples:
                v = self.verdict(p, ex.answer)
                cal.total += 1
                if v.label != "error" and abs(v.score - ex.score) <= TOLERANCE * p.max_score:
                    cal.agree += 1
                else:
                    cal.misses.append({"puzzle": p.id, "kind": ex.kind, "expected": ex.score,
                                       "judge": v.score if v.label != "error" else None, "reason": v.reason})
        return cal


def admit(judge: Judge, puzzles: list[Puzzle], cal: Calibration | None = None, keep=None) -> Calibration:
    """Check the judge (registered, answering), calibrate it on these puzzles' labelled examples
    unless `cal` holds an earlier calibration (a new one is passed to `keep`, refused or not), and
    refuse it below the bar; JudgeError says why."""
    judge.check()
    if cal is None:
        print(f"calibrating judge {judge.model} on the labelled examples ...", file=sys.stderr)
        cal = judge.calibrate(puzzles)
        if keep:
            keep(cal)
    require_calibrated(cal)
    print(cal.summary(), file=sys.stderr)
    return cal


def require_calibrated(cal: Calibration) -> None:
    if cal.total == 0:
        raise JudgeError(f"judge {cal.judge}: the puzzles have no labelled examples to calibrate it on. "
                         f"Fix: add [[puzzle.examples]] to the puzzle file")
    if cal.rate < MIN_AGREEMENT:
        raise JudgeError(f"{cal.summary()}; a judge needs {MIN_AGREEMENT:.0%}. Refused: grading with the rules "
                         f"alone is more reliable. Fix: choose a stronger --judge, or drop it")
