"""The arena on a memory pool too small for both of its models, in a real browser: each picker says
whether its model is in memory; a side-by-side round between a loaded and an asleep model works,
the second pane saying that its model is loading (with the time waited) and answering after the
first, its time to first token counting the load."""
import re
import time

import pytest
import tomlkit

from conftest import QWEN, SMALL, Stack, entry, wait_for
from tests.browser_kit import ask, bubbles, open_page, pane_text, select, set_max_tokens  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("webui-pool"), [entry(SMALL, memory_budget="1GiB"),
                                                      entry(QWEN, memory_budget="2GiB")])
    doc = tomlkit.parse(s.registry.read_text())
    doc["deployment"]["memory_limit"] = "2.5GiB"  # one of the two at a time
    s.registry.write_text(tomlkit.dumps(doc))
    try:
        s.start_controller()
        for m in (SMALL, QWEN):
            s.start_worker(m)
        s.wait_registered([SMALL, QWEN])
        s.start_api()
        s.start_webui()
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser, ui):
    with open_page(browser, ui.webui_url) as pg:
        yield pg


def state_of(ui, model) -> str:
    return ui.fleet.worker_info(ui.worker_address(model))["state"]


def test_both_panes_answer_with_one_model_asleep(page, ui):
    from openai import OpenAI

    OpenAI(base_url=ui.api_base, api_key="unused").chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)  # SMALL in memory, QWEN asleep
    wait_for(lambda: state_of(ui, QWEN) == "asleep", 30, "QWEN asleep")
    select(page, "named_model_a", SMALL)
    select(page, "named_model_b", QWEN)
    wait_for(lambda: "asleep" in page.inner_text("#named_model_b_info"), 30, "picker B to say asleep")
    assert "loaded" in page.inner_text("#named_model_a_info")
    set_max_tokens(page, "named", 48)
    ask(page, "named", "Write a short poem about the sea.")
    seen_loading = False
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        b = pane_text(page, "pane_b")
        seen_loading |= bool(re.search(rf"loading {re.escape(QWEN)} into memory \(\d+ s\)", b))
        if "tok/s" in pane_text(page, "pane_a") and "tok/s" in b:
            break
        time.sleep(0.2)
    assert seen_loading, "the asleep model's pane never said it was loading"
    a, b = bubbles(page, "pane_a")[-1], bubbles(page, "pane_b")[-1]
    assert "Error" not in a and "Error" not in b, (a, b)
    ttft = [float(re.search(r"([\d.]+) s to first token", x).group(1)) for x in (a, b)]
    assert ttft[1] > ttft[0]  # B waited for A's answer (A was busy, so not unloaded) and for its own load
    assert state_of(ui, QWEN) == "loaded" and state_of(ui, SMALL) == "asleep"
