"""The request gate on its own (no model): what it refuses, how it normalises what real clients
send, and that every answer it gives is OpenAI-shaped with the right status. The gate wraps any
ASGI app, so a recording app stands behind it here; tests/test_api_security.py runs it in front
of the real FastChat API server."""
import asyncio
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import free_port, write_registry
from deploy.api.errors import ClientError, reshape
from deploy.api.gate import ApiGate, GateSettings, current_extras
from deploy.api.keys import KeysError, add_key, read_keys
from deploy.api.validate import MAX_DEPTH, check_body

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"


def chat(**over):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(over)
    return json.dumps(body).encode()


def refused(path: str, raw: bytes) -> ClientError:
    with pytest.raises(ClientError) as e:
        check_body(path, raw)
    return e.value


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
    ("tool message", CHAT, chat(messages=[{"role": "user", "content": "hi"},
                                          {"role": "tool", "content": "42", "tool_call_id": "a"}]), 400,
     "tool and function calls"),
    ("tools", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tool calling"),
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
def test_bad_bodies_get_a_4xx_naming_the_problem(what, path, raw, status, named):
    e = refused(path, raw)
    assert e.status == status
    assert named in e.message or named == e.param, (e.message, e.param)


def test_what_real_clients_send_is_normalised_for_fastchat():
    raw = chat(messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "system", "content": "Answer in Chinese."},
        {"role": "user", "name": "alice", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "again"}],
        max_completion_tokens=7, temperature=None, seed=3.0, stream=True, stream_options={"include_usage": True},
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}},
        logprobs=True, top_logprobs=2, tool_choice="none")
    body, extras = check_body(CHAT, raw)
    b = json.loads(body)
    assert b["messages"] == [{"role": "system", "content": "Be brief.\n\nAnswer in Chinese."},
                             {"role": "user", "content": "Hi\nthere", "name": "alice"},
                             {"role": "assistant", "content": ""},
                             {"role": "user", "content": "again"}]
    assert b["max_tokens"] == 7 and "temperature" not in b and b["seed"] == 3
    for gone in ("stream_options", "response_format", "logprobs", "top_logprobs", "tool_choice"):
        assert gone not in b  # FastChat would choke on or ignore them; they travel in `extras`
    assert (extras.seed, extras.include_usage, extras.json_schema, extras.logprobs, extras.chat_logprobs) == \
        (3, True, {"type": "object"}, 2, True)
    assert extras.needs == {"json", "logprobs"}


def test_engines_route_takes_the_model_from_its_path():
    body, extras = check_body("/v1/engines/smol/embeddings", b'{"input": "hi"}')
    assert json.loads(body)["model"] == "smol" and extras.needs == {"embeddings"}
    assert check_body("/v1/models", b"") is None  # routes without a body we read pass untouched


def test_nesting_is_accepted_up_to_the_limit():
    def nested(levels: int) -> bytes:  # the body object is level 1
        return b'{"model": "m", "prompt": "a", "user_data": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    check_body(COMPLETIONS, nested(MAX_DEPTH))
    assert "nested too deeply" in refused(COMPLETIONS, nested(MAX_DEPTH + 1)).message


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
        self.calls.append((scope["path"], msg.get("body", b""), current_extras.get()))
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


def test_a_missing_key_is_refused_before_the_body_is_read():
    app = Recorder()

    async def receive():
        raise AssertionError("the body was read before the key was checked")

    gate = ApiGate(app, GateSettings(api_keys=frozenset({KEY})))
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
    gate = ApiGate(app, GateSettings(body_limit=1000, read_timeout=0.3))

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


def test_normalised_body_and_extras_reach_the_app():
    app = Recorder()
    gate = ApiGate(app, GateSettings())
    call(gate, body=chat(seed=11, messages=[{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]))
    path, body, extras = app.calls[0]
    assert json.loads(body)["messages"][0] == {"role": "system", "content": "x"} and extras.seed == 11
    status, _, body = call(gate, body=chat(temperature=9))
    assert status == 400 and json.loads(body)["error"]["param"] == "temperature" and len(app.calls) == 1


@pytest.mark.parametrize("crash", ["before", "after"])
def test_a_crash_behind_the_gate_is_a_json_500(crash):
    gate = ApiGate(Recorder(status=500, body=b"Internal Server Error", crash=crash), GateSettings())
    status, hdrs, body = call(gate, body=chat())
    assert status == 500 and hdrs[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["type"] == "server_error"


def test_fastchat_errors_leave_openai_shaped():
    gate = ApiGate(Recorder(status=400, body=b'{"object": "error", "message": "no such model", "code": 40301}'),
                   GateSettings())
    status, hdrs, body = call(gate, body=chat())
    assert status == 404 and json.loads(body)["error"]["message"] == "no such model"
    assert hdrs[b"content-length"] == str(len(body)).encode()


def test_requests_beyond_the_in_flight_cap_get_429():
    async def scenario():
        hold = asyncio.Event()
        app = Recorder(hold=hold)
        gate = ApiGate(app, GateSettings(max_in_flight=2))
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
