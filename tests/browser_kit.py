"""What every browser test of the web page shares: Debian's Chromium driven by Playwright, a page
that must stay on this machine and log no error, and the helpers that drive the page's widgets.

A page opened here fails its test at close when it reached off the machine, threw a page error,
logged a console error, or logged one of the Gradio warnings a user saw (WARNED): "no page error
and no console error during the whole browser suite" is asserted this way."""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.harness import REPO, wait_for

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# without these Chromium keeps trying to reach Google's services
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio"]
# Gradio's "Too many arguments provided for the endpoint" (held back by deploy/webui/head.html), and
# its warning on a page that selects a tab it has not drawn
WARNED = re.compile(r"Too many arguments|Attempted to select a non-interactive or hidden tab")
PHONE = (390, 844)
LAPTOP = (1280, 800)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: scripts/test.sh installs Debian's chromium and fonts-noto-cjk")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@contextmanager
def open_page(browser, url: str, size: tuple[int, int] = (1400, 1500), shot: str | None = None,
              init_script: str | None = None, **context):
    """A page of the web UI, loaded; on leaving, its screenshot (if named) and the checks above."""
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, locale="zh-CN", **context)
    if init_script:
        ctx.add_init_script(init_script)
    pg = ctx.new_page()
    offsite, problems = [], []
    pg.on("request", lambda r: offsite.append(r.url)
          if not r.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")) else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
          if m.type == "error" or WARNED.search(m.text) else None)
    pg.logged = problems  # read by the report of a test that fails on this page
    try:
        pg.goto(url, wait_until="load")
        pg.wait_for_selector("#named_input textarea", timeout=60_000)
        try:
            yield pg
        except Exception as e:  # a test holding the page itself: its failure says what the page showed
            e.add_note(what_the_page_showed(pg))
            raise
        if shot:
            ARTIFACTS.mkdir(exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"webui-{shot}.png"), full_page=True)
    finally:
        ctx.close()
    assert offsite == [], f"the page reached off the machine: {offsite}"
    assert problems == [], f"the page logged errors: {problems}"


# what Gradio's client logs when the page it runs in goes away with an event in flight (a timer's
# refresh, say): the unloading page's own noise, not a fault of the page loaded next
UNLOAD_NOISE = re.compile(r"AbortError: signal is aborted without reason|Unexpected error Connection errored out")


def reload(pg):
    """Reload the page as a user does, mid-refresh or not, and wait for it to be ready again."""
    before = len(pg.logged)
    pg.reload(wait_until="load")
    pg.wait_for_selector("#named_input textarea", timeout=60_000)
    pg.logged[before:] = [p for p in pg.logged[before:] if not UNLOAD_NOISE.search(p)]


def panes(pg, n: int):
    """Side by side with n panes; after the page has set its own default (a pane per model)."""
    wait_for(lambda: pg.input_value("#named_model_b input") != "", 30, "the models listed")
    radio = pg.locator(f"#named_count input[value='{n}']")

    def set_and_shown() -> bool:  # checked again if the page's own default landed after the click
        if not radio.is_checked():
            radio.check()
        return radio.is_checked() and pg.locator("#pane_c").is_visible() == (n > 2)
    wait_for(set_and_shown, 20, f"{n} panes", every=0.3)


def pane_text(pg, pane: str) -> str:
    return pg.evaluate(f"""() => Array.from(document.querySelectorAll('#{pane} [data-testid="bot"]'))
                                   .map(e => e.innerText).join('\\n')""")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that fails on the `page` fixture's page says what the page showed and logged (the
    fixture is still open here; its own checks run only after)."""
    rep = (yield).get_result()
    pg = getattr(item, "funcargs", {}).get("page")
    if rep.when == "call" and rep.failed and pg is not None:
        rep.sections.append(("what the page showed", what_the_page_showed(pg)))


def what_the_page_showed(pg) -> str:
    """The page's status lines, the end of each pane and what it logged, with a screenshot in
    test-artifacts/ named after the failing test."""
    test = re.sub(r"[^\w.-]+", "_", os.environ.get("PYTEST_CURRENT_TEST", "page").split(" ")[0].split("::")[-1])
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"webui-{test}-FAILED.png"), full_page=True)
        shown = pg.evaluate("""() => Array.from(document.querySelectorAll('[id$=_status], [id^=pane_], [id$=_pane]'))
            .filter(e => e.offsetParent).map(e => e.id + ': ...' + e.innerText.trim().slice(-200)).join('\\n')""")
    except Exception as e:  # the page itself is gone
        shown = f"(the page could not be read: {e})"
    return f"{shown}\nthe page logged: {getattr(pg, 'logged', None) or 'nothing'}"


def status(pg, which="named_status") -> str:
    return pg.inner_text(f"#{which}")


def select(pg, elem_id: str, model: str):
    box = pg.locator(f"#{elem_id} input")
    box.click()
    box.fill(model)
    pg.locator(f"#{elem_id}").get_by_role("option", name=model, exact=True).click()


def bubbles(pg, pane: str, who: str = "bot") -> list[str]:
    return pg.evaluate(f"""() => Array.from(document.querySelectorAll('#{pane} [data-testid="{who}"]'))
                                   .map(e => e.innerText)""")


def tab(pg, name: str):
    pg.get_by_role("tab", name=name).click()


def ask(pg, prefix: str, text: str):
    pg.fill(f"#{prefix}_input textarea", text)
    pg.click(f"#{prefix}_send")


def long_question() -> str:
    return "Write a long story about a robot who learns to cook, in at least twenty paragraphs."


def set_max_tokens(pg, prefix: str, n: int):
    """Types n into the slider's box, as a user does, until the slider itself shows it: on a busy
    machine a value typed while the tab is still being drawn can be lost, and a test that then asks
    for 48 tokens gets the default 512."""
    if not pg.locator(f"#{prefix}_max_tokens").is_visible():
        pg.click(f"#{prefix}_params")
    box, bar = f"#{prefix}_max_tokens input[type=number]", f"#{prefix}_max_tokens input[type=range]"
    for _ in range(5):
        pg.fill(box, str(n))
        pg.press(box, "Tab")
        try:
            pg.wait_for_function(f"() => document.querySelector('{bar}').value === '{n}'", timeout=3000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the {prefix} slider never showed {n}: {pg.locator(bar).input_value()}")


def export(pg, prefix: str, fmt: str = "json"):
    """The conversation as the Export button gives it: a dict (JSON) or the Markdown text."""
    if not pg.locator(f"#{prefix}_export_{fmt}").is_visible():
        pg.click(f"#{prefix}_export")
    link = pg.locator(f"#{prefix}_export_file a").first
    old = link.get_attribute("href") if link.count() else None
    pg.click(f"#{prefix}_export_{fmt}")
    suffix = ".json" if fmt == "json" else ".md"
    href = lambda: link.get_attribute("href") if link.count() else None  # noqa: E731
    wait_for(lambda: (href() or "").endswith(suffix) and href() != old, 30, f"the {fmt} export", every=0.1)
    text = pg.request.get(href()).text()
    return json.loads(text) if fmt == "json" else text


def export_json(pg, prefix: str) -> dict:
    return export(pg, prefix, "json")


def gap_below(pg, pane: str) -> float:
    """How far the pane's newest text is below what the pane shows (0: it follows)."""
    return pg.evaluate(f"""() => {{ const e = document.querySelector('#{pane} .bubble-wrap');
                                    return e.scrollHeight - e.clientHeight - e.scrollTop; }}""")


# Everything the page's scripts receive over fetch (Gradio's event stream included), as text in
# window.__received; a test empties it before the part it searches.
RECORD_RESPONSES = """
window.__received = [];   // every reply's text, as it came
window.__exchanges = [];  // {url, body, reply}: what the page asked, with the whole reply
const fetched = window.fetch;
window.fetch = async (...args) => {
  const r = await fetched(...args);
  const init = args[1] || {}, rec = {url: String(args[0].url || args[0]), body: typeof init.body === 'string' ? init.body : '', reply: ''};
  window.__exchanges.push(rec);
  try {
    const reader = r.clone().body.getReader(), dec = new TextDecoder();
    (async () => { for (;;) { const {done, value} = await reader.read(); if (done) break;
                              const text = dec.decode(value, {stream: true});
                              window.__received.push(text); rec.reply += text; } })().catch(() => {});
  } catch (e) {}
  return r;
};
"""


def received_by(pg, elem_ids_prefix: str) -> str:
    """What the page received for the events whose outputs are components with an elem_id starting
    with `elem_ids_prefix` (a tab's own widgets): each event's queue messages, found through the
    page's config (which event writes which component) and its queue joins (which event id is which
    event). Needs RECORD_RESPONSES. Other events (a timer refreshing every model's line, the
    leaderboard) are left out: they are not the tab's."""
    config = pg.evaluate("() => window.gradio_config")
    ids = {c["id"] for c in config["components"] if str((c.get("props") or {}).get("elem_id") or "")
           .startswith(elem_ids_prefix)}
    mine = {d.get("id", i) for i, d in enumerate(config["dependencies"]) if ids & set(d.get("outputs") or ())}
    exchanges = pg.evaluate("() => window.__exchanges")
    events = set()
    for x in exchanges:
        if "/queue/join" in x["url"] and x["body"]:
            asked = json.loads(x["body"])
            if asked.get("fn_index") in mine:
                events.add(json.loads(x["reply"] or "{}").get("event_id"))
    out = []
    for x in exchanges:
        for block in x["reply"].split("\n\n"):
            if block.startswith("data: "):
                try:
                    msg = json.loads(block[6:])
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("event_id") in events:
                    out.append(block)
    return "\n".join(out)
