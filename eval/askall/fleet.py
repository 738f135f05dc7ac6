"""Which models are up: asked of the controller (every registered worker), not of model_paths.toml."""
from __future__ import annotations

from dataclasses import dataclass, field

from deploy.registry.sizes import fmt_size
from deploy.wire.client import FleetClient, ModelUnavailable


class AskAllError(Exception):
    """Bad input or an unusable fleet: printed as one line, exit code 2."""


@dataclass
class ModelInfo:
    name: str
    worker: str
    info: dict = field(default_factory=dict)  # backend, cores, budget... from the worker's /fleet_info


def discover(controller: str) -> list[ModelInfo]:
    client = FleetClient(controller)
    try:
        names = client.list_models()
    except ModelUnavailable as e:
        raise AskAllError(f"{e}. Fix: start the fleet (scripts/up.sh) or pass --controller URL") from None
    if not names:
        raise AskAllError(f"no models are registered with the controller at {client.controller_url}. "
                          f"Fix: start the workers (scripts/up.sh; python -m deploy status shows why one is missing)")
    out = []
    for name in names:
        try:
            addr = client.worker_address(name)
        except ModelUnavailable:
            continue  # gone between the two calls
        out.append(ModelInfo(name, addr, client.worker_info(addr)))
    client.close()
    return out


def cannot_all_be_resident(controller: str, names: list[str]) -> str | None:
    """Why the models cannot all be in memory at once (their budgets exceed a host's memory pool,
    with every other model there asleep), or None when they can."""
    client = FleetClient(controller)
    pools = client.pools()
    client.close()
    for p in pools:
        mine = [m for m in p["members"] if m["model"] in names]
        others = sum(m["holds"] for m in p["members"] if m["model"] not in names and m["state"] == "asleep")
        need = sum(m["budget"] for m in mine) + others
        if len(mine) > 1 and need > p["limit"]:
            return (f"{', '.join(m['model'] for m in mine)} need {fmt_size(need)} together on host {p['host']}, more "
                    f"than its memory pool of {fmt_size(p['limit'])}")
    return None
