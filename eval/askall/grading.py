"""Rule grading: every verdict carries its reason, the criteria met and the text that met them.

Guards against what the seed reports show models doing:
- echoing the question (ChatGLM3 and DeepSeek repeated it before, or instead of, answering):
  the question's text is removed before matching, so repeating it earns nothing, and an
  answer that repeats it and adds almost nothing of its own is labelled an echo;
- quoting the puzzle's own phrases (能穿多少穿多少 contains 穿多 and 少穿): `ignore` patterns
  are removed first;
- stating both answers (明明喜欢白白 ... 白白喜欢明明): `exclusive` options, scored 0.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

from eval.askall.puzzles import Puzzle


def normalize(text: str) -> str:
    """NFKC (full-width punctuation to ASCII), no spaces or tabs, newlines kept."""
    return re.sub(r"[ \t\u3000\u00a0]+", "", unicodedata.normalize("NFKC", text or ""))


def _ngrams(s: str, n: int = 4) -> set[str]:
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def question_coverage(answer: str, question: str, n: int = 4) -> float:
    """Share of the question's n-grams that the answer repeats."""
    grams = _ngrams(question, n)
    return len(grams & _ngrams(answer, n)) / len(grams) if grams else 0.0


def new_chars(answer: str, question: str, n: int = 4) -> int:
    """Characters (not punctuation) of the answer not covered by any n-gram of the question."""
    grams = _ngrams(question, n)
    covered = [False] * len(answer)
    for i in range(len(answer) - n + 1):
        if answer[i:i + n] in grams:
            for j in range(i, i + n):
                covered[j] = True
    return sum(1 for ch, c in zip(answer, covered) if not c and not unicodedata.category(ch).startswith("P")
               and ch != "\n")


@dataclass
class Verdict:
    score: float
    max_score: float
    label: str  # right / partial / wrong / echo / hedge / error
    reason: str
    evidence: list[dict] = field(default_factory=list)
    source: str = "rules"

    def to_dict(self) -> dict:
        return asdict(self)


def label_for(score: float, max_score: float) -> str:
    """The one rule from a score to a label, for rules, judges, humans and report cells."""
    if score >= max_score - 1e-6:
        return "right"
    return "partial" if score > 0 else "wrong"


def _strip(puzzle: Puzzle, answer: str) -> str:
    text = normalize(answer)
    q = normalize(puzzle.question)
    text = text.replace(q, "\n")
    for pat in puzzle.ignore:
        text = re.sub(normalize(pat), "\n", text)
    return text


def _matches(patterns: list[str], text: str) -> list[re.Match]:
    out = []
    for p in patterns:
        out.extend(re.finditer(normalize(p), text, flags=re.MULTILINE))
    return out


def _ordered_choice(per_criterion: list[list[re.Match]], points: list[float]) -> list[re.Match | None]:
    """The criteria met in their listed order (one match each, positions rising) worth the most points."""
    events = sorted(((m.start(), i, m) for i, ms in enumerate(per_criterion) for m in ms), key=lambda e: e[:2])
    best: list[tuple[float, list]] = []  # best[k] = (points, chosen) of the best chain ending at event k
    for k, (pos, i, m) in enumerate(events):
        cand = (points[i], [(i, m)])
        for j in range(k):
            pj, ij, _ = events[j]
            if pj < pos and ij < i and best[j][0] + points[i] > cand[0]:
                cand = (best[j][0] + points[i], best[j][1] + [(i, m)])
        best.append(cand)
    chosen: list[re.Match | None] = [None] * len(per_criterion)
    if best:
        for i, m in max(best, key=lambda b: b[0])[1]:
            chosen[i] = m
    return chosen


def grade(puzzle: Puzzle, answer: str | None, error: str | None = None) -> Verdict:
    mx = puzzle.max_score
    if error or answer is None:
        return Verdict(0.0, mx, "error", f"no answer: {error or 'missing'}")
    text = _strip(puzzle, answer)
    stated_options = []
    for ex in puzzle.exclusive:
        stated = {}
        for label, pats in ex.options.items():
            ms = _matches(pats, text)
            if ms:
                stated[label] = ms[0].group(0)
        stated_options.extend(f"{ex.name}: {k} (“{v}”)" for k, v in stated.items())
        if len(stated) > 1:
            shown = "; ".join(f"{k}: “{v}”" for k, v in stated.items())
            return Verdict(0.0, mx, "hedge", f"states more than one answer to '{ex.name}' ({shown})",
                           [{"criterion": ex.name, "matched": v, "option": k} for k, v in stated.items()])
    per = []
    for c in puzzle.criteria:
        ms = [] if _matches(c.unless, text) else _matches(c.patterns, text)
        per.append(ms)
    chosen = _ordered_choice(per, [c.points for c in puzzle.criteria]) if puzzle.ordered else [ms[0] if ms else None for ms in per]
    score, evidence, missed = 0.0, [], []
    for c, m in zip(puzzle.criteria, chosen):
        if m is None:
            missed.append(c.name)
            continue
        score += c.points
        lo, hi = max(0, m.start() - 12), min(len(text), m.end() + 12)
        evidence.append({"criterion": c.name, "points": c.points, "matched": m.group(0),
                         "context": text[lo:hi].replace("\n", " ")})
    score = round(min(score, mx), 4)
    na, nq = normalize(answer), normalize(puzzle.question)
    added = new_chars(na, nq)
    if score == 0 and not stated_options and question_coverage(na, nq) >= 0.5 and added < puzzle.min_new_chars:
        return Verdict(0.0, mx, "echo", f"echoes the question: repeats it and adds only {added} character(s) "
                                         f"of its own (an answer needs {puzzle.min_new_chars})")
    label = label_for(score, mx)
    met = ", ".join(f"{e['criterion']} (“{e['matched']}”)" for e in evidence) or "none"
    reason = f"rules: met {len(evidence)}/{len(puzzle.criteria)}: {met}"
    if missed:
        reason += f"; missed: {', '.join(missed)}"
    if puzzle.ordered and any(per[i] and chosen[i] is None for i in range(len(per))):
        reason += " (some senses were found only out of order)"
    if stated_options and score == 0:
        reason += f"; states {', '.join(stated_options)}"
    return Verdict(score, mx, label, reason, evidence)
