"""Votes: FastChat's log format, and ratings from FastChat's monitor code."""
from fastchat.conversation import get_conv_template as conversation_for

from deploy.registry import templates  # noqa: F401  (registers qwen2.5 with FastChat)
from deploy.webui.votes import MIN_BATTLES, VoteLog, category, names_itself, state_dict


def states(a, b, question="你好", answers=None):
    out = []
    for m, said in zip((a, b), answers or ("Hi!", "Hello!")):
        c = conversation_for("qwen2.5")
        c.append_message(c.roles[0], question)
        c.append_message(c.roles[1], said)
        out.append(state_dict(c, f"id-{m}", m))
    return out


def test_votes_are_fastchat_conv_logs(tmp_path):
    from fastchat.serve.monitor.clean_battle_data import read_file

    log = VoteLog(tmp_path)
    log.record("leftvote", ["a", "b"], states("a", "b"), "127.0.0.1", anony=False)
    log.record("tievote", ["a", "b"], states("a", "b"), "127.0.0.1", anony=True)
    (path,) = log.files()
    assert path.name.endswith("-conv.json")
    rows = read_file(str(path))  # FastChat's own reader
    assert [r["type"] for r in rows] == ["leftvote", "tievote"]
    assert rows[1]["models"] == ["", ""] and rows[1]["states"][0]["model_name"] == "a"
    assert [(b["model_a"], b["model_b"], b["winner"], b["anony"]) for b in log.battles()] == [
        ("a", "b", "model_a", False), ("a", "b", "tie", True)]


def test_leaderboard_ranks_with_intervals_and_pairwise_wins(tmp_path):
    log = VoteLog(tmp_path, bootstrap_rounds=50)
    for kind, pair in [("leftvote", ("a", "b"))] * 4 + [("rightvote", ("b", "a"))] * 2 + \
                      [("leftvote", ("b", "a")), ("tievote", ("a", "b")), ("leftvote", ("b", "c")), ("rightvote", ("a", "c"))]:
        log.record(kind, list(pair), states(*pair), "127.0.0.1", anony=True)
    log.record("rightvote", ["a", "b"], states("a", "b"), "127.0.0.1", anony=False)  # names shown: not ranked
    lb = log.leaderboard()
    assert (lb.n_votes, lb.n_named) == (10, 1)
    order = [r["model"] for r in lb.ratings]
    assert order.index("a") < order.index("b")
    for r in lb.ratings:
        if r["battles"] >= MIN_BATTLES:
            assert r["ci_low"] <= r["rating"] <= r["ci_high"]
    a = next(r for r in lb.ratings if r["model"] == "a")
    assert (a["battles"], a["wins"]) == (9, 6)
    header, *rows = lb.pairwise
    row_a = next(r for r in rows if r[0] == "a")
    assert row_a[header.index("b")] == "0.86 (6/7)"  # a beat b in 6 of the 7 decided a-b battles (not the tie)
    assert row_a[header.index("c")] == "0.00 (0/1)" and row_a[header.index("a")] == "–"
    c = next(r for r in lb.ratings if r["model"] == "c")
    assert c["battles"] == 2 < MIN_BATTLES and c["rating"] is None and c["ci_low"] is None  # no rating yet
    assert lb.ratings[-1] is c  # listed after the rated ones
    assert log.leaderboard() is lb  # cached until the log changes


def test_one_vote_is_enough_to_show_something(tmp_path):
    log = VoteLog(tmp_path, bootstrap_rounds=10)
    assert log.leaderboard().ratings == []
    log.record("leftvote", ["a", "b"], states("a", "b"), "", anony=False)
    assert log.leaderboard().ratings == [] and log.leaderboard().n_named == 1  # side-by-side: not ranked
    log.record("leftvote", ["a", "b"], states("a", "b"), "", anony=True)
    lb = log.leaderboard()
    assert {r["model"] for r in lb.ratings} == {"a", "b"} and lb.n_votes == 1
    assert not lb.rated and all(r["rating"] is None for r in lb.ratings)  # one vote: counted, not rated
    header, *rows = lb.pairwise
    assert next(r for r in rows if r[0] == "a")[header.index("b")] == "1.00 (1/1)"  # not "–" for sparse data


def test_default_picks_put_the_one_request_at_a_time_backend_last(tmp_path):
    """The page's default Model A and B come from this order: alphabetically the transformers copy
    of Qwen would be Model B, the slowest model of the fleet (its backend does not batch)."""
    import asyncio

    from deploy.webui.arena import Arena

    backends = {"qwen-0.5b": ["batching", "json"], "qwen-0.5b-hf": ["embeddings"], "smol": ["batching"]}

    class Workers:  # what the controller and each worker's /fleet_info answer
        async def worker_address(self, model):
            return f"http://w/{model}"

        async def worker_info(self, addr):
            return {"features": backends[addr.rsplit("/", 1)[1]]}

    arena = Arena(Workers(), VoteLog(tmp_path))
    assert asyncio.run(arena.quick_first(sorted(backends))) == ["qwen-0.5b", "smol", "qwen-0.5b-hf"]


def test_the_ratings_come_before_the_intervals(tmp_path):
    """The page shows a new vote at once (ratings, counts, pairwise) and the bootstrap intervals,
    a fit per round, when they are ready: leaderboard(wait=False) gives the first without them."""
    log = VoteLog(tmp_path, bootstrap_rounds=20)
    for kind, pair in [("leftvote", ("a", "b")), ("rightvote", ("a", "c")), ("tievote", ("b", "c"))] * 3:
        log.record(kind, list(pair), states(*pair), "", anony=True)
    quick = log.leaderboard(wait=False)
    assert not quick.intervals and all(r["ci_low"] is None and r["ci_high"] is None for r in quick.ratings)
    full = log.leaderboard()
    assert full.intervals and all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in full.ratings)
    strip = lambda lb: [{k: v for k, v in r.items() if not k.startswith("ci_")} for r in lb.ratings]  # noqa: E731
    assert strip(quick) == strip(full) and quick.pairwise == full.pairwise and quick.n_votes == full.n_votes == 9
    assert log.leaderboard(wait=False) is full  # once computed, the full one is what the page gets


def test_a_battle_where_a_model_named_itself_is_left_out_and_counted(tmp_path):
    log = VoteLog(tmp_path, bootstrap_rounds=5)
    for _ in range(MIN_BATTLES):
        log.record("leftvote", ["qwen2.5-7b", "smollm2-135m"], states("qwen2.5-7b", "smollm2-135m"), "", anony=True)
    named = states("qwen2.5-7b", "smollm2-135m", answers=("我是通义千问，由阿里云开发。", "Hello!"))
    log.record("rightvote", ["qwen2.5-7b", "smollm2-135m"], named, "", anony=True)
    lb = log.leaderboard()
    assert (lb.n_votes, lb.n_discarded) == (MIN_BATTLES, 1) and lb.rated
    assert [r["battles"] for r in lb.ratings] == [MIN_BATTLES, MIN_BATTLES]


def test_who_names_itself():
    assert names_itself("qwen2.5-coder-0.5b-instruct", "I am Qwen, created by Alibaba Cloud.")
    assert names_itself("chatglm3-6b", "我是人工智能助手 ChatGLM3-6B，由智谱 AI 训练。")
    assert names_itself("deepseek-r1-distill-qwen-1.5b", "I'm DeepSeek-R1.")
    assert names_itself("smollm2-135m-instruct", "I'm SmolLM, made by Hugging Face.")
    assert not names_itself("smollm2-135m-instruct", "I am Qwen.")  # another model's name is no giveaway of its own
    assert not names_itself("qwen2.5-coder-0.5b-instruct", "北京是中国的首都。")


def test_each_category_has_its_own_board(tmp_path):
    assert category("写一个Python函数计算斐波那契数列") == "code" and category("def f(x): return x") == "code"
    assert category("明明和白白谁喜欢谁？") == "chinese" and category("What is the capital of France?") == "other"
    log = VoteLog(tmp_path, bootstrap_rounds=5)
    for _ in range(MIN_BATTLES):
        log.record("leftvote", ["a", "b"], states("a", "b", question="北京在哪里？"), "", anony=True)
    log.record("rightvote", ["a", "b"], states("a", "b", question="Write a SQL query."), "", anony=True)
    chinese, code, every = (log.leaderboard(category=k) for k in ("chinese", "code", "all"))
    assert (chinese.n_votes, code.n_votes, every.n_votes) == (MIN_BATTLES, 1, MIN_BATTLES + 1)
    assert chinese.rated and not code.rated
    assert log.leaderboard(category="other").ratings == []
