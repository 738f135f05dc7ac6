"""Which cores a new model should get, when the user does not say.

Measured with bench/seed_scale.py (three seed-shaped 7B Q4_K_M models on this project's 2-core
machines; figures in bench/README.md, "The seed models at scale"), all three decoding at once:
every model on both cores with 2 threads each: 2.35 tok/s in all (the six llama.cpp threads spin
while they wait for each other and fight for two cores); one core each (two models sharing one)
with 1 thread: 6.49; every model on both cores with 1 thread each: 8.59, the best (the scheduler
spreads three threads over two cores). So: with as many models as cores or more, a model gets
every core and one thread; with fewer, the least-used cores, as many as the machine has per
model, one thread per core.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Placement:
    cores: list[int]
    threads: int
    reason: str


def propose(existing: list[list[int]], host_cores: list[int]) -> Placement:
    """Cores for one more model, given the cores of the models already registered."""
    load = {c: 0 for c in host_cores}
    for cores in existing:
        for c in cores:
            if c in load:
                load[c] += 1
    n_models = len(existing) + 1
    if n_models >= len(host_cores) and n_models > 1:
        return Placement(sorted(host_cores), 1, f"{n_models} models on {len(host_cores)} core(s): every core, one "
                         f"thread each, measured best for more models than cores "
                         f"(bench/README.md, 'The seed models at scale')")
    per_model = max(1, len(host_cores) // n_models)
    chosen = sorted(sorted(load, key=lambda c: (load[c], c))[:per_model])
    return Placement(chosen, len(chosen), f"{n_models} model(s) on {len(host_cores)} core(s): "
                                          f"{per_model} core(s) each, one thread per core")


def propose_for(registry_data: dict) -> Placement:
    """propose() for the registry as plain data, on this host."""
    from deploy.registry.config import parse_cores
    from deploy.registry.host import HostInfo

    existing = [parse_cores(m.get("cores", [])) for m in registry_data.get("models", [])]
    return propose(existing, sorted(HostInfo.current().cores))
