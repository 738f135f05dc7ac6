"""A run on disk: run.json (settings, models, sessions) and answers.jsonl, appended as answers arrive.

Each answer is one line, flushed and fsynced, so a run killed at any moment loses at most the
answer in flight, and a resumed run asks only what has no line yet.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def key(rec: dict) -> tuple[str, str, int]:
    return rec["model"], rec["puzzle"], int(rec["repeat"])


class RunStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.answers = self.path / "answers.jsonl"
        self.judgements = self.path / "judgements.jsonl"
        self.meta_file = self.path / "run.json"

    @classmethod
    def create(cls, root: Path = RESULTS_DIR, name: str | None = None) -> "RunStore":
        name = name or time.strftime("run-%Y%m%d-%H%M%S")
        path = Path(root) / name
        path.mkdir(parents=True, exist_ok=False)
        return cls(path)

    @classmethod
    def latest(cls, root: Path = RESULTS_DIR) -> "RunStore | None":
        runs = sorted(p for p in Path(root).glob("*/run.json")) if Path(root).exists() else []
        return cls(runs[-1].parent) if runs else None

    def read_meta(self) -> dict:
        return json.loads(self.meta_file.read_text(encoding="utf-8"))

    def write_meta(self, meta: dict) -> None:
        tmp = self.meta_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        tmp.replace(self.meta_file)

    @staticmethod
    def _read(path: Path) -> list[dict]:
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that answer is asked again
        return out

    @staticmethod
    def _append(path: Path, rec: dict) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict]:
        """The latest line per (model, puzzle, repeat)."""
        latest = {}
        for rec in self._read(self.answers):
            latest[key(rec)] = rec
        return list(latest.values())

    def append(self, rec: dict) -> None:
        self._append(self.answers, rec)

    def judgement_cache(self) -> "RunJudgements":
        return RunJudgements(self)


def _sha(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()[:16]


class RunJudgements:
    """The run's judgements.jsonl as the cascade's cache: one line per judged answer, keyed by
    the answer's text too, so a re-asked answer is judged again. Failed judgements are never
    written, and lines from older versions that recorded one are skipped: --resume retries them."""

    def __init__(self, store: RunStore):
        self.store = store
        self.items = {}
        for j in store._read(store.judgements):
            if j.get("verdict", {}).get("label") == "error":
                continue
            self.items[(j["model"], j["puzzle"], int(j["repeat"]), j["judge"], j.get("answer_sha"))] = j["verdict"]

    def get(self, k):
        from eval.askall.grading import Verdict

        *head, answer = k
        v = self.items.get((*head, _sha(answer)))
        return Verdict.from_dict(v) if v else None

    def put(self, k, rec, v):
        model, puzzle, repeat, judge, answer = k
        line = {"model": model, "puzzle": puzzle, "repeat": repeat, "judge": judge, "answer_sha": _sha(answer),
                "verdict": v.to_dict()}
        self.store._append(self.store.judgements, line)
        self.items[(model, puzzle, repeat, judge, _sha(answer))] = line["verdict"]
