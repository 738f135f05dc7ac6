"""Votes: FastChat's log format, and ratings from FastChat's monitor code."""
from fastchat.conversation import get_conv_template as conversation_for

from deploy.registry import templates  # noqa: F401  (registers qwen2.5 with FastChat)
from deploy.webui.votes import VoteLog, state_dict


def states(a, b, question="你好"):
    out = []
    for m in (a, b):
        c = conversation_for("qwen2.5")
        c.append_message(c.roles[0], question)
        c.append_message(c.roles[1], f"{m} says hi")
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
        assert r["ci_low"] <= r["rating"] <= r["ci_high"]
    a = next(r for r in lb.ratings if r["model"] == "a")
    assert (a["battles"], a["wins"]) == (9, 6)
    header, *rows = lb.pairwise
    row_a = next(r for r in rows if r[0] == "a")
    assert row_a[header.index("b")] == "0.86 (6/7)"  # a beat b in 6 of the 7 decided a-b battles (not the tie)
    assert row_a[header.index("c")] == "0.00 (0/1)" and row_a[header.index("a")] == "–"
    assert all(r["preliminary"] for r in lb.ratings)  # 9 battles at most: fewer than 10
    assert log.leaderboard() is lb  # cached until the log changes


def test_one_vote_is_enough_to_show_something(tmp_path):
    log = VoteLog(tmp_path, bootstrap_rounds=10)
    assert log.leaderboard().ratings == []
    log.record("leftvote", ["a", "b"], states("a", "b"), "", anony=False)
    assert log.leaderboard().ratings == [] and log.leaderboard().n_named == 1  # side-by-side: not ranked
    log.record("leftvote", ["a", "b"], states("a", "b"), "", anony=True)
    lb = log.leaderboard()
    assert {r["model"] for r in lb.ratings} == {"a", "b"} and lb.n_votes == 1
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
    for kind, pair in [("leftvote", ("a", "b")), ("rightvote", ("a", "c")), ("tievote", ("b", "c"))] * 2:
        log.record(kind, list(pair), states(*pair), "", anony=True)
    quick = log.leaderboard(wait=False)
    assert not quick.intervals and all(r["ci_low"] is None and r["ci_high"] is None for r in quick.ratings)
    full = log.leaderboard()
    assert full.intervals and all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in full.ratings)
    strip = lambda lb: [{k: v for k, v in r.items() if not k.startswith("ci_")} for r in lb.ratings]  # noqa: E731
    assert strip(quick) == strip(full) and quick.pairwise == full.pairwise and quick.n_votes == full.n_votes == 6
    assert log.leaderboard(wait=False) is full  # once computed, the full one is what the page gets
