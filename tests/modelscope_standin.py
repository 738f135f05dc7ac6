"""A stand-in for the part of ModelScope's hub API that the real `modelscope` client uses to
download a model: the file list of a revision and file downloads with HTTP ranges. It serves a
real model folder under any model id, on loopback, and records what was asked, so tests can
drive the real client through ModelScope's own endpoint setting (MODELSCOPE_ENDPOINT).

Knobs for tests: `cut_after` (bytes) closes the connection mid-file once, as a dropped download
does; `corrupt` names a file whose bytes are served altered while its listed sha256 is not;
`rate` slows large files down so a test can kill the client halfway.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from deploy.provision.default_models import sha256_of

REVISION = "master"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class ModelScopeStandIn:
    def __init__(self, folder: Path, model_id: str):
        self.folder, self.model_id = Path(folder), model_id
        self.files = {p.name: p for p in sorted(self.folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
        self.sha = {name: sha256_of(p) for name, p in self.files.items()}
        self.requests: list[dict] = []
        self.bytes_sent: dict[str, int] = {}
        self.cut_after: int | None = None
        self.corrupt: str | None = None
        self.rate: float | None = None  # bytes per second for large files, so a test can stop one halfway
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def listing(self) -> list[dict]:
        return [{"Name": n, "Path": n, "Type": "blob", "Size": p.stat().st_size, "Sha256": self.sha[n],
                 "Revision": COMMIT, "IsLFS": p.stat().st_size > 1 << 20, "CommittedDate": 1700000000}
                for n, p in self.files.items()]

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, status: int, data) -> None:
                body = json.dumps({"Code": 200 if status == 200 else status, "Data": data,
                                   "Message": "ok" if status == 200 else "not found",
                                   "Success": status == 200, "RequestId": "standin"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head: bool = False):
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                with standin._lock:
                    standin.requests.append({"method": self.command, "path": url.path, "query": q,
                                             "range": self.headers.get("Range")})
                m = re.fullmatch(r"/api/v1/models/(.+)/repo/files", url.path)
                if m:
                    if unquote(m.group(1)) != standin.model_id:
                        return self._json(404, None)
                    return self._json(200, {"Files": standin.listing()})
                m = re.fullmatch(r"/api/v1/models/(.+)/revisions", url.path)
                if m:
                    return self._json(200, {"RevisionMap": {"Branches": [{"Revision": REVISION, "CommitId": COMMIT}],
                                                            "Tags": []}})
                m = re.fullmatch(r"/api/v1/models/(.+)/repo", url.path)
                if m and unquote(m.group(1)) == standin.model_id and q.get("FilePath") in standin.files:
                    return self._file(q["FilePath"], head)
                m = re.fullmatch(r"/api/v1/models/(.+)", url.path)
                if m and unquote(m.group(1)) == standin.model_id:
                    return self._json(200, {"Id": 1, "Name": standin.model_id.split("/")[-1],
                                            "Path": standin.model_id.split("/")[0], "Revision": REVISION})
                return self._json(404, None)

            def _file(self, name: str, head: bool) -> None:
                data = standin.files[name].read_bytes()
                if name == standin.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
                    start = int(m.group(1))
                    end = int(m.group(2)) + 1 if m.group(2) else len(data)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                    data = data[start:end]
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                cut = standin.cut_after
                if cut is not None and len(data) > cut:
                    standin.cut_after = None  # once
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    with standin._lock:
                        standin.bytes_sent[name] = standin.bytes_sent.get(name, 0) + cut
                    self.close_connection = True
                    self.connection.shutdown(2)  # a dropped connection halfway
                    return
                step = 1 << 22
                for i in range(0, len(data), step):
                    try:
                        self.wfile.write(data[i:i + step])
                    except (BrokenPipeError, ConnectionResetError):
                        break  # the client went away (killed): count what it got
                    with standin._lock:
                        standin.bytes_sent[name] = standin.bytes_sent.get(name, 0) + len(data[i:i + step])
                    if standin.rate and len(data) > 1 << 24:
                        time.sleep(step / standin.rate)

        return Handler
