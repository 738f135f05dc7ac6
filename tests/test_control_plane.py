"""The controller: only holders of the fleet secret register, fields are validated, it never
blocks on a worker, and a worker that stops answering leaves routing within seconds."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from deploy.control.controller import SECRET_HEADER, create_controller_app

SECRET = "s3cret-" + "x" * 32


class FakeWorker:
    """A worker-shaped HTTP server: answers status checks (or hangs, or is gone) and records prompts."""

    def __init__(self, models=("m",), hang: bool = False, port: int = 0):
        self.prompts: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hang:
                    time.sleep(30)
                    return
                if self.path == "/worker_generate_stream":
                    fake.prompts.append(json.loads(body).get("prompt", ""))
                    out = json.dumps({"text": "stolen", "error_code": 0, "finish_reason": "stop"}).encode() + b"\0"
                else:
                    out = json.dumps({"model_names": list(models), "speed": 1, "queue_length": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def registration(url, models=("m",), speed=1, queue=0):
    return {"worker_name": url, "check_heart_beat": True, "multimodal": False,
            "worker_status": {"model_names": list(models), "speed": speed, "queue_length": queue}}


@pytest.fixture
def controller():
    with TestClient(create_controller_app(SECRET, check_interval=0.2, status_timeout=1.0),
                    client=("127.0.0.1", 50000)) as c:  # a client on the same machine, as the API server is
        yield c


def models(c) -> list[str]:
    return c.post("/list_models").json()["models"]


def test_registration_needs_the_secret(controller):
    w = FakeWorker()
    try:
        for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET[:-1]}):
            r = controller.post("/register_worker", json=registration(w.url), headers=headers)
            assert r.status_code == 401 and SECRET_HEADER in r.json()["error"]
        # what a web page can send without a preflight: text/plain
        r = controller.post("/register_worker", content=json.dumps(registration(w.url)),
                            headers={"Content-Type": "text/plain"})
        assert r.status_code == 401
        for path in ("/receive_heart_beat", "/refresh_all_workers"):
            assert controller.post(path, json={"worker_name": w.url, "queue_length": 0}).status_code == 401
        assert models(controller) == []
        r = controller.post("/register_worker", json=registration(w.url), headers={SECRET_HEADER: SECRET})
        assert r.status_code == 200 and models(controller) == ["m"]
        assert controller.post("/get_worker_address", json={"model": "m"}).json()["address"] == w.url
    finally:
        w.close()


def test_registration_fields_are_validated(controller):
    auth = {SECRET_HEADER: SECRET}
    cases = [(registration("http://127.0.0.1:9", speed=0), "worker_status.speed"),
             (registration("http://127.0.0.1:9", speed=float("inf")), "worker_status.speed"),
             (registration("http://127.0.0.1:9", queue="x"), "worker_status.queue_length"),
             (registration("http://127.0.0.1:9", models=()), "worker_status.model_names"),
             (registration("not-a-url"), "worker_name")]
    for body, field in cases:
        r = controller.post("/register_worker", content=json.dumps(body),
                            headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 400 and f"field '{field}'" in r.json()["error"], (body, r.text)
    r = controller.post("/receive_heart_beat", json={"worker_name": "http://127.0.0.1:9", "queue_length": "x"},
                        headers=auth)
    assert r.status_code == 400 and "field 'queue_length'" in r.json()["error"]
    r = controller.post("/register_worker", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = controller.post("/get_worker_address", content=b"[]")
    assert r.status_code == 400
    assert models(controller) == []


def test_a_worker_that_stops_answering_leaves_routing_and_comes_back(controller):
    w = FakeWorker()
    port = w.server.server_address[1]
    controller.post("/register_worker", json=registration(w.url), headers={SECRET_HEADER: SECRET})
    assert models(controller) == ["m"]
    w.close()
    t0 = time.monotonic()
    while models(controller) and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert models(controller) == [] and time.monotonic() - t0 < 5
    assert controller.post("/get_worker_address", json={"model": "m"}).json()["address"] == ""
    gone = controller.get("/fleet_workers").json()["workers"]
    assert gone[0]["healthy"] is False and "Error" in gone[0]["reason"]  # why it left, e.g. ConnectError
    # the same worker answering again is routed to again, without registering anew
    back = FakeWorker(port=port)
    try:
        t0 = time.monotonic()
        while not models(controller) and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert models(controller) == ["m"]
    finally:
        back.close()


def test_slow_workers_cannot_freeze_the_controller(controller):
    hanging = [FakeWorker(models=("slow",), hang=True) for _ in range(3)]
    good = FakeWorker(models=("m",))
    try:
        auth = {SECRET_HEADER: SECRET}
        for w in hanging + [good]:
            name = "m" if w is good else "slow"
            assert controller.post("/register_worker", json=registration(w.url, models=(name,)),
                                   headers=auth).status_code == 200
        time.sleep(0.5)  # health checks of the hanging ones are in flight now
        for _ in range(20):
            t0 = time.monotonic()
            assert "m" in models(controller)
            assert time.monotonic() - t0 < 0.5  # never waits for a worker
        t0 = time.monotonic()
        while "slow" in models(controller) and time.monotonic() - t0 < 5:
            time.sleep(0.1)
        assert models(controller) == ["m"]  # the ones that never answer left routing (timeout 1 s here)
    finally:
        for w in hanging + [good]:
            w.close()


def test_clients_on_other_machines_need_the_secret_for_every_route():
    """A controller bound beyond loopback (for worker hosts) tells nobody else where its workers are."""
    app = create_controller_app(SECRET, check_interval=0.2, status_timeout=1.0)
    with TestClient(app, client=("192.168.1.50", 40000)) as far, TestClient(app, client=("127.0.0.1", 40000)) as near:
        for route in ("/list_models", "/get_worker_address", "/worker_get_status"):
            assert far.post(route, json={"model": "m"}).status_code == 401
            assert far.post(route, json={"model": "m"}, headers={SECRET_HEADER: SECRET}).status_code == 200
            assert near.post(route, json={"model": "m"}).status_code == 200
