"""eval/ask_all.py with a thinking model: the trace is kept and shown, never graded. The real
script and the real API server, in front of a scripted worker whose answers the test chose."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO
from tests.scripted_fleet import ScriptedFleet

RIGHT = "冬天要尽量多穿，越多越好；夏天要尽量少穿，越少越好。"
WRONG = "我说不清楚。"


def ask_all(fleet: ScriptedFleet, tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "eval/ask_all.py"), "--controller", fleet.url,
                           "--api-base", fleet.api_url + "/v1", "--results-dir", str(tmp_path), "--no-progress",
                           "--puzzles", "winter-summer", "--run", "r", *args], capture_output=True, text=True,
                          timeout=120)


def test_the_answer_is_graded_never_the_trace(tmp_path):
    with ScriptedFleet(model="thinker") as fleet:
        fleet.answer("<think>", f"<think>{RIGHT}", f"<think>{RIGHT}</think>\n\n{WRONG}")  # right words in the trace only
        fleet.answer(RIGHT)  # the same words as the answer: the rules do score them
        r = ask_all(fleet, tmp_path, "--repeats", "2")
    assert r.returncode == 0, r.stderr
    rows = {row.split(",")[2]: row.split(",") for row in (tmp_path / "r/report.csv").read_text().splitlines()[1:]}
    assert float(rows["0"][3]) == 0.0 and float(rows["1"][3]) == 1.0
    recs = sorted((json.loads(x) for x in (tmp_path / "r/answers.jsonl").read_text().splitlines()),
                  key=lambda x: x["repeat"])
    assert (recs[0]["reasoning"], recs[0]["answer"]) == (RIGHT, WRONG)
    assert recs[0]["reasoning_tokens"] is not None and recs[0]["thinking_s"] is not None
    assert (recs[1]["reasoning"], recs[1]["answer"]) == (None, RIGHT)
    md, page = (tmp_path / "r/report.md").read_text(), (tmp_path / "r/report.html").read_text()
    assert "<details><summary>Thinking:" in md and RIGHT in md
    assert '<details class="trace"><summary>Thinking:' in page and "(not graded)" in page


def test_thinking_on_and_off_are_asked_and_compared(tmp_path):
    with ScriptedFleet(model="thinker") as fleet:
        fleet.answer(f"<think>{RIGHT}</think>{RIGHT}")
        r = ask_all(fleet, tmp_path, "--thinking", "both")
        sent = list(fleet.sent)
    assert r.returncode == 0, r.stderr
    assert [s.get("reasoning_budget") for s in sent] == [None, 0]  # on: the template's; off: a budget of 0
    models = [m["name"] for m in json.loads((tmp_path / "r/run.json").read_text())["models"]]
    assert models == ["thinker [thinking on]", "thinker [thinking off]"]
    md = (tmp_path / "r/report.md").read_text()
    assert "## Thinking on and off" in md and "| thinker |" in md
