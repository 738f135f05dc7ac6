"""A thinking model on the web page, in a real browser at a laptop's and a phone's size: its trace
shows live, folded above the answer with its own tokens and time; in a battle it is only
"Thinking…" until the vote (a thinking style names a model), in the page and in what the page
receives; a model loaded and unloaded from its picker. The model: the default Qwen GGUF with
DeepSeek-R1-Distill's template, which opens the trace in the prompt."""
from __future__ import annotations

import json
import re

import pytest

from conftest import DEFAULTS, QWEN, Stack, entry, free_port, wait_for
from tests.browser_kit import LAPTOP, PHONE, RECORD_RESPONSES, open_page, received_by, select, set_max_tokens, status, tab
from tests.thinking_models import R1_DISTILL, with_template

pytestmark = pytest.mark.slow
R1 = "r1-distill"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    made = tmp_path_factory.mktemp("thinking")
    s = Stack(tmp_path_factory.mktemp("ui"), [
        {"name": R1, "path": str(with_template(DEFAULTS[QWEN].resolved_path, R1_DISTILL, made)), "backend": "llama.cpp",
         "port": free_port(), "cores": [0], "memory_budget": "2GiB", "chat_template": "auto", "context_length": 2048,
         "concurrency": 2}, entry(QWEN, cores=[1])])
    try:
        s.start_controller()
        for m in (R1, QWEN):
            s.start_worker(m)
        s.wait_registered([R1, QWEN])
        s.start_webui()
        yield s
    finally:
        s.stop()


def trace_blocks(pg, pane: str) -> list[dict]:
    """Each folded block of a pane (Gradio's thought group): its title line, and its body's text
    when it is open (Gradio leaves a folded body out of the page), else None."""
    return pg.evaluate(f"""() => Array.from(document.querySelectorAll('#{pane} .thought-group')).map(e => {{
            const body = e.querySelector(':scope > :not(.title)');
            return {{title: e.querySelector('.title').innerText, body: body ? body.innerText : null}};
        }})""")


@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_the_trace_shows_live_then_folded_above_the_answer(browser, ui, size, request):
    with open_page(browser, ui.webui_url, size=size, shot=request.node.name) as pg:
        tab(pg, "Direct chat")
        select(pg, "direct_model", R1)
        set_max_tokens(pg, "direct", 48)
        pg.fill("#direct_input textarea", "What is 2+2?")
        pg.click("#direct_send")
        growing = []

        def live():
            text = pg.inner_text("#direct_pane")
            if "Thinking" in text and "tokens" in text:
                growing.append(text)
            return "tok/s" in text  # the speed line: the answer ended

        wait_for(live, 180, "the answer", every=0.2)
        assert len({t for t in growing}) >= 2, growing  # the trace grew on the page while it streamed
        final = pg.inner_text("#direct_pane")
        count = re.search(r"Thinking\s+(\d+) tokens \(", final)
        assert count, final  # the trace's own count and time, in its title
        if "no answer: it was still thinking" in final:  # all 48 went to the trace
            assert int(count.group(1)) == 48, final
        else:  # the sampled trace closed early: the rest is its answer, below it
            assert int(count.group(1)) < 48 and final.index(count.group(0)) < final.index("tok/s"), final
        wait_for(lambda: (blocks := trace_blocks(pg, "direct_pane")) and all(b["body"] is None for b in blocks), 10,
                 "the trace folded once done")
        pg.click("#direct_pane .thought-group .title")  # unfolds on a click
        wait_for(lambda: any(b["body"] for b in trace_blocks(pg, "direct_pane")), 10, "the trace unfolded")


def test_a_battle_shows_only_thinking_until_the_vote(browser, ui, request):
    with open_page(browser, ui.webui_url, size=LAPTOP, shot=request.node.name, init_script=RECORD_RESPONSES) as pg:
        tab(pg, "Battle (anonymous)")
        set_max_tokens(pg, "anony", 32)
        pg.fill("#anony_input textarea", "What is 2+2?")
        pg.click("#anony_send")
        wait_for(lambda: "Which answer is better?" in status(pg, "anony_status"), 240, "battle answers")
        panes = pg.inner_text("#anony_pane_a") + pg.inner_text("#anony_pane_b")
        assert "Thinking…" in panes and "tokens" not in panes.split("Thinking…")[1][:20] and "tok/s" not in panes
        seen = received_by(pg, "anony_")
        assert '"Thinking\\u2026"' in seen or "Thinking…" in seen
        assert "<think>" not in json.loads(json.dumps(seen)) and '"log"' not in seen  # no trace text, no count
        pg.click("#anony_tievote")
        wait_for(lambda: "Model A was" in status(pg, "anony_status"), 30, "reveal")
        wait_for(lambda: "tokens" in pg.inner_text("#anony_pane_a") + pg.inner_text("#anony_pane_b"), 30,
                 "the trace's count shown after the vote")


def test_a_model_is_loaded_and_unloaded_from_its_picker(browser, ui, request):
    with open_page(browser, ui.webui_url, size=PHONE, shot=request.node.name) as pg:
        tab(pg, "Direct chat")
        select(pg, "direct_model", QWEN)
        pg.click("#direct_model_load")
        wait_for(lambda: pg.inner_text("#direct_model_info").startswith("loaded"), 120, "loaded")
        pg.click("#direct_model_unload")
        wait_for(lambda: pg.inner_text("#direct_model_info").startswith("asleep"), 60, "unloaded")
        pg.click("#direct_model_load")
        wait_for(lambda: pg.inner_text("#direct_model_info").startswith("loaded"), 120, "loaded again")
        assert pg.inner_text("#direct_model_pin").strip() == "Pin"
        pg.click("#direct_model_pin")
        wait_for(lambda: pg.inner_text("#direct_model_info").startswith("loaded · pinned"), 60, "pinned")
        wait_for(lambda: pg.inner_text("#direct_model_pin").strip() == "Unpin", 10, "the button offers to unpin")
        pg.click("#direct_model_unload")  # a pinned model stays: the line says why
        wait_for(lambda: "Not unloaded:" in pg.inner_text("#direct_model_info"), 60, "the unload refused")
        assert "pinned" in pg.inner_text("#direct_model_info").split("Not unloaded:")[1]
        pg.click("#direct_model_pin")
        wait_for(lambda: pg.inner_text("#direct_model_pin").strip() == "Pin", 60, "unpinned")
        assert "pinned" not in pg.inner_text("#direct_model_info")
        pg.click("#direct_model_unload")
        wait_for(lambda: pg.inner_text("#direct_model_info").startswith("asleep"), 60, "unloaded once unpinned")
