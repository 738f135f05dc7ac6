"""A fourth backend, as a newcomer would add one: this file plus one registration line
(`BACKENDS["echo"] = Echo()`). It serves a text file as its "model" and answers by echoing
the prompt, so tests can prove the launcher, fit check, limits and worker app need no change."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from deploy.backends.base import Backend, ModelShape


class Echo(Backend):
    name = "echo"
    summary = "a text file; answers by echoing the prompt (tests only)"
    runtime_overhead = 64 * 1024**2
    address_space_headroom = 2 * 1024**3

    def path_problem(self, path: Path) -> str | None:
        return None if path.suffix == ".txt" else f"{path} is not a .txt file. Fix: point to a .txt file."

    def shape(self, entry) -> ModelShape:
        return ModelShape(entry.resolved_path.stat().st_size, n_layers=1, n_kv_heads=1, head_dim=8, kv_bytes_per_value=1)

    def describe(self, entry) -> dict:
        return {"backend": self.name, "quantisation": "none", "greeting": entry.resolved_path.read_text().strip()}

    def build_worker(self, entry, controller_url: str, worker_url: str):
        return EchoWorker(entry)


class EchoWorker:
    """The parts of FastChat's worker interface the worker app uses."""

    def __init__(self, entry):
        self.model_names = [entry.model_name]
        self.limit_worker_concurrency = entry.concurrency
        self.context_len = entry.context_length
        self.conv_template = entry.chat_template
        self.call_ct = 0

    def get_queue_length(self):
        return 0

    def get_status(self):
        return {"model_names": self.model_names, "speed": 1, "queue_length": 0}

    def get_conv_template(self):
        return {"conv": None}

    async def generate_stream_gate(self, params):
        text = ""
        for word in params["prompt"].split():
            text += word + " "
            await asyncio.sleep(0)
            yield json.dumps({"text": text, "error_code": 0}).encode() + b"\0"
        yield json.dumps({"text": text, "error_code": 0, "finish_reason": "stop"}).encode() + b"\0"
