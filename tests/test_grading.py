"""Grading rules on real answers from the seed reports (../shared/seeds): right, wrong, echoing, hedging."""
import pytest

from eval.askall.grading import grade
from eval.askall.puzzles import PuzzleFileError, load_puzzles

P = {p.id: p for p in load_puzzles()}


def g(pid, answer):
    return grade(P[pid], answer)


def test_the_file_holds_the_five_seed_puzzles_verbatim():
    assert list(P) == ["winter-summer", "single-dog", "who-doesnt-know", "mingming-baibai", "yisi"]
    assert P["who-doesnt-know"].question == "他知道我知道你知道他不知道吗？这句话里，到底谁不知道"
    assert P["mingming-baibai"].question == "明明明明明白白白喜欢他，可她就是不说。这句话里，明明和白白谁喜欢谁？"
    assert P["yisi"].question.endswith('请问：以上"意思"分别是什么意思。')
    assert all(p.max_score == pytest.approx(1.0) for p in P.values())


# --- 1. winter / summer -------------------------------------------------------------
QWEN_WINTER = ("这两句话的区别在于它们强调的是在不同季节中的穿衣习惯或策略。\"冬天:能穿多少穿多少\"这句话强调的是在寒冷的冬季,"
               "人们应该尽可能地多穿衣服以保暖,因为天气冷。而\"夏天: 能穿多少穿多少\"这句话则是在炎热的夏季,"
               "人们也应该尽量少穿衣服以保持凉爽,因为天气热。")
GLM_WINTER = "这两句话的区别在于,第一句是关于冬天的,而第二句是关于夏天的。虽然两句话都在描述穿多少衣服,但是它们所针对的季节不同。"
DEEPSEEK_WINTER = ("“冬天：能穿多少穿多少”和“夏天：能穿多少穿多少”这两句话的意思是一样的，都是表达在不同的季节里，"
                   "人们可以根据自己的需要和感觉来决定穿多少衣服。")


def test_winter_summer_right_and_wrong():
    v = g("winter-summer", QWEN_WINTER)
    assert v.label == "right" and v.score == 1.0
    assert [e["anchor"] for e in v.evidence] == ["冬季", "夏季"]  # each credited on its own season
    assert QWEN_WINTER[v.evidence[0]["start"]:v.evidence[0]["end"]] == v.evidence[0]["matched"] == "尽可能地多"
    assert "尽量少" in v.evidence[1]["matched"]
    assert g("winter-summer", GLM_WINTER).score == 0  # only "the seasons differ"
    assert g("winter-summer", DEEPSEEK_WINTER).score == 0  # "the same meaning"
    v = g("winter-summer", "冬天尽可能多穿保暖。夏天嘛，也一样。")
    assert v.label == "partial" and v.score == 0.5 and "missed: summer" in v.reason


def test_quoting_the_phrase_is_not_understanding_it():
    """能穿多少穿多少 contains 穿多 and 少穿: quoting it must not score."""
    v = g("winter-summer", "冬天：能穿多少穿多少；夏天：能穿多少穿多少。两句话说的季节不一样，冬天和夏天都要能穿多少穿多少。")
    assert v.score == 0, v.reason


def test_echo_scores_zero():
    q = P["winter-summer"].question
    v = g("winter-summer", q)
    assert v.label == "echo" and v.score == 0
    assert g("winter-summer", "[gMASK]sop " + q + " 嗯。").label == "echo"


# --- 2. single dog --------------------------------------------------------------------
DEEPSEEK_DOG = ("第一句话是“单身狗产生的原因有两个, 一是谁都看不上, 二是谁都看不上。”这句话的意思是单身狗的产生有以下两个原因, "
                "第一个原因是单身狗看不上任何人, 第二个原因是单身狗被所有人看不上。")
QWEN_DOG = ("这两句话的区别在于:\"单身狗产生的原因有两个\"是在客观地陈述一种现象或事实,而\"谁都看不上,二是谁都看不上自己\""
            "则是主观地表达了一个人的态度和感受。第一个句子是中立的,第二个句子则带有个人情感色彩。")
GLM_DOG_ECHO = "请说出以下两句话区别在哪里？单身狗产生的原因有两个，一是谁都看不上，二是谁都看不上。这两个句子在表达意思上有什么区别？"


def test_single_dog():
    v = g("single-dog", DEEPSEEK_DOG)
    assert v.label == "right", v.reason
    assert g("single-dog", QWEN_DOG).score == 0
    assert g("single-dog", GLM_DOG_ECHO).score == 0
    assert g("single-dog", "一个是看不上别人，另一个是别人看不上自己。").label == "right"  # ChatGLM3 in report 002
    assert g("single-dog", "原因是他眼光太高，没有什么别的。").score == 0.5


# --- 3. who doesn't know ----------------------------------------------------------------
QWEN_WHO = "这句话的含义是: 这个人知道我知道你知道他不知道。因此, 这个人的状态是知道我们知道他知道他不知道。"
GLM_WHO = "在这个问题中,\"他\"是指一个人、根据问题的表述,无法确定\"我不知道\"是指哪方面的内容。因此,无法确定\"他\"是否知道这些信息。"
GLM_WHO_ECHO = ("他知道我知道你知道他不知道吗? 这句话里, 到底谁不知道的事情是什么? 这句话是一个典型的悖论, "
                "名为“知道你知道我知道你知道”悖论。我们无法确定到底是谁不知道这件事情。")


def test_who_doesnt_know():
    assert g("who-doesnt-know", "是“他”不知道。这句话问的是：他知道“我知道你知道他不知道”这件事吗？").label == "right"
    assert g("who-doesnt-know", "答案：他。").label == "right"
    assert g("who-doesnt-know", QWEN_WHO).score == 0
    assert g("who-doesnt-know", GLM_WHO).score == 0
    assert g("who-doesnt-know", GLM_WHO_ECHO).score == 0


def test_stating_both_answers_is_a_hedge():
    v = g("who-doesnt-know", "可能是他不知道，也可能是我不知道。")
    assert v.label == "hedge" and v.score == 0 and "states more than one answer" in v.reason
    assert v.in_words() == ("It gives more than one answer to 'who doesn't know' (“是他不知道”, “是我不知道”): "
                            "an answer that hedges scores 0.")  # the web page's words, without option labels


# --- 4. 明明 and 白白 --------------------------------------------------------------------
DEEPSEEK_MING = ("答案: 白白喜欢明明。解释: 通过句子分析, “明明明明白白白白喜欢他”, 可以理解为“白白喜欢他”, "
                 "所以, 白白喜欢明明。")
GLM_MING = "明明明明明白白白喜欢他,可她就是不说。 这句话里,明明和白白谁喜欢谁? 这句话里,明明喜欢白白。明明明白白白喜欢他,可她就是不说。"


def test_mingming_baibai():
    assert g("mingming-baibai", DEEPSEEK_MING).label == "right"
    v = g("mingming-baibai", GLM_MING)
    assert v.score == 0 and v.label == "wrong" and "mingming_likes_baibai" in v.reason
    assert g("mingming-baibai", "根据句子中的信息・无法确定明明和白白谁喜欢谁。").score == 0
    v = g("mingming-baibai", "可能是明明喜欢白白，也可能是白白喜欢明明。")
    assert v.label == "hedge"
    assert g("mingming-baibai", "不是明明喜欢白白，而是白白喜欢明明。").label == "right"  # a negated option is not stated


# --- 5. 意思 -----------------------------------------------------------------------------
GLM_YISI = """1. 领导: 你这是什么意思? 意思: 这里的意思是指含义、目的或作用。领导在问小明到底是什么意思。
2. 小明:没什么意思。意思意思。 意思:这里的意思是表示没有特别的含义、目的或作用。
3. 领导: 你这就不够意思了。 意思: 这里的意思是指不够充分、不够满足。领导认为小明的回答不够充分,表示不满。
4. 小明:小意思,小意思。-意思:这里的意思是表示事情不太大,没有太大意义。小明在回应领导的问题,表示自己的回答只是一个小事情。
5. 领导: 你这人真有意思。 意思: 这里的意思是表示对某人的行为、性格或想法表示赞赏。领导认为小明很有趣,很有意思。
6. 小明:其实也没有别的意思。 意思:这里的意思是表示自己的回答并没有其他特别的意义。
7. 领导:我就不好意思了。 意思: 这里的意思是表示对某事或某人的态度。
8. 小明:是我不好意思。 -"""
DEEPSEEK_YISI = "答案： 1. 意思； 2. 强调； 3. 重要； 4. 情境； 5. 惹人发笑； 6. 强调； 7. 强调； 8. 惹人发笑； 9. 强调； 10. 强调"
GOOD_YISI = """1. 什么意思：问对方的用意。2. 没什么意思：没有特别的用意。3. 意思意思：送点小礼物，表示一下心意。
4. 不够意思：不够朋友。5. 小意思：微不足道的小东西。6. 真有意思：这人真有趣，会来事。7. 没有别的意思：没有别的企图。
8. 那我就不好意思了：难为情，却之不恭就收下了。9. 是我不好意思：小明客气，表示歉意。"""


def test_yisi_credit_per_sense_in_order():
    v = g("yisi", GOOD_YISI)
    assert v.label == "right" and len(v.evidence) == 9
    glm = g("yisi", GLM_YISI)
    assert glm.label == "partial" and 0.3 < glm.score < 0.8, glm.reason
    assert "8 那我就不好意思了" in glm.reason.split("missed:")[1]  # it never explained sense 8
    assert g("yisi", DEEPSEEK_YISI).score == 0
    shuffled = g("yisi", "9. 小明表示歉意。1. 领导问什么东西的用意。")
    assert shuffled.score == pytest.approx(0.11)  # 用意 is generic: away from its phrase it counts for nothing
    assert not shuffled.confident and "never quotes" in shuffled.reason  # so a judge is asked


def test_errors_and_missing_answers():
    v = grade(P["yisi"], None, error="APIConnectionError: worker gone")
    assert v.label == "error" and "worker gone" in v.reason


def test_malformed_puzzle_files_name_the_problem(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[puzzle]]\nid = "x"\nquestion = "q"\nreference = "r"\n[[puzzle.criteria]]\nname = "c"\npoints = 2\npatterns = ["a"]\n')
    with pytest.raises(PuzzleFileError, match="puzzle 'x', field 'criteria.0.points'"):
        load_puzzles(f)
    f.write_text('[[puzzle]]\nid = "x"\nquestion = "q"\nreference = "r"\n[[puzzle.criteria]]\nname = "c"\npoints = 1\npatterns = ["(a"]\n')
    with pytest.raises(PuzzleFileError, match="pattern '\\(a' is not a valid regular expression"):
        load_puzzles(f)
    f.write_text("[[puzzle]\n")
    with pytest.raises(PuzzleFileError, match="not valid TOML"):
        load_puzzles(f)
    f.write_text('title = "nothing"\n')
    with pytest.raises(PuzzleFileError, match="no \\[\\[puzzle\\]\\] tables"):
        load_puzzles(f)


def test_judge_reply_must_be_consistent():
    from eval.askall.judge import parse_reply

    assert parse_reply('好的。{"verdict": "partial", "score": 0.5, "reason": "只答对了冬天"}') == ("partial", 0.5, "只答对了冬天")
    with pytest.raises(ValueError, match="no JSON object"):
        parse_reply("I think it is right.")
    with pytest.raises(ValueError, match="outside 0..1"):
        parse_reply('{"verdict": "right", "score": 7, "reason": "x"}')
    with pytest.raises(ValueError, match="says 'right' but scores 0.2"):
        parse_reply('{"verdict": "right", "score": 0.2, "reason": "x"}')
    with pytest.raises(ValueError, match="reason says the answer is wrong"):
        parse_reply('{"verdict": "right", "score": 1, "reason": "答案错误，白白并不喜欢明明"}')
    with pytest.raises(ValueError, match="reason says the answer is right"):
        parse_reply('{"verdict": "wrong", "score": 0, "reason": "完全正确"}')


DROPPED = """
[[puzzle]]
id = "dropped-in"
question = "Say the word ORANGE and nothing else."
reference = "ORANGE"

[[puzzle.criteria]]
name = "says orange"
points = 1.0
patterns = ['(?i)orange']
"""


def test_a_puzzle_file_dropped_in_puzzles_d_joins_the_default_set(tmp_path):
    """eval/puzzles.d/*.toml is part of the default set: ask_all and the web UI's Puzzles tab get
    its puzzles after eval/puzzles.toml's, graded by their own rules; an id used twice is refused."""
    from eval.askall.grading import grade
    from eval.askall.puzzles import PuzzleFileError, file_hash, load_puzzles, puzzle_files

    (tmp_path / "mine.toml").write_text(DROPPED)
    ids = [p.id for p in load_puzzles(extra_dir=tmp_path)]
    assert ids[:-1] == [p.id for p in load_puzzles(extra_dir=tmp_path / "none")] and ids[-1] == "dropped-in"
    assert puzzle_files(extra_dir=tmp_path)[-1] == tmp_path / "mine.toml"
    assert file_hash(extra_dir=tmp_path) != file_hash(extra_dir=tmp_path / "none")  # runs record the set
    dropped = load_puzzles(extra_dir=tmp_path)[-1]
    assert grade(dropped, "ORANGE").score == 1 and grade(dropped, "apple").score == 0
    (tmp_path / "twice.toml").write_text(DROPPED)
    with pytest.raises(PuzzleFileError, match="'dropped-in' appears twice"):
        load_puzzles(extra_dir=tmp_path)
