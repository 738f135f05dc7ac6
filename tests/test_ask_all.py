"""eval/ask_all.py end to end: the real script against the real stack on the small default models."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import QWEN, REPO, SMALL, Stack, entry, wait_for
from judge_standin import StandInJudge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("askall")
    s = Stack(tmp, [entry(SMALL), entry(QWEN), entry(QWEN, name="doomed")])
    try:
        s.start_fleet()
        s.wait_registered([m["name"] for m in s.models])
        yield s
    finally:
        s.stop()


def ask_all(fleet, tmp_path, *args, wait=True):
    cmd = [sys.executable, str(REPO / "eval/ask_all.py"), "--controller", fleet.controller, "--api-base", fleet.api_base,
           "--results-dir", str(tmp_path / "results"), "--no-progress", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def test_full_run_writes_jsonl_and_both_reports(fleet, tmp_path):
    r = ask_all(fleet, tmp_path, "--models", f"{SMALL},{QWEN}", "--max-tokens", "96", "--run", "full")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "results" / "full"
    recs = lines(run / "answers.jsonl")
    assert len(recs) == 10 and {(x["model"], x["puzzle"]) for x in recs} == {
        (m, p) for m in (SMALL, QWEN) for p in ("winter-summer", "single-dog", "who-doesnt-know", "mingming-baibai", "yisi")}
    for x in recs:
        assert x["error"] is None and x["answer"]
        assert x["finish_reason"] in ("stop", "length")
        assert x["ttft_s"] > 0 and x["latency_s"] >= x["ttft_s"]
        assert x["prompt_tokens"] > 20 and x["completion_tokens"] > 0
        assert x["completion_tokens"] <= 96 and (x["decode_tps"] or 0) > 0
    # models ran in parallel: every model's run overlaps every other model's in time
    spans = {m: (min(x["t_start"] for x in recs if x["model"] == m), max(x["t_end"] for x in recs if x["model"] == m))
             for m in (SMALL, QWEN)}
    assert spans[SMALL][0] < spans[QWEN][1] and spans[QWEN][0] < spans[SMALL][1]
    # ...and one request at a time within a model
    for m in (SMALL, QWEN):
        mine = sorted((x["t_start"], x["t_end"]) for x in recs if x["model"] == m)
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:]))

    md = (run / "report.md").read_text()
    assert "## Scores" in md and f"| {QWEN} | llama.cpp | " in md and "wall time (last session)" in md
    assert "Mean decode speed (tok/s)" in md and "#### " in md and "verdict (rules): " in md
    assert "他知道我知道你知道他不知道吗" in md
    page = (run / "report.html").read_text()
    assert "<svg" in page and "Mean decode speed" in page and 'class="card"' in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page), "the HTML must not load anything"
    assert "<script" not in page
    assert "wall time" in r.stderr and "report:" in r.stdout


def test_judge_cascade_calibration_retries_and_human_overrides(fleet, tmp_path):
    """The judge is checked and calibrated first, asked only where the rules are unsure, a failed
    judgement is retried on --resume, a human override beats both, and the report says which
    source set each score."""
    from eval.askall.grading import grade
    from eval.askall.puzzles import load_puzzles

    puzzles = {p.id: p for p in load_puzzles() if p.id in ("winter-summer", "mingming-baibai", "single-dog")}
    n_cal = sum(len(p.examples) for p in puzzles.values())
    half = StandInJudge(mode="half")
    judge = StandInJudge(mode="labels", default=0.5, fail_calls={n_cal + 1})  # its first real judgement fails
    common = ["--models", QWEN, "--puzzles", ",".join(puzzles), "--max-tokens", "64", "--judge", "stand-in"]
    try:
        r = ask_all(fleet, tmp_path, *common, "--judge-api-base", half.url, "--run", "refused")
        halves = sum(1 for p in puzzles.values() for e in p.examples if abs(e.score - 0.5) <= 0.25)
        assert r.returncode == 2 and (f"agrees with {halves} of {n_cal} labelled examples ({halves / n_cal:.0%}); "
                                      f"a judge needs 80%") in r.stderr, r.stderr
        assert not (tmp_path / "results" / "refused").exists() and len(half.grading_calls()) == n_cal
        r = ask_all(fleet, tmp_path, *common[:-1], "nope", "--judge-api-base", judge.url)
        assert r.returncode == 2 and "judge 'nope' is not registered" in r.stderr and not judge.grading_calls()

        r = ask_all(fleet, tmp_path, *common, "--judge-api-base", judge.url, "--run", "judged")
        assert r.returncode == 0, r.stderr
        assert f"agrees with {n_cal} of {n_cal} labelled examples" in r.stderr
        run = tmp_path / "results" / "judged"
        recs = lines(run / "answers.jsonl")
        unsure = {x["puzzle"] for x in recs if not grade(puzzles[x["puzzle"]], x["answer"]).confident}
        assert unsure, "the test needs an answer the rules are unsure of"
        asked = [c["messages"][-1]["content"] for c in judge.grading_calls()[n_cal:]]
        assert len(asked) == len(unsure)  # only where the rules were unsure
        judged = lines(run / "judgements.jsonl")
        assert len(judged) == len(unsure) - 1  # the failed judgement is not stored...
        md = (run / "report.md").read_text()
        assert "1 judgement(s) failed; the rules' verdict stands; --resume asks the judge again" in md
        assert "## Rules vs judge disagreements" in md  # the stand-in's 0.5 against the rules' 0
        meta = json.loads((run / "run.json").read_text())
        assert meta["grader"]["version"] == "rules-2" and len(meta["grader"]["puzzle_sha256"]) == 64
        assert meta["judge_calibration"] == {"judge": "stand-in", "agree": n_cal, "total": n_cal}

        first = sorted(unsure)[0]
        overrides = tmp_path / "overrides.toml"
        overrides.write_text(f'[[override]]\nmodel = "{QWEN}"\npuzzle = "{first}"\nscore = 1.0\n'
                             f'reason = "a human read it"\n')
        again = ask_all(fleet, tmp_path, "--resume", "--overrides", str(overrides))
        assert again.returncode == 0 and "0 to ask" in again.stderr, again.stderr
        assert len(judge.grading_calls()) == n_cal + len(unsure) + 1  # ...so it is asked again; no recalibration
        assert len(lines(run / "judgements.jsonl")) == len(unsure)
        md = (run / "report.md").read_text()
        assert "verdict (human): human: a human read it" in md and "judgement(s) failed" not in md
        assert md.count("[J]") == len(unsure) - 1 and md.count("[H]") == 1  # each answer says who graded it
        scores = md.split("## Scores")[1].split("## Speed")[0]
        assert "1.00 H" in scores and "0.50 J" in scores
        rows = (run / "report.csv").read_text().splitlines()
        assert rows[0].startswith("model,puzzle,repeat,score") and len(rows) == 1 + len(recs)
    finally:
        half.close()
        judge.close()


def test_a_tiny_real_model_is_refused_as_judge(fleet, tmp_path):
    """The failure the issue saw (a tiny judge giving 0.5 to everything, ranked above the rules):
    the real 135M model is calibrated on the labelled examples and refused, with its figure."""
    r = ask_all(fleet, tmp_path, "--models", QWEN, "--puzzles", "mingming-baibai", "--judge", SMALL, "--run", "tiny")
    assert r.returncode == 2, r.stderr
    assert re.search(rf"judge {SMALL} agrees with [0-4] of 6 labelled examples \(\d+%\); a judge needs 80%", r.stderr), r.stderr
    assert not (tmp_path / "results" / "tiny").exists()


def test_bad_input_gives_one_line_errors(fleet, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[puzzle]]\nid = "x"\nquestion = "q"\n')
    r = ask_all(fleet, tmp_path, "--puzzle-file", str(bad))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "puzzle 'x', field 'reference'" in r.stderr
    r = ask_all(fleet, tmp_path, "--controller", "http://127.0.0.1:9")
    assert r.returncode == 2 and "cannot reach the controller at http://127.0.0.1:9" in r.stderr
    r = ask_all(fleet, tmp_path, "--models", "nope-*")
    assert r.returncode == 2 and "nope-* not registered" in r.stderr
    assert not list((tmp_path / "results").glob("*/answers.jsonl"))


def test_killed_run_resumes_without_asking_twice(fleet, tmp_path):
    p = ask_all(fleet, tmp_path, "--models", f"{SMALL},{QWEN}", "--max-tokens", "64", "--run", "killed", wait=False)
    answers = tmp_path / "results" / "killed" / "answers.jsonl"
    wait_for(lambda: len(lines(answers)) >= 3, 300, "three answers")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = lines(answers)
    assert 3 <= len(before) < 10
    r = ask_all(fleet, tmp_path, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{10 - len(before)} to ask" in r.stderr
    after = lines(answers)
    assert len(after) == 10 and len({(x["model"], x["puzzle"], x["repeat"]) for x in after}) == 10
    assert after[:len(before)] == before  # earlier answers untouched
    meta = json.loads((tmp_path / "results" / "killed" / "run.json").read_text())
    assert len(meta["sessions"]) == 1  # the killed session never finished; the resumed one did
    again = ask_all(fleet, tmp_path, "--resume", "killed")  # by the run's name, in --results-dir
    assert again.returncode == 0 and "0 to ask" in again.stderr and len(lines(answers)) == 10
    by_path = ask_all(fleet, tmp_path, "--resume", str(tmp_path / "results" / "killed"))
    assert by_path.returncode == 0 and "0 to ask" in by_path.stderr
    assert ask_all(fleet, tmp_path, "--resume", "nope").returncode == 2


def test_a_restarting_worker_is_waited_for_not_burnt_through(fleet, tmp_path):
    """A worker that restarts mid-run (as supervisord restarts a crashed one): its next answers wait
    with back-off and then succeed, instead of all failing in a fraction of a second."""
    p = ask_all(fleet, tmp_path, "--models", "doomed", "--max-tokens", "32", "--timeout", "120", "--run", "restart",
                wait=False)
    answers = tmp_path / "results" / "restart" / "answers.jsonl"
    wait_for(lambda: len(lines(answers)) >= 1, 300, "doomed's first answer")
    fleet.procs["worker-doomed"].kill()
    time.sleep(3)
    fleet.start_worker("doomed")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    recs = lines(answers)
    assert len(recs) == 5 and all(x["error"] is None and x["answer"] for x in recs)
    assert sum(x.get("retries", 0) for x in recs) > 0  # it waited for the worker to come back
    fleet.wait_registered(["doomed"])


def test_a_worker_stopped_mid_run_is_recorded_as_failed(fleet, tmp_path):
    p = ask_all(fleet, tmp_path, "--max-tokens", "128", "--timeout", "30", "--run", "failing", wait=False)
    answers = tmp_path / "results" / "failing" / "answers.jsonl"
    wait_for(lambda: any(x["model"] == "doomed" for x in lines(answers)), 300, "doomed's first answer")
    fleet.procs["worker-doomed"].kill()
    out, err = p.communicate(timeout=600)
    assert p.returncode == 1, err
    recs = lines(answers)
    doomed = [x for x in recs if x["model"] == "doomed"]
    assert len(doomed) == 5 and doomed[0]["error"] is None
    failed = [x for x in doomed if x["error"]]
    assert len(failed) == 4 and failed[0]["retries"] >= 3, failed[0]  # waited with back-off, up to --timeout ...
    waited = float(re.search(r"still failing after \d+ retries over (\d+) s", failed[0]["error"]).group(1))
    assert 20 <= waited <= 60, failed[0]["error"]  # its --timeout, give or take a busy machine's back-off step
    assert all("not asked: the model was unreachable" in x["error"] for x in failed[1:])  # ... once, not per puzzle
    others = [x for x in recs if x["model"] != "doomed"]
    assert len(others) == 10 and all(x["error"] is None for x in others)
    md = (tmp_path / "results" / "failing" / "report.md").read_text()
    assert "| doomed | llama.cpp |" in md and ": error, 0.00/1" in md
    hint = re.search(r"`(python eval/ask_all.py [^`]+)`", err).group(1)  # works as printed
    assert f"--results-dir {tmp_path / 'results'} --resume failing --retry-failed" in hint
    args = hint.split()[2:]
    again = subprocess.run([sys.executable, str(REPO / "eval/ask_all.py"), *args, "--no-progress"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "Resuming" in again.stderr, again.stderr  # doomed is still down


def test_a_puzzle_dropped_in_puzzles_d_is_asked_and_graded(fleet, tmp_path):
    """The README's eval/puzzles.d/: a file put there is asked by a plain run and graded."""
    from test_grading import DROPPED

    dropped = REPO / "eval/puzzles.d" / f"zz-test-{os.getpid()}.toml"
    dropped.parent.mkdir(exist_ok=True)
    dropped.write_text(DROPPED)
    try:
        r = ask_all(fleet, tmp_path, "--models", SMALL, "--puzzles", "dropped-in", "--max-tokens", "8",
                    "--run", "dropped")
    finally:
        dropped.unlink()
    assert r.returncode == 0, r.stderr
    recs = lines(tmp_path / "results" / "dropped" / "answers.jsonl")
    assert [(x["model"], x["puzzle"]) for x in recs] == [(SMALL, "dropped-in")] and recs[0]["answer"]
    assert "dropped-in" in (tmp_path / "results" / "dropped" / "report.md").read_text()
    run = json.loads((tmp_path / "results" / "dropped" / "run.json").read_text())
    assert dropped.name in run["grader"]["puzzle_file"]
