"""The web UI in a real browser (Debian's Chromium, headless, driven by Playwright), with no network."""
import json
import re
import time

import pytest

from tests.browser_kit import (ARTIFACTS, CHROMIUM, LAPTOP, PHONE, ask, bubbles, export_json, gap_below,  # noqa: F401
                         long_question, open_page, pane_text, panes, select, set_max_tokens, status, tab)
from conftest import QWEN, REPO, SMALL, Stack, entry, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webui")
    s = Stack(tmp, [entry(QWEN), entry(SMALL), entry(QWEN, name="doomed"), entry(SMALL, name="latecomer")])
    try:
        s.start_controller()
        for name in (QWEN, SMALL, "doomed"):
            s.start_worker(name)
        s.wait_registered([QWEN, SMALL, "doomed"])
        s.start_webui()
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser, ui, request):
    """Side by side with two panes (the page's default here is three: one per model)."""
    with open_page(browser, ui.webui_url, shot=request.node.name) as pg:
        panes(pg, 2)
        yield pg


def test_page_is_ours_lists_models_and_renders_offline(page, ui):
    assert page.title() == "fastchat-fleet · model arena"
    page.click("#models_accordion")
    wait_for(lambda: all(m in page.inner_text(".model-table") for m in (QWEN, SMALL, "doomed")), 30, "model table")
    table = page.inner_text(".model-table")
    assert "llama.cpp" in table and "qwen2.5" in table and "GiB" in table
    visible = page.inner_text("body")
    for word in ("lmsys", "Chatbot Arena", "Discord", "Bard", "Built with Gradio", "Terms of use"):
        assert word.lower() not in visible.lower(), word
    loads = page.evaluate("""() => Array.from(document.querySelectorAll('img[src],script[src],link[href],iframe[src]'))
                                   .map(e => e.src || e.href)""")
    assert not [u for u in loads if u.startswith(("http://", "https://")) and "127.0.0.1" not in u
                and "localhost" not in u], loads
    for name in ("Side by side", "Battle (anonymous)", "Direct chat", "Puzzles", "Leaderboard"):
        assert page.get_by_role("tab", name=name).count() == 1


def test_side_by_side_chinese_streams_both_and_a_vote_reaches_the_leaderboard(page, ui):
    select(page, "named_model_a", QWEN)
    select(page, "named_model_b", SMALL)
    page.fill("#named_input textarea", "你好，请用一句话介绍一下北京。")
    page.click("#named_send")
    seen = {"pane_a": set(), "pane_b": set()}

    def finished():
        for pane in seen:
            seen[pane].add(len(pane_text(page, pane)))
        return "Which answer is better?" in status(page)

    wait_for(finished, 180, "both answers", every=0.1)
    a, b = pane_text(page, "pane_a"), pane_text(page, "pane_b")
    assert any("\u4e00" <= ch <= "\u9fff" for ch in a), a  # Qwen answered in Chinese
    assert b.strip() and "Error" not in a + b
    assert all(len(v - {0}) >= 2 for v in seen.values()), seen  # each pane grew while streaming

    page.click("#named_leftvote")
    wait_for(lambda: "Vote recorded: A is better" in status(page), 30, "vote confirmation")
    votes = [json.loads(l) for f in (ui.tmp / "logs" / "votes").glob("*-conv.json") for l in f.read_text().splitlines()]
    assert votes[-1]["type"] == "leftvote" and votes[-1]["models"] == [QWEN, SMALL]
    assert votes[-1]["states"][0]["model_name"] == QWEN and votes[-1]["states"][0]["messages"][0][1].startswith("你好")

    page.get_by_role("tab", name="Leaderboard").click()  # a vote with the names shown is kept, not ranked
    wait_for(lambda: "1 side-by-side vote(s)" in page.inner_text("#leaderboard_note"), 60, "the named vote counted")
    assert QWEN not in page.inner_text("#leaderboard_table")
    page.get_by_role("tab", name="Side by side").click()


def test_anonymous_battle_reveals_names_after_the_vote(page, ui):
    page.get_by_role("tab", name="Battle (anonymous)").click()
    page.fill("#anony_input textarea", "你好")
    page.click("#anony_send")
    # every registered model is healthy at this point (the doomed one fails in a later test)
    wait_for(lambda: "Which answer is better?" in status(page, "anony_status"), 180, "battle answers")
    assert QWEN not in page.inner_text("#anony_pane_a") + page.inner_text("#anony_pane_b")  # names hidden
    page.click("#anony_tievote")
    wait_for(lambda: "Model A was" in status(page, "anony_status"), 30, "reveal")
    votes = [json.loads(l) for f in (ui.tmp / "logs" / "votes").glob("*-conv.json") for l in f.read_text().splitlines()]
    assert votes[-1]["type"] == "tievote" and votes[-1]["models"] == ["", ""]  # FastChat's anony format
    assert all(s["model_name"] for s in votes[-1]["states"])
    fought = [s["model_name"] for s in votes[-1]["states"]]
    page.get_by_role("tab", name="Leaderboard").click()  # the anonymous vote is ranked
    wait_for(lambda: all(m in page.inner_text("#leaderboard_table") for m in fought), 60, "leaderboard rows")
    assert "1 anonymous battle vote(s)" in page.inner_text("#leaderboard_note")
    wait_for(lambda: "not enough votes (1 of 5 battles)" in page.inner_text("#leaderboard_table"), 60,
             "no rating from one battle")
    assert fought[0] in page.inner_text("#leaderboard_pairs")


def test_models_that_register_later_appear_and_gone_ones_disappear(page, ui):
    page.click("#models_accordion")
    assert "latecomer" not in page.inner_text(".model-table")
    ui.start_worker("latecomer")
    wait_for(lambda: "latecomer" in page.inner_text(".model-table"), 90, "latecomer in the table")
    ui.procs["worker-latecomer"].stop()
    wait_for(lambda: "latecomer" not in page.inner_text(".model-table"), 60, "latecomer gone")


def test_stop_mid_stream_keeps_the_text_and_speed_shows_under_answers(page, ui):
    """Stop in each tab: the pane keeps what was said, says it stopped, and stops growing; finished
    answers carry time to first token, tok/s and tokens."""
    select(page, "named_model_a", SMALL)
    select(page, "named_model_b", QWEN)
    ask(page, "named", long_question())
    wait_for(lambda: len(pane_text(page, "pane_a")) > 40 and len(pane_text(page, "pane_b")) > 5, 120,
             "both streaming", every=0.1)
    page.click("#named_stop_a")  # one pane
    wait_for(lambda: "stopped" in pane_text(page, "pane_a"), 20, "pane A stopped", every=0.1)
    frozen = pane_text(page, "pane_a")
    page.click("#named_stop")  # both
    wait_for(lambda: "Which answer is better?" in status(page), 30, "the round to end", every=0.1)
    time.sleep(1.5)
    assert pane_text(page, "pane_a") == frozen and "stopped" in pane_text(page, "pane_b")
    assert re.search(r"[\d.]+ s to first token · [\d.]+ tok/s · \d+ tokens", frozen), frozen

    tab(page, "Battle (anonymous)")
    ask(page, "anony", long_question())
    wait_for(lambda: len(pane_text(page, "anony_pane_a")) > 20, 120, "battle streaming", every=0.1)
    page.click("#anony_stop")
    wait_for(lambda: "Which answer is better?" in status(page, "anony_status"), 30, "battle stopped", every=0.1)
    assert "stopped" in pane_text(page, "anony_pane_a")
    page.click("#anony_new")

    tab(page, "Direct chat")
    select(page, "direct_model", SMALL)
    ask(page, "direct", long_question())
    wait_for(lambda: len(pane_text(page, "direct_pane")) > 40, 120, "direct streaming", every=0.1)
    page.click("#direct_stop")
    wait_for(lambda: "stopped" in pane_text(page, "direct_pane"), 20, "direct stopped", every=0.1)
    n = len(pane_text(page, "direct_pane"))
    time.sleep(1.5)
    assert len(pane_text(page, "direct_pane")) == n
    page.click("#direct_new")
    tab(page, "Side by side")


def test_new_round_mid_stream_clears_and_the_next_question_goes_through(page, ui):
    select(page, "named_model_a", SMALL)
    select(page, "named_model_b", QWEN)
    ask(page, "named", long_question())
    wait_for(lambda: len(pane_text(page, "pane_a")) > 40, 120, "streaming", every=0.1)
    page.click("#named_new")
    wait_for(lambda: "New round" in status(page), 10, "new round")
    time.sleep(2)
    assert pane_text(page, "pane_a") == "" and pane_text(page, "pane_b") == ""  # nothing streamed back in
    ask(page, "named", "1+1=?")
    wait_for(lambda: "Which answer is better?" in status(page), 120, "the new question answered")
    assert bubbles(page, "pane_a", "user") == ["1+1=?"] and bubbles(page, "pane_b", "user") == ["1+1=?"]


def test_enter_then_click_sends_once(page, ui):
    page.click("#named_new")
    select(page, "named_model_a", SMALL)
    select(page, "named_model_b", QWEN)
    page.fill("#named_input textarea", "你好")
    page.press("#named_input textarea", "Enter")
    page.click("#named_send", force=True)  # Send is disabled once the answers start: force the click anyway
    wait_for(lambda: "Which answer is better?" in status(page), 120, "answers")
    time.sleep(1)
    for p in ("pane_a", "pane_b"):
        assert bubbles(page, p, "user") == ["你好"], bubbles(page, p, "user")
        assert len(bubbles(page, p)) == 1 and bubbles(page, p)[0].strip()


REMEMBER = ("请记住下面这段话，稍后我会问你。" + "数据库索引就像书的目录：它让查询不必逐行扫描整张表，"
            "但每次写入都要同时更新索引，所以索引越多，写入越慢。" * 12)  # a first turn of ~700 tokens


def test_a_follow_up_after_a_vote_keeps_the_conversation(page, ui):
    page.click("#named_new")
    page.click("#named_params")
    assert page.locator("#named_seed").locator("input, textarea").input_value() == ""  # random: no seed sent
    select(page, "named_model_a", SMALL)
    select(page, "named_model_b", QWEN)
    ask(page, "named", "我叫小明。" + REMEMBER)
    wait_for(lambda: "Which answer is better?" in status(page), 120, "first answers")
    page.click("#named_tievote")
    wait_for(lambda: "Ask a follow-up" in status(page), 30, "vote recorded")
    ask(page, "named", "我叫什么名字？")
    wait_for(lambda: "Which answer is better?" in status(page), 120, "follow-up answers")
    first = "我叫小明。" + REMEMBER
    assert bubbles(page, "pane_a", "user") == [first, "我叫什么名字？"]  # the panes were not wiped
    exported = export_json(page, "named")
    for conv in exported["conversations"]:  # what the models were sent: both turns, in order
        assert [t["user"] for t in conv["turns"]] == [first, "我叫什么名字？"] and conv["turns"][0]["assistant"]
        assert conv["turns"][1]["speed"]["tokens"] > 0
        # the follow-up did not compute the first turn again: the worker's KV cache held it
        one, two = conv["turns"][0]["speed"], conv["turns"][1]["speed"]
        assert two["cached_tokens"] >= one["prompt_tokens"], conv["turns"]
        print(f"arena follow-up, {conv['model']}: turn 1 {one['prompt_tokens']} prompt tokens, first token "
              f"{one['ttft_s']} s; turn 2 {two['prompt_tokens']} ({two['cached_tokens']} reused), {two['ttft_s']} s")
    assert "prompt tokens reused" in bubbles(page, "pane_b")[-1]


def test_switching_the_model_in_direct_chat_keeps_the_context(page, ui):
    tab(page, "Direct chat")
    page.click("#direct_new")
    select(page, "direct_model", SMALL)
    ask(page, "direct", "Remember the number 42.")
    wait_for(lambda: "tok/s" in pane_text(page, "direct_pane"), 120, "first answer")
    select(page, "direct_model", QWEN)
    ask(page, "direct", "Which number?")
    wait_for(lambda: pane_text(page, "direct_pane").count("tok/s") == 2, 120, "second answer")
    assert f"{QWEN} takes over" in pane_text(page, "direct_pane")
    conv = export_json(page, "direct")["conversations"][0]
    assert conv["model"] == QWEN and [t["user"] for t in conv["turns"]] == ["Remember the number 42.", "Which number?"]
    tab(page, "Side by side")


def test_regenerate_system_prompt_and_model_info(page, ui):
    tab(page, "Direct chat")
    page.click("#direct_new")
    select(page, "direct_model", SMALL)
    wait_for(lambda: "llama.cpp" in page.inner_text("#direct_model_info"), 30, "model info")
    assert "cores" in page.inner_text("#direct_model_info") and "budget" in page.inner_text("#direct_model_info")
    page.click("#direct_params")
    page.fill("#direct_system textarea", "You are a pirate. Always answer like a pirate.")
    ask(page, "direct", "Hello!")
    wait_for(lambda: "tok/s" in pane_text(page, "direct_pane"), 120, "answer")
    # Regenerate comes back with the answer's last update: a click before it lands on a disabled button
    wait_for(lambda: page.locator("#direct_regen").is_enabled(), 60, "Regenerate enabled")
    page.click("#direct_regen")
    wait_for(lambda: "Answering" in status(page, "direct_status"), 60, "regenerating", every=0.05)
    wait_for(lambda: status(page, "direct_status") == "", 120, "regenerated")
    assert bubbles(page, "direct_pane", "user") == ["Hello!"] and len(bubbles(page, "direct_pane")) == 1
    conv = export_json(page, "direct")["conversations"][0]
    assert conv["system"] == "You are a pirate. Always answer like a pirate." and len(conv["turns"]) == 1
    for prefix, name in (("named", "Side by side"), ("anony", "Battle (anonymous)"), ("direct", "Direct chat"),
                         ("puzzles", "Puzzles")):  # the same controls in every tab (drawn once shown)
        tab(page, name)
        if not page.locator(f"#{prefix}_system").is_visible():
            page.click(f"#{prefix}_params")
        for control in ("system", "temperature", "top_p", "max_tokens", "seed"):
            wait_for(lambda: page.locator(f"#{prefix}_{control}").count() == 1, 10, f"{prefix} {control}")
    tab(page, "Side by side")


def test_two_battle_votes_fill_the_pairwise_table_and_a_result_can_be_shared(page, ui):
    tab(page, "Battle (anonymous)")
    for _ in range(2):
        page.click("#anony_new")
        ask(page, "anony", "你好")
        wait_for(lambda: "Which answer is better?" in status(page, "anony_status"), 180, "battle answers")
        page.click("#anony_leftvote")
        wait_for(lambda: "This battle is over" in status(page, "anony_status"), 30, "reveal")
    shared = page.input_value("#anony_share textarea")
    assert "won" in shared and "Question: 你好" in shared
    tab(page, "Leaderboard")
    page.click("#leaderboard_refresh")
    wait_for(lambda: re.search(r"\d\.\d\d \(\d+/\d+\)", page.inner_text("#leaderboard_pairs")), 60, "pairwise numbers")
    tab(page, "Side by side")


def test_the_dropdowns_keep_the_users_pick_when_the_model_list_changes(page, ui):
    select(page, "named_model_a", SMALL)
    select(page, "named_model_b", QWEN)
    page.locator("#named_model_b input").click()  # the dropdown is open while the list changes
    ui.start_worker("latecomer")
    page.click("#models_accordion")
    wait_for(lambda: "latecomer" in page.inner_text(".model-table"), 90, "latecomer registered")
    assert page.input_value("#named_model_a input") == SMALL and page.input_value("#named_model_b input") == QWEN
    ui.procs["worker-latecomer"].stop()
    wait_for(lambda: "latecomer" not in page.inner_text(".model-table"), 60, "latecomer gone")
    assert page.input_value("#named_model_a input") == SMALL and page.input_value("#named_model_b input") == QWEN


def test_the_puzzles_view_asks_both_and_shows_the_reference_and_grading(page, ui):
    tab(page, "Puzzles")
    select(page, "puzzle_model_a", SMALL)
    select(page, "puzzle_model_b", QWEN)
    pick = page.locator("#puzzle_pick input")
    pick.click()
    page.locator("#puzzle_pick").get_by_role("option", name=re.compile("^mingming-baibai")).click()
    wait_for(lambda: "明明明明明白白白喜欢他" in page.inner_text("#puzzle_question"), 10, "the puzzle's question")
    assert page.inner_text("#puzzle_reference").strip() == ""  # no reference before the answers
    page.click("#puzzle_send")
    wait_for(lambda: "Both answered" in status(page, "puzzle_status"), 180, "both answers")
    ref = page.inner_text("#puzzle_reference")
    assert "白白喜欢明明" in ref and f"Model A ({SMALL})" in ref and f"Model B ({QWEN})" in ref and " / 1" in ref
    assert "This page's tally:" in ref and f"{SMALL} " in ref.split("tally:")[1] and "(1 puzzle)" in ref
    assert bubbles(page, "puzzle_pane_a", "user")[0].startswith("明明明明明白白白喜欢他")
    for p in ("puzzle_pane_a", "puzzle_pane_b"):  # the puzzle panes follow their answers too
        assert gap_below(page, p) <= 5, p
    tab(page, "Side by side")


@pytest.mark.parametrize("width, height", [LAPTOP, PHONE])
def test_the_input_is_visible_without_scrolling(browser, ui, width, height):
    with open_page(browser, ui.webui_url, (width, height)) as pg:
        wait_for(lambda: pg.input_value("#named_model_a input") != "", 30, "models listed")
        # the layout as it settles: a pane per model, two on a phone
        wait_for(lambda: pg.locator("#pane_c").is_visible() == (width > PHONE[0]), 30, "the default panes")
        time.sleep(1)
        box = pg.locator("#named_input textarea").bounding_box()
        send = pg.locator("#named_send").bounding_box()
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"webui-fold-{width}x{height}.png"))
        assert box["y"] + box["height"] <= height and send["y"] + send["height"] <= height, (box, send)
        assert pg.evaluate("() => window.scrollY") == 0
        overflow = pg.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than the screen"


def test_every_model_side_by_side_with_best_of_n_votes(browser, ui):
    """Three registered models: three panes by default, each with its own model, all asked at once;
    "C is best" is logged as C beating A and C beating B. The README's picture is taken here."""
    with open_page(browser, ui.webui_url, LAPTOP) as pg:
        wait_for(lambda: pg.input_value("#named_model_c input") != "", 30, "three pickers filled")
        assert pg.locator("#named_count input[value='3']").is_checked()
        models = [pg.input_value(f"#named_model_{c} input") for c in "abc"]
        assert sorted(models) == sorted([QWEN, SMALL, "doomed"]), models
        # the pickers are filled first; the count's change then shows the third pane and its votes
        wait_for(lambda: pg.locator("#pane_c").is_visible() and pg.locator("#named_best_c").is_visible(), 30,
                 "three panes with a 'best' vote each")
        assert not pg.locator("#pane_d").is_visible() and not pg.locator("#named_leftvote").is_visible()
        set_max_tokens(pg, "named", 48)
        pg.click("#named_params")  # closed again, for the picture
        ask(pg, "named", "你好，请用一句话介绍一下北京。")
        wait_for(lambda: "Which answer is best?" in status(pg), 180, "three answers")
        pg.evaluate("() => window.scrollTo(0, 0)")
        time.sleep(0.5)
        for p in ("pane_a", "pane_b", "pane_c"):
            assert "tok/s" in pane_text(pg, p) and "Error" not in pane_text(pg, p), p
            assert gap_below(pg, p) <= 5, p  # each pane followed its answer down to the newest text
        (REPO / "docs").mkdir(exist_ok=True)
        pg.screenshot(path=str(REPO / "docs" / "webui-side-by-side.png"))
        pg.click("#named_best_c")
        wait_for(lambda: "C is best" in status(pg), 30, "the vote")
        rows = [json.loads(line) for f in sorted((ui.tmp / "logs" / "votes").glob("*-conv.json"))
                for line in f.read_text().splitlines()][-2:]
        assert [r["best_of"] for r in rows] == [3, 3] and [r["models"] for r in rows] == [
            [models[0], models[2]], [models[1], models[2]]]
        assert [r["type"] for r in rows] == ["rightvote", "rightvote"]  # the right-hand model, C, won each pair
        ask(pg, "named", "再说一句。")  # a follow-up goes to all three
        wait_for(lambda: "Which answer is best?" in status(pg), 180, "three follow-ups")
        assert all(bubbles(pg, p, "user") == ["你好，请用一句话介绍一下北京。", "再说一句。"] for p in ("pane_a", "pane_b", "pane_c"))
    with open_page(browser, ui.webui_url, PHONE) as pg:  # on a phone: two panes, each under its own picker
        wait_for(lambda: pg.input_value("#named_model_b input") != "", 30, "models listed")
        time.sleep(1)
        assert pg.locator("#named_count input[value='2']").is_checked() and not pg.locator("#pane_c").is_visible()
        panes(pg, 3)
        order = [pg.locator(f"#{e}").bounding_box() for c in "abc" for e in (f"named_model_{c}", f"pane_{c}")]
        assert all(b2["y"] >= b1["y"] + b1["height"] - 1 for b1, b2 in zip(order, order[1:])), order
        assert order[1]["y"] + 100 < PHONE[1], order[1]  # the first answer starts on the first screen


def test_a_worker_failing_mid_answer_shows_an_honest_error_in_its_pane(page, ui):
    select(page, "named_model_a", "doomed")
    select(page, "named_model_b", QWEN)
    set_max_tokens(page, "named", 192)
    page.fill("#named_input textarea", "请详细介绍中国的四大发明，每一项写三段。")
    page.click("#named_send")
    wait_for(lambda: len(pane_text(page, "pane_a")) > 5, 120, "doomed starts answering", every=0.1)
    ui.procs["worker-doomed"].kill()
    wait_for(lambda: "One model failed" in status(page), 240, "the round to end")
    a, b = pane_text(page, "pane_a"), pane_text(page, "pane_b")
    assert "Error: doomed failed:" in a and "HIGH TRAFFIC" not in a
    assert b.strip() and "Error" not in b  # the other pane kept going


def test_html_in_a_question_is_shown_as_typed(page, ui):
    page.get_by_role("tab", name="Direct chat").click()
    select(page, "direct_model", SMALL)
    question = 'Explain <img src=x onerror="document.title=1"> and <script>alert(1)</script> please'
    page.fill("#direct_input textarea", question)
    page.click("#direct_send")
    user = lambda: page.evaluate("""() => Array.from(document.querySelectorAll('#direct_pane [data-testid="user"]'))
                                       .map(e => e.innerText).join('\\n')""")  # noqa: E731
    wait_for(lambda: "<script>" in user(), 60, "the question in the pane")
    assert question in user()  # the markup as text, not a broken image and an empty bubble
    assert page.locator("#direct_pane img[src=x]").count() == 0 and page.title() != "1"
