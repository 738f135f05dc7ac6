"""Hold a worker process to its cores and its memory budget.

Memory, strongest mechanism first (the one used is logged):
1. cgroup v2 `memory.max` in a child of our own cgroup, where writable;
2. cgroup v1 `memory.limit_in_bytes` likewise (this project's CI machines
   offer this one: the kernel OOM-kills the worker at the budget);
3. otherwise `RLIMIT_AS`, an address-space cap. Address space is not memory:
   runtimes reserve far more than they touch, so the cap is the budget plus the
   headroom the backend declares (a transformers worker for a 2.5 GB model
   needed about 6.6 GiB of address space to load).
"""
from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("deploy.worker.limits")
MECHANISMS = {"cgroup2": "cgroup v2 memory.max", "cgroup1": "cgroup v1 memory.limit_in_bytes",
              "rlimit_as": "RLIMIT_AS (an address-space cap)"}
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "LLAMA_ARG_THREADS")


@dataclass
class MemoryLimit:
    mechanism: str  # "cgroup2", "cgroup1", "rlimit_as"
    limit_bytes: int
    where: str = ""

    def release(self) -> None:
        """Leave the child cgroup and remove it (atexit), so none pile up."""
        if not self.mechanism.startswith("cgroup"):
            return
        child = Path(self.where)
        try:
            (child.parent / "cgroup.procs").write_text(str(os.getpid()))
            child.rmdir()
        except OSError:
            pass  # still in use (threads exiting); it is reused next start

    def describe(self) -> str:
        gib = self.limit_bytes / 1024**3
        return {
            "cgroup2": f"cgroup v2 memory.max = {gib:.2f} GiB ({self.where})",
            "cgroup1": f"cgroup v1 memory.limit_in_bytes = {gib:.2f} GiB ({self.where})",
            "rlimit_as": f"RLIMIT_AS = {gib:.2f} GiB (address space: budget + measured headroom; "
                         f"no writable memory cgroup on this host)",
        }[self.mechanism]


def pin_to_cores(cores: list[int], n_threads: int) -> None:
    """CPU affinity plus thread-count variables for OpenMP/BLAS/torch/llama.cpp."""
    os.sched_setaffinity(0, set(cores))
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n_threads)


def _own_cgroup(version: int) -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if version == 2 and hid == "0" and controllers == "":
            for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                cand = root / path.lstrip("/")
                if (cand / "cgroup.controllers").exists():
                    return cand
        if version == 1 and "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    return None


def _try_cgroup(version: int, label: str, budget: int, join: bool = True) -> MemoryLimit | None:
    """A child cgroup with the budget, joined by this process (or only created, join=False)."""
    base = _own_cgroup(version)
    if base is None:
        return None
    if version == 2:
        try:
            if "memory" not in (base.parent / "cgroup.subtree_control").read_text().split() and \
               "memory" not in (base / "cgroup.controllers").read_text().split():
                return None
        except OSError:
            return None
    knob = "memory.max" if version == 2 else "memory.limit_in_bytes"
    child = base / f"fleet-{label}"
    try:
        child.mkdir(exist_ok=True)
        (child / knob).write_text(str(budget))
        if version == 1 and (child / "memory.memsw.limit_in_bytes").exists():
            try:
                (child / "memory.memsw.limit_in_bytes").write_text(str(budget))
            except OSError:
                pass  # swap accounting off: no swap to escape into either
        if join:
            (child / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as e:
        log.debug("cgroup v%d not usable at %s: %s", version, child, e)
        return None
    return MemoryLimit(f"cgroup{version}", budget, str(child))


def strongest_mechanism() -> str:
    """Which mechanism apply_memory_budget would use on this host (probed with a throwaway cgroup)."""
    for version in (2, 1):
        probe = _try_cgroup(version, f"probe-{os.getpid()}", 1 << 30, join=False)
        if probe:
            Path(probe.where).rmdir()
            return probe.mechanism
    return "rlimit_as"


def apply_memory_budget(budget: int, as_headroom: int, label: str, prefer: str | None = None) -> MemoryLimit:
    """Apply the strongest available mechanism; `prefer` forces one (tests, FLEET_MEMORY_MECHANISM).
    `as_headroom` is what the RLIMIT_AS fallback allows beyond the budget (the backend's own figure)."""
    prefer = prefer or os.environ.get("FLEET_MEMORY_MECHANISM") or None
    if prefer in (None, "cgroup2"):
        lim = _try_cgroup(2, label, budget)
        if lim:
            return lim
    if prefer in (None, "cgroup1"):
        lim = _try_cgroup(1, label, budget)
        if lim:
            return lim
    cap = budget + as_headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return MemoryLimit("rlimit_as", cap)
