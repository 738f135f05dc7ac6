"""An OpenAI-compatible stand-in judge on loopback, for testing the judge plumbing (check,
calibration, cascade, caching, retries) without a model. Grading quality is tested on the rules
and, with a real model, in test_ask_all.

Modes: "labels" knows each labelled example's score (a judge that agrees with the labels) and
gives `default` to anything else; "half" gives 0.5 to everything (the tiny-model failure);
"inconsistent" says "right" with score 0.2. `fail_calls`: the grading calls (1-based) answered
with an unusable reply, in any mode.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eval.askall.puzzles import load_puzzles


class StandInJudge:
    def __init__(self, mode="labels", name="stand-in", default=0.5, fail_calls=(), puzzle_file=None):
        self.mode, self.name, self.default, self.fail_calls = mode, name, default, set(fail_calls)
        self.labels = {e.answer: e.score for p in load_puzzles(puzzle_file) for e in p.examples}
        self.calls: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, obj, status=200):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": judge.name, "object": "model", "created": 0,
                                                         "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.calls.append(body)
                content = judge.reply(body["messages"][-1]["content"])
                self._send({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content}}]})

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def grading_calls(self) -> list[dict]:
        return [c for c in self.calls if "Answer to grade" in c["messages"][-1]["content"]]

    def reply(self, prompt: str) -> str:
        if "Answer to grade" not in prompt:
            return "ok"
        if len(self.grading_calls()) in self.fail_calls:
            return "I think this answer is fine."
        if self.mode == "half":
            return '{"verdict": "partial", "score": 0.5, "reason": "some of it"}'
        if self.mode == "inconsistent":
            return '{"verdict": "right", "score": 0.2, "reason": "mostly wrong"}'
        answer = re.search(r"Answer to grade:\n(.*)\n\nGive partial credit", prompt, re.S).group(1)
        score = self.labels.get(answer, self.default)
        verdict = "right" if score >= 1 else "partial" if score > 0 else "wrong"
        return json.dumps({"verdict": verdict, "score": score, "reason": "stand-in judge"})

    def close(self):
        self.server.shutdown()
        self.server.server_close()
