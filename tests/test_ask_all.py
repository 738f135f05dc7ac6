"""eval/ask_all.py end to end: the real script against the real stack on the small default models."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import QWEN, REPO, SMALL, Stack, entry, wait_for

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


class StandInJudge:
    """An OpenAI-compatible endpoint that grades every answer 0.5 and counts the calls: the judge
    plumbing (asked once per answer, cached across --resume, shown with its source, beaten by a
    human override) is tested here; grading quality is tested on the rules."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls.append(body)
                reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                        "role": "assistant", "content": '{"score": 0.5, "reason": "stand-in judge"}'}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_human_overrides_win_and_a_judge_grades_too(fleet, tmp_path):
    judge = StandInJudge()
    try:
        r = ask_all(fleet, tmp_path, "--models", QWEN, "--puzzles", "winter-summer,mingming-baibai", "--max-tokens",
                    "64", "--judge", "stand-in", "--judge-api-base", judge.url, "--run", "judged")
        assert r.returncode == 0, r.stderr
        run = tmp_path / "results" / "judged"
        judged = lines(run / "judgements.jsonl")
        assert len(judge.calls) == 2 and {j["puzzle"] for j in judged} == {"winter-summer", "mingming-baibai"}
        assert all(j["verdict"]["score"] == 0.5 and j["verdict"]["source"] == "judge:stand-in" for j in judged)
        prompts = [c["messages"][0]["content"] for c in judge.calls]
        assert any("能穿多少穿多少" in q for q in prompts) and any("明明" in q for q in prompts)  # puzzles reach it
        md = (run / "report.md").read_text()
        assert md.count("verdict (judge:stand-in): judge stand-in: stand-in judge") == 2
        settings = json.loads((run / "run.json").read_text())["settings"]
        assert settings["judge_api_key_env"] == "JUDGE_API_KEY"  # kept, so a resumed run judges with the same key

        overrides = tmp_path / "overrides.toml"
        overrides.write_text(f'[[override]]\nmodel = "{QWEN}"\npuzzle = "mingming-baibai"\nscore = 1.0\n'
                             f'reason = "a human read it"\n')
        again = ask_all(fleet, tmp_path, "--resume", "--overrides", str(overrides))
        assert again.returncode == 0 and "0 to ask" in again.stderr
        assert len(judge.calls) == 2 and len(lines(run / "judgements.jsonl")) == 2  # judged once, not again
        md = (run / "report.md").read_text()
        assert "verdict (human): human: a human read it" in md
        scores = md.split("## Scores")[1].split("## Speed")[0]
        assert f"| {QWEN} | 0.50 | 1.00 |" in scores  # judge on winter-summer, the human on mingming-baibai
    finally:
        judge.server.shutdown()


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


def test_a_worker_stopped_mid_run_is_recorded_as_failed(fleet, tmp_path):
    p = ask_all(fleet, tmp_path, "--max-tokens", "128", "--run", "failing", wait=False)
    answers = tmp_path / "results" / "failing" / "answers.jsonl"
    wait_for(lambda: any(x["model"] == "doomed" for x in lines(answers)), 300, "doomed's first answer")
    fleet.procs["worker-doomed"].kill()
    out, err = p.communicate(timeout=600)
    assert p.returncode == 1, err
    recs = lines(answers)
    doomed = [x for x in recs if x["model"] == "doomed"]
    assert len(doomed) == 5 and doomed[0]["error"] is None
    assert any(x["error"] for x in doomed[1:])
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
