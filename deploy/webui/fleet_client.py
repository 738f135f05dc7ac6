"""The web UI's view of the fleet: who is registered, what each worker is, and streaming from one.

It speaks FastChat's own protocols (controller: list_models / get_worker_address; worker:
worker_get_conv_template / worker_generate_stream), so it works with any FastChat worker,
ours or not. Templates come from the worker, i.e. from model_paths.toml, never from a guess
by model name (FastChat's web UI falls back to a one-shot "### Human:" prompt).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import requests

from deploy.templates import conversation_from_dict


class ModelUnavailable(Exception):
    pass


@dataclass
class StreamUpdate:
    text: str
    done: bool = False
    error: str | None = None
    finish_reason: str | None = None


class FleetClient:
    def __init__(self, controller_url: str, timeout: float = 5):
        self.controller_url = controller_url.rstrip("/")
        self.timeout = timeout
        self._info: dict[str, tuple[float, dict]] = {}

    def list_models(self) -> list[str]:
        """Registered models, fresh from the controller (it drops workers that stop heart-beating)."""
        try:
            requests.post(self.controller_url + "/refresh_all_workers", timeout=self.timeout)
            return sorted(requests.post(self.controller_url + "/list_models", timeout=self.timeout).json()["models"])
        except (requests.RequestException, ValueError, KeyError):
            return []

    def worker_address(self, model: str) -> str:
        try:
            addr = requests.post(self.controller_url + "/get_worker_address", json={"model": model},
                                 timeout=self.timeout).json()["address"]
        except (requests.RequestException, ValueError, KeyError) as e:
            raise ModelUnavailable(f"cannot reach the controller ({type(e).__name__})") from None
        if not addr:
            raise ModelUnavailable(f"'{model}' has no registered worker now (it may have stopped)")
        return addr

    def info(self, model: str, max_age: float = 30) -> dict:
        """Backend, cores, budget... from our workers' /fleet_info; {} for workers that are not ours."""
        now = time.monotonic()
        cached = self._info.get(model)
        if cached and now - cached[0] < max_age:
            return cached[1]
        try:
            info = requests.get(self.worker_address(model) + "/fleet_info", timeout=self.timeout).json()
        except (requests.RequestException, ValueError, ModelUnavailable):
            info = {}
        self._info[model] = (now, info if isinstance(info, dict) else {})
        return self._info[model][1]

    def conversation(self, model: str):
        addr = self.worker_address(model)
        try:
            conv = requests.post(addr + "/worker_get_conv_template", timeout=self.timeout).json()["conv"]
        except (requests.RequestException, ValueError, KeyError) as e:
            raise ModelUnavailable(f"the worker of '{model}' does not answer ({type(e).__name__})") from None
        return conversation_from_dict(conv)

    def stream(self, model: str, conv, temperature: float = 0.7, top_p: float = 1.0, max_new_tokens: int = 1024):
        """StreamUpdate per worker frame: the text so far; the last one has done=True, or an error."""
        prompt = conv.get_prompt()
        params = {"model": model, "prompt": prompt, "temperature": temperature, "top_p": top_p,
                  "max_new_tokens": max_new_tokens, "stop": conv.stop_str, "stop_token_ids": conv.stop_token_ids,
                  "echo": False}
        text, finish = "", None
        try:
            addr = self.worker_address(model)
            with requests.post(addr + "/worker_generate_stream", json=params, stream=True, timeout=(5, 300)) as r:
                if r.status_code != 200:
                    yield StreamUpdate(text, True, f"the worker answered HTTP {r.status_code}")
                    return
                for raw in r.iter_lines(delimiter=b"\0"):
                    if not raw:
                        continue
                    frame = json.loads(raw.decode())
                    if frame.get("error_code", 0) != 0:
                        yield StreamUpdate(text, True, frame.get("text", "worker error"))
                        return
                    text = frame["text"].replace("\ufffd", "").strip()
                    finish = frame.get("finish_reason") or finish
                    yield StreamUpdate(text)
        except ModelUnavailable as e:
            yield StreamUpdate(text, True, str(e))
            return
        except (requests.RequestException, ValueError) as e:
            yield StreamUpdate(text, True, f"the worker stopped answering ({type(e).__name__})")
            return
        if finish is None:
            yield StreamUpdate(text, True, "the answer was cut off: the worker closed the stream without finishing")
            return
        yield StreamUpdate(text, True, finish_reason=finish)
