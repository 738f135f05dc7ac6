"""The web UI in a real browser (Debian's Chromium, headless, driven by Playwright), with no network."""
import json
from pathlib import Path

import pytest

from conftest import QWEN, REPO, SMALL, Stack, entry, wait_for

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# without these Chromium keeps trying to reach Google's services
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: scripts/test.sh installs Debian's chromium and fonts-noto-cjk")
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


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, ui, request):
    offsite = []
    ctx = browser.new_context(viewport={"width": 1400, "height": 1500}, locale="zh-CN")
    pg = ctx.new_page()
    pg.on("request", lambda r: offsite.append(r.url)
          if not r.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")) else None)
    pg.goto(ui.webui_url, wait_until="load")
    pg.wait_for_selector("#named_input textarea", timeout=60_000)
    yield pg
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"webui-{request.node.name}.png"), full_page=True)
    ctx.close()
    assert offsite == [], f"the page reached off the machine: {offsite}"


def pane_text(pg, pane: str) -> str:
    return pg.evaluate(f"""() => Array.from(document.querySelectorAll('#{pane} [data-testid="bot"]'))
                                   .map(e => e.innerText).join('\\n')""")


def status(pg, which="named_status") -> str:
    return pg.inner_text(f"#{which}")


def select(pg, elem_id: str, model: str):
    box = pg.locator(f"#{elem_id} input")
    box.click()
    box.fill(model)
    pg.locator(f"#{elem_id}").get_by_role("option", name=model, exact=True).click()


def test_page_is_ours_lists_models_and_renders_offline(page, ui):
    assert page.title() == "fastchat-fleet · model arena"
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
    for tab in ("Side by side", "Battle (anonymous)", "Direct chat", "Leaderboard"):
        assert page.get_by_role("tab", name=tab).count() == 1


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
    assert "(preliminary)" in page.inner_text("#leaderboard_table")
    assert fought[0] in page.inner_text("#leaderboard_pairs")


def test_models_that_register_later_appear_and_gone_ones_disappear(page, ui):
    assert "latecomer" not in page.inner_text(".model-table")
    ui.start_worker("latecomer")
    wait_for(lambda: "latecomer" in page.inner_text(".model-table"), 90, "latecomer in the table")
    ui.procs["worker-latecomer"].stop()
    wait_for(lambda: "latecomer" not in page.inner_text(".model-table"), 60, "latecomer gone")


def test_a_worker_failing_mid_answer_shows_an_honest_error_in_its_pane(page, ui):
    select(page, "named_model_a", "doomed")
    select(page, "named_model_b", QWEN)
    page.fill("#named_max_tokens input[type=number]", "192")
    page.press("#named_max_tokens input[type=number]", "Tab")
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
