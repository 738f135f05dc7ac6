"""The grader reads each part of an answer on its own, knows wrong readings and non-answers, and is
checked against labelled examples; eval/grade.py and the judge cascade (with a stand-in judge)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.askall.cascade import Cascade
from eval.askall.check import check_puzzles
from eval.askall.grading import grade
from eval.askall.judge import Judge, JudgeError, require_calibrated
from eval.askall.puzzles import load_puzzles
from judge_standin import StandInJudge

ROOT = Path(__file__).resolve().parent.parent
P = {p.id: p for p in load_puzzles()}


def g(pid, answer):
    return grade(P[pid], answer)


# --- each part against its own part of the answer ----------------------------------------
def test_a_sense_counts_only_on_its_own_line():
    """讽刺 explains 真有意思, not 意思意思: on the 意思意思 line it earns nothing."""
    v = g("yisi", "“意思意思”：这是讽刺。\n“真有意思”：领导觉得他很无聊。")
    assert v.score == 0, v.reason
    v = g("yisi", "“意思意思”：领导觉得他很无聊。\n“真有意思”：这是讽刺。")
    assert v.score == pytest.approx(0.11) and v.evidence[0]["anchor"] == "真有意思"


def test_generic_words_count_only_next_to_their_phrase():
    far = "“什么意思”是领导在问话。领导很生气，他觉得小明太奇怪了，这件事以后还要再说，总之他的用意不明。"
    assert g("yisi", far).score == 0  # 用意 is 30+ characters away from 什么意思
    assert g("yisi", "“什么意思”：问他的用意。").score == pytest.approx(0.12)


def test_a_lone_generic_word_beside_a_wrong_reading_earns_nothing():
    v = g("winter-summer", "冬天要保暖，夏天要舒适，两句都是说根据自己的情况适度穿衣。")
    assert v.score == 0 and "both seasons mean dress moderately" in v.reason and v.confident


def test_stating_both_readings_then_picking_one_loses_the_credit():
    v = g("winter-summer", "这两句话的意思是一样的。不过冬天要尽量多穿，夏天要尽量少穿。")
    assert v.score == 0 and "no credit for winter" in v.reason
    assert {e["kind"] for e in v.evidence} == {"cancelled", "wrong"}
    assert g("winter-summer", "这两句话的意思不一样：冬天要尽量多穿，夏天要尽量少穿。").score == 1  # negated


def test_circular_non_answers_do_not_match():
    v = g("who-doesnt-know", "在这个绕口令中，到底谁不知道的事情是“他不知道的事情”。")
    assert v.score == 0 and "restates the question" in v.reason


def test_near_miss_wording_matches():
    assert g("yisi", "“小意思”：没有什么大不了的。").score == pytest.approx(0.11)  # rule says 没什么大不了
    assert g("single-dog", "第一，他看不起別人；第二，別人都瞧不上他。").score == 0  # traditional 別 is not 别: no magic
    assert g("winter-summer", "「冬天」穿得越多越好，「夏天」穿地越少越好。").score == 1  # 得/地 alike, any quotes


def test_a_rule_never_runs_across_a_sentence_end(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[puzzle]]\nid = "x"\nquestion = "冬天穿什么？"\nreference = "冬天要多穿。"\n'
                 "[[puzzle.criteria]]\nname = \"winter: more\"\npoints = 1\npatterns = ['冬天.{0,20}多穿']\n")
    p = load_puzzles(f)[0]
    assert grade(p, "冬天要多穿。").score == 1
    assert grade(p, "冬天很冷。夏天就别多穿了。").score == 0


def test_evidence_offsets_point_into_the_answer_as_written():
    a = "1. “什么意思”：问他的 用意。\n2. “意思意思”：送点 小礼物。"
    v = g("yisi", a)
    for e in v.evidence:
        assert a[e["start"]:e["end"]] == e["matched"]
    assert [e["matched"] for e in v.evidence] == ["用意", "小礼"]


def test_confidence_decides_who_grades():
    assert g("mingming-baibai", "白白喜欢明明。").confident
    assert g("mingming-baibai", "无法确定。").confident  # a known wrong reading
    unsure = g("mingming-baibai", "这是一个关于两个人的句子，他们的关系很复杂。")
    assert not unsure.confident and "meets no criterion" in unsure.reason


# --- the rule check ------------------------------------------------------------------------
def test_the_shipped_puzzles_pass_their_own_check():
    checks, warnings = check_puzzles(list(P.values()))
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    kinds = {pid: {e.kind for e in p.examples} for pid, p in P.items()}
    assert all({"right", "wrong", "echo"} <= k for k in kinds.values()), kinds
    assert all("hedge" in kinds[p.id] for p in P.values() if p.exclusive or p.wrong)
    assert all("partial" in kinds[p.id] for p in P.values() if len(p.criteria) > 1)
    assert warnings == []


def check_cli(*args):
    return subprocess.run([sys.executable, "eval/ask_all.py", "--check-rules", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


PUZZLE = '''[[puzzle]]
id = "mine"
question = "明天会不会下雨？"
reference = "明天下雨。"
[[puzzle.criteria]]
name = "rain"
points = 1
patterns = ['下雨']
[[puzzle.examples]]
kind = "right"
score = 1
answer = "会下雨。"
[[puzzle.examples]]
kind = "wrong"
score = 0
answer = "不会下雨。"
'''


def test_check_rules_fails_on_a_mislabelled_example_and_names_it(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(PUZZLE)
    r = check_cli(str(f))
    assert r.returncode == 1, r.stdout
    assert "FAIL mine: example 2 (wrong): expected 0, rules give 1 right" in r.stdout and "Fix:" in r.stdout
    f.write_text(PUZZLE.replace("patterns = ['下雨']", "patterns = ['(?<!不会)下雨']"))
    r = check_cli(str(f))
    assert r.returncode == 0 and "4 of 4 checks pass" in r.stdout, r.stdout
    assert "warning: puzzle 'mine' has no echo, hedge" not in r.stdout  # hedge needs a wrong reading to exist
    assert "no echo" in r.stdout


def test_check_rules_fails_when_the_reference_misses_or_the_question_scores(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(PUZZLE.replace('reference = "明天下雨。"', 'reference = "是的。"'))
    r = check_cli(str(f))
    assert r.returncode == 1 and "FAIL mine: reference: expected 1, rules give 0" in r.stdout
    f.write_text(PUZZLE.replace("patterns = ['下雨']", "patterns = ['雨']").replace('answer = "不会下雨。"', 'answer = "晴天。"'))
    r = check_cli(str(f))
    assert r.returncode == 1 and "FAIL mine: bare question: expected 0" in r.stdout  # '雨' is the question's own word


def test_check_rules_takes_several_files_and_flags_points_below_one(tmp_path):
    f = tmp_path / "low.toml"
    f.write_text(PUZZLE.replace("points = 1", "points = 0.5").replace("score = 1\n", "score = 0.5\n")
                 .replace("patterns = ['下雨']", "patterns = ['(?<!不会)下雨']"))
    r = check_cli(str(ROOT / "eval/puzzles.toml"), str(f))
    assert r.returncode == 0, r.stdout
    n = sum(len(p.examples) + 2 for p in P.values())  # each example, the reference, the bare question
    assert f"eval/puzzles.toml: {n} of {n} checks pass" in r.stdout
    assert "criteria add up to 0.5 points, not 1" in r.stdout


# --- eval/grade.py -------------------------------------------------------------------------
def grade_cli(tmp_path, lines, *args, raw=None):
    f = tmp_path / "answers.jsonl"
    f.write_text(raw if raw is not None else "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return subprocess.run([sys.executable, "eval/grade.py", str(f), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_grade_py_writes_one_line_per_answer(tmp_path):
    r = grade_cli(tmp_path, [{"id": "a", "puzzle_id": "mingming-baibai", "answer": "白白喜欢明明。"},
                             {"id": 2, "puzzle_id": "yisi", "answer": "“意思意思”：送点小礼物。", "finish_reason": "length"},
                             {"id": "c", "puzzle_id": "who-doesnt-know", "answer": None}])
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", 2, "c"]
    assert out[0]["score"] == 1 and out[0]["label"] == "right" and out[0]["source"] == "rules"
    assert out[0]["evidence"][0]["matched"] == "白白喜欢明明"
    assert out[1]["score"] == pytest.approx(0.11) and out[1]["cut_off"] is True and not out[1]["confident"]
    assert out[2]["label"] == "error"
    assert all(set(o) >= {"id", "score", "label", "source", "evidence", "reason"} for o in out)


@pytest.mark.parametrize("raw, message", [
    ("not json\n", "line 1: not JSON"),
    ('{"id": 1, "answer": "x"}\n', "line 1: no puzzle_id"),
    ('{"id": 1, "puzzle_id": "nope", "answer": "x"}\n', "no puzzle 'nope' in the puzzle file"),
    ('{"id": 1, "puzzle_id": "yisi", "answer": 3}\n', "answer must be a string"),
])
def test_grade_py_bad_input_is_one_line(tmp_path, raw, message):
    r = grade_cli(tmp_path, [], raw=raw)
    assert r.returncode == 2 and message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


# --- the judge cascade -----------------------------------------------------------------------
def judge_for(standin):
    from openai import OpenAI

    return Judge(OpenAI(base_url=standin.url, api_key="x", max_retries=0), standin.name)


@pytest.fixture
def standin():
    made = []

    def make(**kw):
        j = StandInJudge(**kw)
        made.append(j)
        return j
    yield make
    for j in made:
        j.close()


def test_the_judge_is_asked_only_where_the_rules_are_unsure(standin):
    j = standin(mode="labels", default=0.5)
    c = Cascade(list(P.values()), judge_for(j))
    sure = c.grade({"model": "m", "puzzle": "mingming-baibai", "repeat": 0, "answer": "白白喜欢明明。"})
    assert sure.final.source == "rules" and len(j.grading_calls()) == 0
    unsure = c.grade({"model": "m", "puzzle": "mingming-baibai", "repeat": 0, "answer": "他们的关系很复杂。"})
    assert unsure.final.source == "judge:stand-in" and unsure.final.score == 0.5
    assert unsure.rules.score == 0 and len(j.grading_calls()) == 1
    c.grade({"model": "m", "puzzle": "mingming-baibai", "repeat": 0, "answer": "他们的关系很复杂。"})
    assert len(j.grading_calls()) == 1  # cached


def test_failed_judgements_are_not_cached_and_are_asked_again(standin):
    j = standin(mode="labels", fail_calls={1})
    c = Cascade(list(P.values()), judge_for(j))
    rec = {"model": "m", "puzzle": "single-dog", "repeat": 0, "answer": "这是一个有趣的问题。"}
    first = c.grade(rec)
    assert first.final.source == "rules" and first.judged.label == "error"
    second = c.grade(rec)
    assert second.final.source == "judge:stand-in" and len(j.grading_calls()) == 2


def test_an_inconsistent_judge_verdict_is_not_used(standin):
    j = standin(mode="inconsistent")
    v = judge_for(j).verdict(P["yisi"], "随便说说。")
    assert v.label == "error" and "says 'right' but scores 0.2" in v.reason


def test_a_judge_that_gives_half_to_everything_is_refused_with_its_figure(standin):
    cal = judge_for(standin(mode="half")).calibrate(list(P.values()))
    n = sum(len(p.examples) for p in P.values())
    with pytest.raises(JudgeError, match=rf"agrees with \d+ of {n} labelled examples \(\d+%\); a judge needs 80%"):
        require_calibrated(cal)
    good = judge_for(standin(mode="labels")).calibrate(list(P.values()))
    require_calibrated(good)
    assert good.agree == good.total == n


def test_a_judge_must_be_registered_and_answering(standin):
    from openai import OpenAI

    j = standin(mode="labels")
    Judge(OpenAI(base_url=j.url, api_key="x", max_retries=0), "stand-in").check()
    with pytest.raises(JudgeError, match="judge 'qwen-judge' is not registered at .* \\(registered: stand-in\\)"):
        Judge(OpenAI(base_url=j.url, api_key="x", max_retries=0), "qwen-judge").check()
    with pytest.raises(JudgeError, match="does not answer"):
        Judge(OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0), "x").check()


def test_grade_py_with_a_judge(tmp_path, standin):
    j = standin(mode="labels", default=0.5)
    r = grade_cli(tmp_path, [{"id": 1, "puzzle_id": "mingming-baibai", "answer": "他们的关系很复杂。"},
                             {"id": 2, "puzzle_id": "mingming-baibai", "answer": "白白喜欢明明。"}],
                  "--judge", "stand-in", "--judge-api-base", j.url)
    assert r.returncode == 0, r.stderr
    assert "agrees with 6 of 6 labelled examples" in r.stderr  # calibrated on the puzzles it grades
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert out[0]["source"] == "judge" and out[0]["judge"] == "stand-in" and out[0]["score"] == 0.5
    assert out[1]["source"] == "rules"
    bad = grade_cli(tmp_path, [{"id": 1, "puzzle_id": "yisi", "answer": "x"}], "--judge", "stand-in",
                    "--judge-api-base", standin(mode="half").url)
    assert bad.returncode == 2 and "a judge needs 80%" in bad.stderr


def test_the_html_report_marks_the_evidence_in_the_answer_as_written():
    from eval.askall.report import highlight

    answer = "<b>答案</b>：这两句话的意思是一样的。不过冬天要尽量多穿。"
    v = g("winter-summer", answer)
    page = highlight(answer, v.evidence)
    assert page.startswith("&lt;b&gt;答案&lt;/b&gt;")  # escaped, never rendered
    assert '<mark class="ev-wrong" title="wrong reading: the two sentences mean the same">两句话的意思是一样</mark>' in page
    assert '<mark class="ev-cancelled" title="met but contradicted: winter means wear as much as you can">尽量多</mark>' in page


# --- agreement with a careful reader (eval/labelled/answers.jsonl) --------------------------
def agreement_cli(path, *args):
    return subprocess.run([sys.executable, "eval/grade.py", "--agreement", str(path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_rules_agree_with_hand_scores_on_the_held_out_answers():
    r = agreement_cli(ROOT / "eval/labelled/answers.jsonl", "--min-agreement", "0.9")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("holdout: 19 of 21 agree (90%)"), r.stdout
    assert "tune: 40 of 40 agree" in r.stdout


def test_the_agreement_check_fails_when_the_grading_does(tmp_path):
    rows = [json.loads(x) for x in (ROOT / "eval/labelled/answers.jsonl").read_text().splitlines()]
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_text("\n".join(json.dumps({**x, "human": round(1 - x["human"], 2)}, ensure_ascii=False)
                                 for x in rows if x["split"] == "holdout"))
    r = agreement_cli(flipped, "--min-agreement", "0.9")
    assert r.returncode == 1 and "DISAGREE seed-001-qwen-winter: by hand 0, graded 1" in r.stdout
