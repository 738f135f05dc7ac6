"""A fourth backend, as a newcomer would add one: this file plus one registration line
(`BACKENDS["echo"] = Echo()`). It serves a text file as its "model" and answers by echoing
the prompt, so tests can prove the registry, launcher, fit check, limits and worker app need no
change: its own entry field (`greeting_suffix`) is validated by the registry and reported."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from deploy.backends.base import Backend, ModelShape
from deploy.registry.options import BackendOptions
from deploy.wire.frames import frame


class EchoOptions(BackendOptions):
    backend: ClassVar[str] = "echo"
    summary: ClassVar[str] = "a text file; answers by echoing the prompt (tests only)"
    greeting_suffix: str = Field(default="", max_length=8, description="Added to the greeting /fleet_info shows.")

    def path_problem(self, path: Path) -> str | None:
        return None if path.suffix == ".txt" else f"{path} is not a .txt file. Fix: point to a .txt file."


class Echo(Backend):
    options = EchoOptions
    runtime_overhead = 64 * 1024**2
    address_space_headroom = 2 * 1024**3

    def shape(self, entry) -> ModelShape:
        return ModelShape(entry.resolved_path.stat().st_size, n_layers=1, n_kv_heads=1, head_dim=8, kv_bytes_per_value=1)

    def describe(self, entry) -> dict:
        return {"backend": self.name, "quantisation": "none",
                "greeting": entry.resolved_path.read_text().strip() + entry.options.greeting_suffix}

    def build_worker(self, entry, controller_url: str, worker_url: str):
        return EchoWorker(entry)


class EchoWorker:
    """FastChat's worker interface (deploy.backends.base.FleetWorker), echoing."""

    def __init__(self, entry):
        self.model_names = [entry.model_name]
        self.limit_worker_concurrency = entry.concurrency
        self.context_len = entry.context_length
        self.conv_template = entry.chat_template
        self.call_ct = 0

    def load(self):
        self.greeting = "loaded"

    def unload(self):
        self.greeting = None

    def get_queue_length(self):
        return 0

    def get_status(self):
        return {"model_names": self.model_names, "speed": 1, "queue_length": 0}

    def get_conv_template(self):
        return {"conv": None}

    def text_for_tokenizer(self, prompt: str) -> str:
        return prompt

    def count_token(self, params):
        return {"count": len(params["prompt"].split()), "error_code": 0}

    async def generate_stream_gate(self, params):
        text = ""
        for word in params["prompt"].split():
            text += word + " "
            await asyncio.sleep(0)
            yield frame({"text": text, "error_code": 0})
        yield frame({"text": text, "error_code": 0, "finish_reason": "stop"})

    async def generate_gate(self, params):
        return {"text": params["prompt"], "error_code": 0, "finish_reason": "stop"}
