"""Human verdicts (eval/overrides.toml): they win over the rules and the judge."""
from __future__ import annotations

import tomllib
from pathlib import Path

from eval.askall.fleet import AskAllError
from eval.askall.grading import Verdict, label_for

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "overrides.toml"


def load_overrides(path: str | Path | None = None) -> list[dict]:
    path = Path(path or DEFAULT_FILE)
    if not path.exists():
        return []
    try:
        items = tomllib.loads(path.read_text(encoding="utf-8")).get("override", [])
    except tomllib.TOMLDecodeError as e:
        raise AskAllError(f"{path}: not valid TOML ({e})") from None
    for i, o in enumerate(items):
        missing = {"model", "puzzle", "score", "reason"} - set(o)
        if missing:
            raise AskAllError(f"{path}: override #{i + 1} lacks {', '.join(sorted(missing))}")
        if not 0 <= float(o["score"]) <= 1:
            raise AskAllError(f"{path}: override #{i + 1} has score {o['score']}; use 0 to 1")
    return items


def override_for(overrides: list[dict], run: str, model: str, puzzle: str, repeat: int, max_score: float):
    for o in overrides:
        if (o["model"], o["puzzle"]) == (model, puzzle) and o.get("run", run) == run \
                and int(o.get("repeat", repeat)) == repeat:
            s = round(float(o["score"]) * max_score, 4)
            return Verdict(s, max_score, label_for(s, max_score), f"human: {o['reason']}", source="human")
    return None
