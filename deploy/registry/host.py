"""Facts about the machine that validation and the launcher check against."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostInfo:
    cores: frozenset[int]
    mem_total: int  # bytes

    @classmethod
    def current(cls) -> "HostInfo":
        return cls(cores=frozenset(os.sched_getaffinity(0)), mem_total=_mem_total())


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read MemTotal from /proc/meminfo")


def memory_of(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory now, in bytes: rss (VmRSS), and its parts anon (RssAnon: the
    worker's own memory, what a budget must hold) and file (RssFile: mapped file pages, shared and
    reclaimable). A llama.cpp worker with `mmap = true` shows its weights in both."""
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    out = {v: 0 for v in keys.values()}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in keys:
                out[keys[key]] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident memory now (VmRSS): for status, reports and the benchmarks."""
    return memory_of(pid)["rss"]


def describe_cores(cores) -> str:
    """'0-3,6' style listing, the form taskset and supervisord users know."""
    cores = sorted(cores)
    if not cores:
        return "none"
    runs, start, prev = [], cores[0], cores[0]
    for c in cores[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if c is not None:
            start = prev = c
    return ",".join(runs)


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
