"""`--check-rules`: the rules against each puzzle's labelled examples, before anyone relies on them.

For every puzzle with rules: each example must get its labelled score (and an echo or hedge its
label; a hedge may also be scored as a wrong reading), the reference must score full marks and
the bare question 0. A puzzle with rules and no examples fails: nothing shows its rules work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from eval.askall.grading import grade
from eval.askall.puzzles import EXAMPLE_KINDS, Puzzle

TOL = 0.011


@dataclass
class Check:
    puzzle: str
    what: str
    expected: str
    got: str
    ok: bool
    reason: str = ""


def bare_question(q: str) -> str:
    """The question restated as a statement (question marks and particles dropped), so it is not
    masked as a verbatim echo: rules that match the question's own words score it."""
    return re.sub(r"[吗呢]?[？?]", "。", q)


def _label_ok(kind: str, label: str) -> bool:
    if kind == "echo":
        return label == "echo"
    if kind == "hedge":
        return label in ("hedge", "wrong")
    return True


def check_puzzle(p: Puzzle) -> tuple[list[Check], list[str]]:
    """(checks, warnings) for one puzzle."""
    warnings = list(p.warnings())
    if not p.has_rules:
        warnings.append(f"puzzle '{p.id}' has no rules: a judge or a human grades it "
                        f"({len(p.examples)} example(s) to calibrate a judge on)")
        return [], warnings
    out = []
    if not p.examples:
        out.append(Check(p.id, "examples", "at least one", "none", False,
                         "add [[puzzle.examples]] (right, partial, wrong, echo, hedge) with their scores"))
    v = grade(p, p.reference)
    out.append(Check(p.id, "reference", f"{p.max_score:g}", f"{v.score:g}", abs(v.score - p.max_score) < TOL, v.reason))
    v = grade(p, bare_question(p.question))
    out.append(Check(p.id, "bare question", "0", f"{v.score:g} {v.label}", v.score == 0, v.reason))
    for i, ex in enumerate(p.examples, 1):
        v = grade(p, ex.answer)
        ok = abs(v.score - ex.score) < TOL and _label_ok(ex.kind, v.label)
        out.append(Check(p.id, f"example {i} ({ex.kind})", f"{ex.score:g}", f"{v.score:g} {v.label}", ok, v.reason))
    possible = {"right", "wrong", "echo"} | ({"partial"} if len(p.criteria) > 1 else set()) \
        | ({"hedge"} if p.exclusive or p.wrong else set())
    missing = [k for k in EXAMPLE_KINDS if k in possible and k not in {e.kind for e in p.examples}]
    if missing and p.examples:
        warnings.append(f"puzzle '{p.id}' has no {', '.join(missing)} example(s)")
    return out, warnings


def check_puzzles(puzzles: list[Puzzle]) -> tuple[list[Check], list[str]]:
    checks, warnings = [], []
    for p in puzzles:
        c, w = check_puzzle(p)
        checks += c
        warnings += w
    return checks, warnings


def render(path: str, checks: list[Check], warnings: list[str]) -> str:
    bad = [c for c in checks if not c.ok]
    lines = [f"{path}: {len(checks) - len(bad)} of {len(checks)} checks pass"]
    for c in bad:
        lines.append(f"  FAIL {c.puzzle}: {c.what}: expected {c.expected}, rules give {c.got}\n"
                     f"       {c.reason}")
    lines += [f"  warning: {w}" for w in warnings]
    if bad:
        lines.append("  Fix: change the rules until every example gets its score (or correct an example's "
                     "label if the rules are right), then run the check again")
    return "\n".join(lines)
