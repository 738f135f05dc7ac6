"""The API's refusals without a model: the request models (deploy/api/protocol.py) and the gate
(deploy/api/gate.py), through the real app factory with no fleet behind it (every refusal here
happens before a worker is asked), and the gate alone in front of a recording app. Every answer
is OpenAI-shaped with the right status. tests/test_api_security.py runs the whole API against
real workers."""
import asyncio
import json
import os
import stat
import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from conftest import free_port, write_registry
from deploy.api.app import ApiSettings, build_app
from deploy.api.gate import ApiGate, GateSettings
from deploy.api.protocol import ChatCompletionRequest
from deploy.api.routes import RouteKinds, route_table
from deploy.wire.errors import reshape
from deploy.wire.keys import KeysError, add_key, read_keys
from deploy.wire.strict_json import MAX_DEPTH

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
NOWHERE = "http://127.0.0.1:9"  # no controller: a request that got past its checks would fail there


def chat(**over):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(over)
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def api():
    return TestClient(build_app(ApiSettings(NOWHERE, GateSettings())), raise_server_exceptions=False,
                      base_url="http://127.0.0.1")


def refused(api, path: str, raw: bytes) -> tuple[int, dict]:
    r = api.post(path, content=raw, headers={"content-type": "application/json"})
    return r.status_code, r.json()["error"]


# (what, path, raw body, status, param named in the error, or a phrase of the message)
BAD = [
    ("not JSON", CHAT, b"{", 400, "invalid JSON"),
    ("not an object", CHAT, b"[1]", 400, "JSON object"),
    ("not UTF-8", CHAT, b'{"model": "\xff"}', 400, "not UTF-8"),
    ("NaN", CHAT, chat()[:-1] + b', "seed": NaN}', 400, "NaN"),
    ("Infinity", CHAT, chat()[:-1] + b', "temperature": Infinity}', 400, "Infinity"),
    ("-Infinity", CHAT, chat()[:-1] + b', "top_p": -Infinity}', 400, "-Infinity"),
    ("1e400", CHAT, chat()[:-1] + b', "seed": 1e400}', 400, "out of range"),
    ("huge integer", CHAT, chat()[:-1] + b', "seed": ' + b"9" * 5000 + b"}", 400, "invalid JSON"),
    ("deep nesting", CHAT, b'{"model": "m", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply"),
    ("lone surrogate", CHAT, b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', 400,
     "messages[0].content"),
    ("no messages", CHAT, b'{"model": "m"}', 400, "messages"),
    ("empty messages", CHAT, chat(messages=[]), 400, "messages"),
    ("message not an object", CHAT, chat(messages=["hi"]), 400, "messages[0]"),
    ("no role", CHAT, chat(messages=[{"content": "hi"}]), 400, "messages[0].role"),
    ("unknown role", CHAT, chat(messages=[{"role": "robot", "content": "hi"}]), 400, "messages[0].role"),
    ("user without content", CHAT, chat(messages=[{"role": "user"}]), 400, "messages[0].content"),
    ("content a number", CHAT, chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    ("part without type", CHAT, chat(messages=[{"role": "user", "content": [{"text": "hi"}]}]), 400,
     "messages[0].content[0]"),
    ("image part", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]), 400, "take no images"),
    ("audio part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), 400,
     "only text parts"),
    ("tool message without tools", CHAT, chat(messages=[{"role": "user", "content": "hi"},
                                                        {"role": "tool", "content": "42", "tool_call_id": "a"}]),
     400, "has no 'tools'"),
    ("only a system message", CHAT, chat(messages=[{"role": "system", "content": "be brief"}]), 400, "no user message"),
    ("model missing", CHAT, json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "model"),
    ("model a number", CHAT, chat(model=3), 400, "model"),
    ("temperature NaN-free but > 2", CHAT, chat(temperature=2.5), 400, "temperature"),
    ("temperature a string", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("top_p > 1", CHAT, chat(top_p=1.5), 400, "top_p"),
    ("n = 0", CHAT, chat(n=0), 400, "'n'"),
    ("n = 1000", CHAT, chat(n=1000), 400, "'n'"),
    ("max_tokens 0", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens 1.5", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("max_tokens true", CHAT, chat(max_tokens=True), 400, "max_tokens"),
    ("seed beyond int64", CHAT, chat(seed=2 ** 70), 400, "seed"),
    ("stop a number", CHAT, chat(stop=5), 400, "stop"),
    ("five stops", CHAT, chat(stop=list("abcde")), 400, "stop"),
    ("stream a string", CHAT, chat(stream="yes"), 400, "stream"),
    ("stream_options without stream", CHAT, chat(stream_options={"include_usage": True}), 400, "stream_options"),
    ("response_format unknown", CHAT, chat(response_format={"type": "xml"}), 400, "response_format.type"),
    ("top_logprobs without logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    ("top_logprobs 50", CHAT, chat(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    ("logit_bias", CHAT, chat(logit_bias={"50256": -100}), 400, "logit_bias"),
    ("empty prompt list", COMPLETIONS, b'{"model": "m", "prompt": []}', 400, "prompt"),
    ("token-id prompt", COMPLETIONS, b'{"model": "m", "prompt": [1, 2, 3]}', 400, "as text"),
    ("token-id prompts", COMPLETIONS, b'{"model": "m", "prompt": [[1, 2], [3]]}', 400, "as text"),
    ("prompt a number", COMPLETIONS, b'{"model": "m", "prompt": 5}', 400, "prompt"),
    ("suffix", COMPLETIONS, b'{"model": "m", "prompt": "a", "suffix": "b"}', 400, "suffix"),
    ("best_of 3", COMPLETIONS, b'{"model": "m", "prompt": "a", "best_of": 3}', 400, "best_of"),
    ("completion logprobs 9", COMPLETIONS, b'{"model": "m", "prompt": "a", "logprobs": 9}', 400, "logprobs"),
    ("embeddings empty", EMBEDDINGS, b'{"model": "m", "input": []}', 400, "input"),
    ("embeddings token ids", EMBEDDINGS, b'{"model": "m", "input": [1, 2]}', 400, "as text"),
    ("embeddings dimensions", EMBEDDINGS, b'{"model": "m", "input": "a", "dimensions": 8}', 400, "dimensions"),
    ("token_check prompts", "/api/v1/token_check", b'{"prompts": 3}', 400, "prompts"),
]


@pytest.mark.parametrize("what,path,raw,status,named", BAD, ids=[b[0] for b in BAD])
def test_bad_bodies_get_a_4xx_naming_the_problem(api, what, path, raw, status, named):
    got, e = refused(api, path, raw)
    assert got == status
    assert named in e["message"] or named == e["param"], e
    assert e["type"] == "invalid_request_error" and "cannot reach the controller" not in e["message"]


def test_what_real_clients_send_is_normalised():
    body = ChatCompletionRequest.model_validate_json(chat(messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "system", "content": "Answer in Chinese."},
        {"role": "user", "name": "alice", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "again"}],
        max_completion_tokens=7, temperature=None, seed=3.0, stream=True, stream_options={"include_usage": True},
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}},
        logprobs=True, top_logprobs=2, tool_choice="none"))
    assert body.ask().messages() == [{"role": "system", "content": "Be brief.\n\nAnswer in Chinese."},
                                      {"role": "user", "content": "Hi\nthere"},
                                      {"role": "assistant", "content": ""},
                                      {"role": "user", "content": "again"}]
    s = body.sampling()
    assert s.max_new_tokens == 7 and s.temperature == 0.7 and s.seed == 3 and isinstance(s.seed, int)
    assert (body.include_usage, s.json_schema, s.logprobs) == (True, {"type": "object"}, 2)
    assert body.needs == {"json", "logprobs"}


class FakeWorkers:
    """Stands in for the fleet to see what a router asks of it (no worker answers here)."""

    def __init__(self):
        self.asked = []

    async def route(self, model, needs=frozenset()):
        self.asked.append((model, set(needs)))
        from deploy.wire.errors import ClientError

        raise ClientError(404, f"no {model}", code="model_not_found")


def test_engines_route_takes_the_model_from_its_path():
    app = build_app(ApiSettings(NOWHERE, GateSettings()))
    app.app.app.state.workers = FakeWorkers()  # the Host check, the gate, the FastAPI app
    r = TestClient(app, base_url="http://127.0.0.1").post("/v1/engines/smol/embeddings", json={"input": "hi"})
    assert r.status_code == 404 and app.app.app.state.workers.asked == [("smol", {"embeddings"})]


def test_nesting_is_accepted_up_to_the_limit(api):
    def nested(levels: int) -> bytes:  # the body object is level 1
        return b'{"model": "m", "prompt": "a", "user_data": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    status, e = refused(api, COMPLETIONS, nested(MAX_DEPTH))
    assert "cannot reach the controller" in e["message"]  # got past every check
    assert "nested too deeply" in refused(api, COMPLETIONS, nested(MAX_DEPTH + 1))[1]["message"]


@pytest.mark.parametrize("status,body,want_status,want_code", [
    (400, b'{"object": "error", "message": "Only a allowed now", "code": 40301}', 404, "40301"),
    (400, b'{"object": "error", "message": "too long", "code": 40303}', 400, "40303"),
    (400, b'{"object": "error", "message": "no worker", "code": 50005}', 503, "50005"),
    (404, b'{"detail": "Not Found"}', 404, None),
    (500, b"Internal Server Error", 500, None),
])
def test_fastchat_and_starlette_errors_are_reshaped(status, body, want_status, want_code):
    new_status, new_body = reshape(status, body)
    err = json.loads(new_body)["error"]
    assert new_status == want_status and err["code"] == want_code and err["message"]


# ---- the gate as ASGI ------------------------------------------------------------------------

class Recorder:
    """The app behind the gate: records what reached it and answers as told."""

    def __init__(self, status=200, body=b'{"ok": true}', crash=None, hold: asyncio.Event | None = None):
        self.calls, self.status, self.body, self.crash, self.hold = [], status, body, crash, hold

    async def __call__(self, scope, receive, send):
        msg = await receive()
        self.calls.append((scope["path"], msg.get("body", b""), scope["state"]["notes"]))
        if self.hold:
            await self.hold.wait()
        if self.crash == "before":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})
        if self.crash == "after":  # what Starlette's ServerErrorMiddleware does: answer, then re-raise
            raise RuntimeError("boom")


def call(gate, path="/v1/chat/completions", body=b"", headers=(), method="POST", receive=None):
    sent = []

    async def default_receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-length", str(len(body)).encode()), *headers]}
    asyncio.run(gate(scope, receive or default_receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), out


KEY = "sk-fleet-" + "k" * 40
KINDS = RouteKinds(route_table(NOWHERE))


def gate_for(app, **settings):
    return ApiGate(app, GateSettings(**settings), KINDS)


def test_a_missing_key_is_refused_before_the_body_is_read():
    app = Recorder()

    async def receive():
        raise AssertionError("the body was read before the key was checked")

    gate = gate_for(app, api_keys=frozenset({KEY}))
    for headers in ((), ((b"authorization", b"Bearer wrong-key-wrong-key"),), ((b"authorization", KEY.encode()),)):
        status, hdrs, body = call(gate, headers=headers, receive=receive)
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        assert hdrs[b"www-authenticate"] == b"Bearer"
    for path in ("/docs", "/openapi.json", "/api/v1/token_check", "/v1/models"):
        assert call(gate, path=path, method="GET", receive=receive)[0] == 401
    assert app.calls == []
    status, _, _ = call(gate, body=chat(), headers=((b"authorization", f"Bearer {KEY}".encode()),))
    assert status == 200 and len(app.calls) == 1


def test_bodies_are_bounded_in_size_and_time():
    app = Recorder()
    gate = gate_for(app, body_limit=1000, read_timeout=0.3)

    async def never():
        raise AssertionError("read a body whose Content-Length is over the limit")

    status, _, body = call(gate, headers=((b"content-length", b"10000000"),), receive=never)
    assert status == 413 and "limit is 1000 bytes" in json.loads(body)["error"]["message"]

    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3

    async def growing():  # no Content-Length: chunked, growing past the limit
        return chunks.pop()

    assert call(gate, receive=growing)[0] == 413

    async def stalls():  # a Content-Length larger than what is sent: the body never completes
        await asyncio.sleep(3600)

    t0 = time.monotonic()
    status, hdrs, body = call(gate, receive=stalls)
    assert status == 408 and hdrs[b"connection"] == b"close" and time.monotonic() - t0 < 2
    assert app.calls == []


def test_the_body_reaches_the_app_as_sent_and_the_model_is_noted():
    app = Recorder()
    gate = gate_for(app)
    sent = chat(seed=11)
    call(gate, body=sent)
    path, body, notes = app.calls[0]
    assert body == sent and notes.model == "m"  # the route's own model checks the fields
    status, _, body = call(gate, body=chat()[:-1] + b', "seed": NaN}')
    assert status == 400 and "NaN" in json.loads(body)["error"]["message"] and len(app.calls) == 1
    status, _, body = call(gate, body=b"[1]")
    assert status == 400 and "JSON object" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("crash", ["before", "after"])
def test_a_crash_behind_the_gate_is_a_json_500(crash):
    gate = gate_for(Recorder(status=500, body=b"Internal Server Error", crash=crash))
    status, hdrs, body = call(gate, body=chat())
    assert status == 500 and hdrs[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["type"] == "server_error"


def test_fastchat_errors_leave_openai_shaped():
    gate = gate_for(Recorder(status=400, body=b'{"object": "error", "message": "no such model", "code": 40301}'))
    status, hdrs, body = call(gate, body=chat())
    assert status == 404 and json.loads(body)["error"]["message"] == "no such model"
    assert hdrs[b"content-length"] == str(len(body)).encode()


def test_requests_beyond_the_in_flight_cap_get_429():
    async def scenario():
        hold = asyncio.Event()
        app = Recorder(hold=hold)
        gate = gate_for(app, max_in_flight=2)
        results = []

        async def one():
            sent = []

            async def receive():
                return {"type": "http.request", "body": chat(), "more_body": False}

            async def send(m):
                sent.append(m)

            await gate({"type": "http", "method": "POST", "path": CHAT, "headers": []}, receive, send)
            results.append(sent[0]["status"])

        tasks = [asyncio.create_task(one()) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert results == [429]  # the third, while two are held
        hold.set()
        await asyncio.gather(*tasks)
        assert sorted(results) == [200, 200, 429] and gate.in_flight == 0

    asyncio.run(scenario())


# ---- keys -------------------------------------------------------------------------------------

def test_keys_file_is_created_private_and_read_back(tmp_path):
    path = tmp_path / "conf" / "api_keys"
    k1, k2 = add_key(path), add_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and k1 != k2 and k1.startswith("sk-fleet-")
    assert read_keys(path) == {k1, k2}
    os.chmod(path, 0o644)
    with pytest.raises(KeysError, match="chmod 600"):
        read_keys(path)
    os.chmod(path, 0o600)
    path.write_text("# only a comment\n\n")
    with pytest.raises(KeysError, match="holds no key"):
        read_keys(path)


def _registry(tmp_path, host="127.0.0.1"):
    reg = tmp_path / "model_paths.toml"
    write_registry(reg, [], free_port(), free_port(), free_port())
    reg.write_text(reg.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    return reg


def test_keys_add_creates_a_key_and_names_the_file(tmp_path):
    reg = _registry(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "keys", "add"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.split("mode 600):\n")[1].split("\n")[0]
    assert 'api_keys_file = "~/.config/fastchat-fleet/api_keys"' in reg.read_text()
    assert read_keys(tmp_path / ".config/fastchat-fleet/api_keys") == {key}
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "keys", "list"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert "1 key(s)" in r.stdout and key not in r.stdout  # masked


def test_api_beyond_loopback_requires_keys(tmp_path):
    reg = _registry(tmp_path, host="0.0.0.0")
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "api-server"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 78
    assert "open to anyone who can reach 0.0.0.0" in r.stderr and "keys add" in r.stderr
