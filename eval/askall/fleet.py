"""Which models are up: asked of the controller (every registered worker), not of model_paths.toml."""
from __future__ import annotations

from dataclasses import dataclass, field

import requests


class AskAllError(Exception):
    """Bad input or an unusable fleet: printed as one line, exit code 2."""


@dataclass
class ModelInfo:
    name: str
    worker: str
    info: dict = field(default_factory=dict)  # backend, cores, budget... from the worker's /fleet_info


def discover(controller: str, timeout: float = 5) -> list[ModelInfo]:
    controller = controller.rstrip("/")
    try:
        requests.post(controller + "/refresh_all_workers", timeout=timeout)
        names = requests.post(controller + "/list_models", timeout=timeout).json()["models"]
    except (requests.RequestException, ValueError, KeyError) as e:
        raise AskAllError(f"cannot reach the controller at {controller} ({type(e).__name__}). "
                          f"Fix: start the fleet (scripts/up.sh) or pass --controller URL") from None
    if not names:
        raise AskAllError(f"no models are registered with the controller at {controller}. "
                          f"Fix: start the workers (scripts/up.sh; python -m deploy status shows why one is missing)")
    out = []
    for name in sorted(names):
        addr = requests.post(controller + "/get_worker_address", json={"model": name}, timeout=timeout).json()["address"]
        try:
            info = requests.get(addr + "/fleet_info", timeout=timeout).json()
        except (requests.RequestException, ValueError):
            info = {}  # a worker that is not ours (e.g. FastChat's vLLM worker on a GPU host)
        out.append(ModelInfo(name, addr, info if isinstance(info, dict) else {}))
    return out
