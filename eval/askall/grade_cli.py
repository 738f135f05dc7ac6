"""python eval/grade.py ANSWERS.jsonl: the grading ask_all uses, on answers from anywhere.

Input: JSON lines with `id`, `puzzle_id` and `answer` (optional: `model`, `repeat`, `run`, which
let eval/overrides.toml apply, and `finish_reason`). Output, on standard output: one JSON line
per answer with `id`, `puzzle_id`, `score` (0 to 1), `max_score`, `label`, `source` (rules,
judge:NAME or human), `evidence` (the spans of the answer that decided, with offsets), `reason`,
`confident` (whether the rules were sure) and `cut_off`.
"""
from __future__ import annotations

import argparse
import json
import sys

from eval.askall.cascade import Cascade
from eval.askall.cli import fleet_defaults, make_judge
from eval.askall.fleet import AskAllError
from eval.askall.judge import JudgeError, admit
from eval.askall.overrides import load_overrides
from eval.askall.puzzles import PuzzleFileError, load_puzzles


def parse_args(argv):
    _, api = fleet_defaults()
    p = argparse.ArgumentParser(prog="python eval/grade.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("answers", help="a JSON-lines file, or - for standard input")
    p.add_argument("--puzzle-file", help="default: eval/puzzles.toml")
    p.add_argument("--judge", help="a model that grades the answers the rules are unsure of (checked and calibrated first)")
    p.add_argument("--judge-api-base", default=api, help=f"the judge's OpenAI-compatible API (default {api})")
    p.add_argument("--judge-api-key-env", default="JUDGE_API_KEY", help="env var holding the judge's API key")
    p.add_argument("--overrides", help="human verdicts (default: eval/overrides.toml); they apply to lines with a `model`")
    p.add_argument("--agreement", action="store_true", help="the lines carry a careful reader's score (`human`): "
                   "print how often the grading agrees with it (|difference| <= 0.25), per `split`, instead of verdicts")
    p.add_argument("--min-agreement", type=float, help="with --agreement: exit 1 if a split named 'holdout' agrees less")
    return p.parse_args(argv)


def read_answers(path: str, puzzle_ids: set[str]) -> list[dict]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise AskAllError(f"{path} line {n}: not JSON ({e.msg})") from None
        missing = [k for k in ("id", "puzzle_id", "answer") if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise AskAllError(f"{path} line {n}: no {', '.join(missing)} (each line needs id, puzzle_id, answer)")
        if rec["puzzle_id"] not in puzzle_ids:
            raise AskAllError(f"{path} line {n}: no puzzle '{rec['puzzle_id']}' in the puzzle file "
                              f"(have: {', '.join(sorted(puzzle_ids))}). Fix: --puzzle-file")
        if rec["answer"] is not None and not isinstance(rec["answer"], str):
            raise AskAllError(f"{path} line {n}: answer must be a string or null")
        out.append({**rec, "puzzle": rec["puzzle_id"], "model": rec.get("model", ""), "repeat": rec.get("repeat", 0)})
    return out


TOLERANCE = 0.25


def agreement(cascade: Cascade, recs: list[dict], minimum: float | None) -> int:
    """Agreement with a careful reader's scores, per split (tune / holdout), with each model's mean
    by hand and by the grader (a bias that changes the ranking shows here) and every disagreement."""
    missing = [r["id"] for r in recs if not isinstance(r.get("human"), (int, float))]
    if missing:
        print(f"grade: --agreement needs a numeric `human` score on every line (missing: {missing[:5]})", file=sys.stderr)
        return 2
    rc = 0
    for split in sorted({r.get("split", "all") for r in recs}, key=lambda s: (s != "holdout", s)):
        rows = [(r, cascade.grade(r)) for r in recs if r.get("split", "all") == split]
        diffs = [abs(g.final.score - r["human"]) for r, g in rows]
        agree = sum(d <= TOLERANCE for d in diffs)
        rate = agree / len(rows)
        print(f"{split}: {agree} of {len(rows)} agree ({rate:.0%}), mean |difference| {sum(diffs) / len(rows):.3f}")
        by_model: dict[str, list] = {}
        for r, g in rows:
            by_model.setdefault(r.get("model") or "-", []).append((r["human"], g.final.score))
        for m, xs in sorted(by_model.items()):
            print(f"  {m:34} by hand {sum(h for h, _ in xs):5.2f}   graded {sum(s for _, s in xs):5.2f}   ({len(xs)} answers)")
        for (r, g), d in zip(rows, diffs):
            if d > TOLERANCE:
                print(f"  DISAGREE {r['id']}: by hand {r['human']:g}, graded {g.final.score:g} ({g.final.source}): "
                      f"{g.final.reason[:240]}")
        if minimum is not None and split == "holdout" and rate < minimum:
            rc = 1
    return rc


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        puzzles = load_puzzles(args.puzzle_file)
        recs = read_answers(args.answers, {p.id for p in puzzles})
        overrides = load_overrides(args.overrides)
        judge = make_judge({"judge": args.judge, "judge_api_base": args.judge_api_base, "api_base": args.judge_api_base,
                            "judge_api_key_env": args.judge_api_key_env})
        if judge:
            used = {r["puzzle"] for r in recs}
            admit(judge, [p for p in puzzles if p.id in used])
    except (AskAllError, PuzzleFileError, JudgeError, OSError) as e:
        print(f"grade: {e}", file=sys.stderr)
        return 2
    cascade = Cascade(puzzles, judge, overrides, run="")
    if args.agreement:
        return agreement(cascade, recs, args.min_agreement)
    for rec in recs:
        g = cascade.grade(rec)
        v = g.final
        print(json.dumps({"id": rec["id"], "puzzle_id": rec["puzzle"], "score": v.score, "max_score": v.max_score,
                          "label": v.label, "source": v.source.split(":")[0],
                          "judge": v.source.removeprefix("judge:") if v.source.startswith("judge:") else None,
                          "evidence": g.rules.evidence if v.source == "rules" else [], "reason": v.reason,
                          "confident": g.rules.confident, "cut_off": g.cut_off}, ensure_ascii=False), flush=True)
    return 0
