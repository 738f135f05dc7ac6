"""Memory pools: one per worker host, which every worker on that host asks before it loads its
model. The pool decides from the budgets the registry gives (a loading or loaded model holds its
whole `memory_budget`; an asleep worker only the memory it measured itself using, empty), never
from guesses: the sum it grants stays within the host's `memory_limit`. When a model must load and
the pool is full, the idle model used least recently (by its own account, asked at that moment)
is unloaded first; a model that is answering, streaming or has requests waiting is never chosen,
nor one with `keep_loaded`.

The pool only counts and chooses; the controller's app (deploy/control/controller.py) asks the
chosen workers to unload.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from deploy.registry.sizes import fmt_size

ASLEEP, LOADING, LOADED = "asleep", "loading", "loaded"
MAX_LOAD_SECONDS = 900.0  # a load that takes longer than this is treated as hung


@dataclass
class Member:
    """One worker of a pool, as it told the controller when it registered and since."""
    worker: str
    model: str
    budget: int
    idle_bytes: int
    keep_loaded: bool = False
    state: str = ASLEEP
    reason: str = ""          # why its last load failed, if it did
    since: float = field(default_factory=time.time)  # when its state last changed

    def set_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason, self.since = state, reason, time.time()

    @property
    def holds(self) -> int:
        """What it takes from the pool now."""
        return self.budget if self.state in (LOADING, LOADED) else self.idle_bytes


@dataclass
class Pool:
    """A host's memory, `limit` bytes, shared by its workers."""
    host: str
    limit: int
    members: dict[str, Member] = field(default_factory=dict)
    evictions: dict[str, int] = field(default_factory=dict)   # model -> times unloaded to make room
    load_seconds: list[float] = field(default_factory=list)   # every load's duration

    @property
    def used(self) -> int:
        return sum(m.holds for m in self.members.values())

    def room_for(self, m: Member) -> int:
        """Bytes missing for `m` to load now (0: it fits)."""
        return max(0, self.used - m.holds + m.budget - self.limit)

    def candidates(self, asking: Member) -> list[Member]:
        """Who could make room: loaded, not kept loaded, not the asking one (most recent last is
        decided by the workers' own last-use times, which the caller asks)."""
        return [m for m in self.members.values()
                if m.state == LOADED and not m.keep_loaded and m.worker != asking.worker]

    def full_message(self, m: Member) -> str:
        held = [x for x in self.members.values() if x.state != ASLEEP and x.worker != m.worker]
        loaded = ", ".join(f"{x.model} ({fmt_size(x.budget)}{', pinned' if x.keep_loaded else ''})" for x in held)
        pinned = [x.model for x in held if x.keep_loaded]
        fix = (f"; or unpin {', '.join(pinned)} (python -m deploy unpin NAME)" if pinned else "")
        return (f"the memory pool of host {self.host} (memory_limit {fmt_size(self.limit)}, {fmt_size(self.used)} "
                f"in use) has no room for '{m.model}' ({fmt_size(m.budget)}): every loaded model is busy or pinned "
                f"({loaded or 'none'}); retry when one is idle{fix}")

    def describe(self) -> dict:
        return {"host": self.host, "limit": self.limit, "used": self.used,
                "members": [{"worker": m.worker, "model": m.model, "state": m.state, "budget": m.budget,
                             "holds": m.holds, "keep_loaded": m.keep_loaded, "reason": m.reason}
                            for m in self.members.values()],
                "evictions": dict(self.evictions), "load_seconds": list(self.load_seconds)}


class Pools:
    """Every host's pool, by host."""

    def __init__(self):
        self.pools: dict[str, Pool] = {}
        self.member_of: dict[str, str] = {}  # worker -> host

    def join(self, host: str, limit: int, member: Member) -> Pool:
        """A worker (re-)registered: its pool takes the limit its host's registry sets."""
        self.leave(member.worker)
        pool = self.pools.setdefault(host, Pool(host, limit))
        pool.limit = limit
        pool.members[member.worker] = member
        self.member_of[member.worker] = host
        return pool

    def leave(self, worker: str) -> None:
        """A worker gone (killed, or forgotten): what it held is free again."""
        host = self.member_of.pop(worker, None)
        if host is not None:
            self.pools[host].members.pop(worker, None)

    def loading(self, worker: str, longest: float = MAX_LOAD_SECONDS) -> bool:
        """Whether the worker is loading its model (for at most `longest` seconds so far). A worker
        may not answer while it loads (llama.cpp holds Python's lock while it reads a model), and
        is not dropped from routing for that."""
        found = self.of(worker)
        return found is not None and found[1].state == LOADING and time.time() - found[1].since < longest

    def of(self, worker: str) -> tuple[Pool, Member] | None:
        host = self.member_of.get(worker)
        if host is None:
            return None
        pool = self.pools[host]
        return pool, pool.members[worker]
