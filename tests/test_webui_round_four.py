"""The arena's fourth round, in a real browser at a laptop's 1280x800 and a phone's 390x844: what
users of Chatbot Arena's page and of Open WebUI expect. Conversations kept in the browser across a
reload and opened again; settings shared by the chat tabs and kept between visits; an earlier
question edited and asked again from there (the conversation before the edit kept as a branch); an
answer cut off at the most new tokens marked and continued; a change of the number of panes that can
be undone; a skip link, a main landmark and pickers announced as comboboxes."""
import time

import pytest

from conftest import QWEN, SMALL, Stack, entry, wait_for
from tests.browser_kit import (LAPTOP, PHONE, ask, bubbles, export, long_question, open_page, panes, reload, select,
                               set_max_tokens, status, tab)

pytestmark = pytest.mark.slow
SIZES = pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
CUT = "cut off at the most new tokens"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    with Stack.serving_webui(tmp_path_factory.mktemp("webui4"), [entry(QWEN), entry(SMALL)]) as s:
        yield s


def direct(pg, model: str = SMALL, max_tokens: int = 16):
    tab(pg, "Direct chat")
    wait_for(lambda: pg.input_value("#direct_model input") != "", 30, "the models listed")
    select(pg, "direct_model", model)
    set_max_tokens(pg, "direct", max_tokens)


def answered(pg, prefix: str = "direct", turns: int = 1, was: list | None = None, timeout: float = 120):
    """The answers ended: every pane of the tab shows `turns` questions, its last answer carries its
    speed line (drawn when the answer ends) and differs from `was` (its text before a Continue or an
    edit; None: any), and Send is back."""
    pane_ids = ["direct_pane"] if prefix == "direct" else ["pane_a", "pane_b"]

    def done() -> bool:
        for i, p in enumerate(pane_ids):
            answers = bubbles(pg, p)
            if len(bubbles(pg, p, "user")) != turns or not answers or "to first token" not in answers[-1]:
                return False
            if was is not None and was[i] is not None and answers[-1] == was[i]:
                return False
        return pg.locator(f"#{prefix}_send").is_enabled()
    wait_for(done, timeout, "the answers")


def saved_options(pg, prefix: str):
    """The tab's list of saved conversations, opened as a user opens it."""
    if not pg.locator(f"#{prefix}_saved_pick").is_visible():
        pg.click(f"#{prefix}_saved")
    pg.locator(f"#{prefix}_saved_pick input").click()
    options = pg.locator(f"#{prefix}_saved_pick").get_by_role("option")
    wait_for(lambda: options.count() > 0, 10, "the saved conversations listed")
    return options


def open_saved(pg, prefix: str) -> list[str]:
    """Opens the tab's newest saved conversation; returns what the list offered."""
    options = saved_options(pg, prefix)
    offered = options.all_inner_texts()
    options.first.click()
    pg.click(f"#{prefix}_saved_open")
    return offered


def edit_question(pg, pane: str, index: int, text: str):
    """Edits the pane's index-th question with its own edit button, as a user does (the buttons are
    named in the page's language: the browser here is zh-CN)."""
    pg.locator(f"#{pane} [data-testid='user']").nth(index).hover()
    pg.locator(f"#{pane} button[aria-label='编辑'], #{pane} button[aria-label='Edit']").nth(index).click()
    pg.locator(f"#{pane} textarea").fill(text)
    pg.locator(f"#{pane} button[aria-label='发送'], #{pane} button[aria-label='Submit']").first.click()


@SIZES
def test_a_conversation_survives_a_reload_and_the_settings_are_kept_and_shared(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        direct(pg, max_tokens=32)
        ask(pg, "direct", "Name three colours.")
        answered(pg)
        before = bubbles(pg, "direct_pane")
        assert before and "Error" not in before[-1], before
        # one set of settings: what was typed in Direct chat shows in Side by side
        tab(pg, "Side by side")
        pg.click("#named_params")
        assert pg.locator("#named_max_tokens input[type=range]").input_value() == "32"

        reload(pg)
        tab(pg, "Direct chat")
        pg.click("#direct_params")
        wait_for(lambda: pg.locator("#direct_max_tokens input[type=range]").input_value() == "32", 20,
                 "the kept max tokens")
        assert bubbles(pg, "direct_pane") == []
        offered = open_saved(pg, "direct")
        assert any("Name three colours." in o and SMALL in o for o in offered), offered
        wait_for(lambda: bubbles(pg, "direct_pane", "user") == ["Name three colours."], 30, "the conversation opened")
        assert [b.strip() for b in bubbles(pg, "direct_pane")][0] in before[0], (bubbles(pg, "direct_pane"), before)
        assert pg.input_value("#direct_model input") == SMALL
        ask(pg, "direct", "And one more?")  # it goes on: the follow-up sees the first turn
        answered(pg, turns=2)
        assert bubbles(pg, "direct_pane", "user") == ["Name three colours.", "And one more?"]
        assert "Error" not in bubbles(pg, "direct_pane")[-1]


@SIZES
def test_an_edited_question_is_asked_again_from_there_and_the_old_branch_is_kept(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        direct(pg, max_tokens=16)
        ask(pg, "direct", "Say hello.")
        answered(pg)
        ask(pg, "direct", "Say goodbye.")
        answered(pg, turns=2)
        edit_question(pg, "direct_pane", 0, "Say thank you.")
        wait_for(lambda: bubbles(pg, "direct_pane", "user") == ["Say thank you."], 30, "the edited question alone")
        answered(pg)
        assert len(bubbles(pg, "direct_pane")) == 1 and "Error" not in bubbles(pg, "direct_pane")[0]
        offered = saved_options(pg, "direct").all_inner_texts()
        assert any("Say thank you." in o and "1 turn" in o for o in offered), offered
        assert any("Say hello." in o and "2 turns" in o for o in offered), offered  # the branch before the edit
        pg.keyboard.press("Escape")

        # side by side: an edit in one pane takes every pane back to that question
        tab(pg, "Side by side")
        panes(pg, 2)
        ask(pg, "named", "1+1=?")
        answered(pg, "named")
        ask(pg, "named", "2+2=?")
        answered(pg, "named", turns=2)
        was = [bubbles(pg, p)[-1] for p in ("pane_a", "pane_b")]
        edit_question(pg, "pane_b", 1, "3+3=?")
        wait_for(lambda: all(bubbles(pg, p, "user") == ["1+1=?", "3+3=?"] for p in ("pane_a", "pane_b")), 30,
                 "both panes back at the second question")
        answered(pg, "named", turns=2, was=was)
        assert all(len(bubbles(pg, p)) == 2 for p in ("pane_a", "pane_b"))


@SIZES
def test_an_answer_cut_off_at_max_tokens_is_marked_and_continues(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        direct(pg, max_tokens=16)
        ask(pg, "direct", long_question())
        answered(pg)
        first = bubbles(pg, "direct_pane")[-1]
        assert CUT in first and "Continue" in status(pg, "direct_status"), first
        assert pg.locator("#direct_continue").is_enabled()
        before = export(pg, "direct")["conversations"][0]["turns"]
        pg.click("#direct_continue")
        answered(pg, was=[first])
        after = export(pg, "direct")["conversations"][0]["turns"]
        assert len(after) == 1 and len(bubbles(pg, "direct_pane")) == 1, after  # the same answer, longer
        assert after[0]["assistant"].startswith(before[0]["assistant"]), (before, after)
        assert len(after[0]["assistant"]) > len(before[0]["assistant"]), (before, after)
        assert after[0]["speed"]["tokens"] > 16, after  # the speed line counts the whole answer
        # the model was shown its answer so far: the prompt grew by it (about 16 tokens)
        assert after[0]["speed"]["prompt_tokens"] > before[0]["speed"]["prompt_tokens"] + 8, (before, after)
        assert not pg.locator("#direct_continue").is_enabled() or CUT in bubbles(pg, "direct_pane")[-1]

        tab(pg, "Side by side")
        panes(pg, 2)
        set_max_tokens(pg, "named", 16)
        ask(pg, "named", long_question())
        answered(pg, "named")
        was = [bubbles(pg, p)[-1] for p in ("pane_a", "pane_b")]
        cut = [CUT in w for w in was]  # a model may refuse the story in fewer tokens: its answer stays
        assert any(cut), was
        before = export(pg, "named")["conversations"]
        pg.click("#named_continue")
        answered(pg, "named", was=[w if c else None for w, c in zip(was, cut)])
        after = export(pg, "named")["conversations"]
        for b, a, c in zip(before, after, cut):
            old, new = b["turns"][0]["assistant"], a["turns"][0]["assistant"]
            assert len(a["turns"]) == 1 and new.startswith(old) and (len(new) > len(old) if c else new == old), (b, a)


@SIZES
def test_a_change_of_the_number_of_panes_can_be_undone(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        panes(pg, 2)
        set_max_tokens(pg, "named", 16)
        ask(pg, "named", "Say hi.")
        answered(pg, "named")
        was = [bubbles(pg, p) for p in ("pane_a", "pane_b")]
        pg.locator("#named_count input[value='3']").check()
        wait_for(lambda: "Undo" in status(pg) and pg.locator("#named_undo").is_visible(), 20, "the offer to undo")
        assert pg.locator("#pane_c").is_visible() and bubbles(pg, "pane_a") == []
        pg.click("#named_undo")
        wait_for(lambda: [bubbles(pg, p) for p in ("pane_a", "pane_b")] == was, 20, "the conversation back")
        assert pg.locator("#named_count input[value='2']").is_checked()
        wait_for(lambda: not pg.locator("#pane_c").is_visible(), 10, "two panes again")
        assert not pg.locator("#named_undo").is_visible()
        assert pg.locator("#named_leftvote").is_enabled()  # the round can still be voted on
        ask(pg, "named", "Again?")  # and it goes on
        answered(pg, "named", turns=2)
        assert bubbles(pg, "pane_a", "user") == ["Say hi.", "Again?"]


@SIZES
def test_keyboard_and_screen_reader_ways_in(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        wait_for(lambda: pg.input_value("#named_model_b input") != "", 30, "the models listed")
        time.sleep(0.5)
        pg.keyboard.press("Tab")  # the first Tab reaches the skip link
        assert pg.evaluate("() => document.activeElement.id") == "skip_to_question"
        pg.keyboard.press("Enter")
        assert pg.evaluate("() => document.activeElement.closest('#named_input') !== null")
        assert pg.evaluate("() => document.querySelectorAll('main, [role=main]').length") == 1
        roles = pg.evaluate("() => Array.from(document.querySelectorAll('#named_model_a input, #direct_model input'))"
                            ".map(i => i.getAttribute('role'))")
        assert roles and set(roles) == {"combobox"}, roles


@SIZES
def test_a_seed_typed_wrong_is_refused_in_words_and_the_question_stays(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        direct(pg)
        pg.fill("#direct_seed input", "abc")
        ask(pg, "direct", "Say hello.")
        wait_for(lambda: "The seed 'abc' is not a whole number" in status(pg, "direct_status"), 20, "the refusal")
        assert pg.input_value("#direct_input textarea") == "Say hello."  # the typed question is still there
        assert bubbles(pg, "direct_pane", "user") == []
        assert pg.locator(".error, [class*='error']").filter(visible=True).count() == 0, "an Error badge"
        assert pg.locator("#direct_send").is_enabled()


@SIZES
def test_a_right_to_left_message_reads_right_to_left_and_a_cut_model_line_shows_whole_on_hover(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        direct(pg)
        ask(pg, "direct", "مرحبا، كيف حالك؟")  # Arabic: "hello, how are you?"
        answered(pg)
        assert pg.evaluate("""() => getComputedStyle(document.querySelector('#direct_pane [data-testid="user"]'))
                                     .direction""") == "rtl"
        line = pg.locator("#direct_model_info small")
        assert "llama.cpp" in line.get_attribute("title") and line.get_attribute("title") == line.inner_text().strip()


@SIZES
def test_a_long_code_line_wraps(browser, ui, size):
    with open_page(browser, ui.webui_url, size) as pg:
        direct(pg)
        ask(pg, "direct", "Explain this:\n```\nx = " + "1 + " * 60 + "1\n```")
        answered(pg)
        box = pg.evaluate("""() => { const p = document.querySelector('#direct_pane [data-testid="user"] pre');
            const c = p.querySelector('code') || p;
            return {over: p.scrollWidth - p.clientWidth,
                    rows: Math.round(c.getBoundingClientRect().height / parseFloat(getComputedStyle(c).lineHeight))}; }""")
        assert box["over"] <= 1 and box["rows"] >= 2, box  # wrapped, not scrolled sideways
