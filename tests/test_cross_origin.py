"""A web page of another origin cannot use the fleet, in a real browser: a page served from another
port of 127.0.0.1, and a sandboxed frame in it (its origin is "null"), try what any page the user
opens could: read the web UI's config and answers, join its event queue (how a vote is cast), and
make a worker generate with a text/plain POST that needs no preflight. Every such request is refused
before it is routed, none is granted CORS, and the worker generates nothing."""
from __future__ import annotations

import html
import http.server
import json
import threading

import httpx
import pytest
from conftest import SMALL, Stack, entry

from tests.browser_kit import (
    CHROMIUM_ARGS,  # noqa: F401
    browser,  # noqa: F401  (the fixture)
)
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.slow

ATTACKS = """
async function attack(webui, api, worker) {
  const out = {};
  const tries = {
    config: () => fetch(webui + '/config', {credentials: 'include'}).then(r => r.text()),
    config_no_cors: () => fetch(webui + '/config', {mode: 'no-cors', credentials: 'include'}).then(r => r.type),
    join: () => fetch(webui + '/gradio_api/queue/join', {method: 'POST', mode: 'no-cors',
        headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({fn_index: 0, data: [], session_hash: 'x'})}).then(r => r.type),
    join_v4: () => fetch(webui + '/queue/join', {method: 'POST', mode: 'no-cors',
        headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({fn_index: 0, data: [], session_hash: 'x'})}).then(r => r.type),
    models: () => fetch(api + '/v1/models').then(r => r.text()),
    chat: () => fetch(api + '/v1/chat/completions', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
        body: JSON.stringify({model: 'MODEL', messages: [{role: 'user', content: 'hi'}], max_tokens: 4})}).then(r => r.type),
    generate: () => fetch(worker + '/worker_generate_stream', {method: 'POST', mode: 'no-cors',
        headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({prompt: 'hi', max_new_tokens: 4})}).then(r => r.type),
  };
  for (const [k, f] of Object.entries(tries)) {
    try { out[k] = 'read: ' + String(await f()).slice(0, 60); } catch (e) { out[k] = 'blocked: ' + e.name; }
  }
  return out;
}
"""


def evil_site(port: int, webui: str, api: str, worker: str) -> http.server.ThreadingHTTPServer:
    """A page on another port of this machine, with a sandboxed frame (origin "null") of its own."""
    script = ATTACKS.replace("MODEL", SMALL)
    # the frame attacks when the test says go (`go(pg)`): once the browser driver has attached to it,
    # so that every response of the frame is reported, however loaded the machine
    frame = (f"<script>{script}; addEventListener('message', e => e.data === 'go' && attack({json.dumps(webui)}, "
             f"{json.dumps(api)}, {json.dumps(worker)}).then(r => parent.postMessage(r, '*')));"
             f"parent.postMessage('ready', '*');</script>")
    page = (f"<html><body><script>{script}; window.results = {{}};"
            f"window.addEventListener('message', e => {{ if (e.data === 'ready') window.frameReady = true;"
            f" else window.results.sandboxed = e.data; }});"
            f"attack({json.dumps(webui)}, {json.dumps(api)}, {json.dumps(worker)}).then(r => {{ window.results.page = r; }});"
            f"</script><iframe sandbox=\"allow-scripts\" srcdoc=\"{html.escape(frame, quote=True)}\"></iframe></body></html>").encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("cross-origin"), [entry(SMALL)])
    try:
        s.start_fleet()
        s.wait_registered([SMALL])
        s.start_webui()
        yield s
    finally:
        s.stop()


def test_another_origin_cannot_read_vote_or_make_a_worker_generate(browser, fleet):  # noqa: F811
    worker = fleet.worker_address(SMALL)
    api = fleet.api_base[:-len("/v1")]
    site = evil_site(free_port(), fleet.webui_url, api, worker)
    statuses: list[tuple[str, str, int, str]] = []
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.on("response", lambda r: statuses.append((r.request.method, r.url, r.status,
                                                 r.headers.get("access-control-allow-origin", "")))
          if r.url.startswith((fleet.webui_url, api, worker)) else None)
    try:
        pg.goto(f"http://127.0.0.1:{site.server_address[1]}/", wait_until="load")
        wait_for(lambda: pg.evaluate("() => window.frameReady") and any(f.url == "about:srcdoc" for f in pg.frames),
                 30, "the sandboxed frame ready and attached")
        pg.evaluate("() => document.querySelector('iframe').contentWindow.postMessage('go', '*')")
        try:
            results = wait_for(lambda: (r := pg.evaluate("() => window.results")) and "page" in r and "sandboxed" in r
                               and r, 60, "the attacks to run")
        except AssertionError:
            raise AssertionError(f"{pg.evaluate('() => window.results')} {statuses}") from None
        # the browser reports a response after the script has it, and Playwright delivers events
        # only while it is called: wait in the page for all of them
        posts = lambda: [s for s in statuses if s[0] == "POST"]
        try:
            wait_for(lambda: pg.wait_for_timeout(100) or len(posts()) >= 8, 20, "the page's and the frame's POSTs")  # joins, chat, generate
        except AssertionError:
            raise AssertionError(statuses) from None
    finally:
        ctx.close()
        site.shutdown()
    for where in ("page", "sandboxed"):
        got = results[where]
        assert got["config"].startswith("blocked") and got["models"].startswith("blocked"), (where, got)
    assert all(status == 403 for _, _, status, _ in posts()), posts()  # refused before they are routed
    assert not any(allow for *_, allow in statuses), statuses  # and no answer grants another origin anything
    # the worker generated nothing: its generation routes answer the fleet only
    log = fleet.procs[f"worker-{SMALL}"].output()
    assert "processing task" not in log, log[-2000:]
    # and the services still serve their own clients
    assert httpx.get(fleet.webui_url + "/config", headers={"Origin": "null"}).status_code == 403
    assert "access-control-allow-origin" not in httpx.get(fleet.webui_url + "/config", headers={"Origin": "null"}).headers
    assert httpx.get(fleet.webui_url + "/config").status_code == 200
    assert httpx.get(api + "/v1/models").status_code == 200
