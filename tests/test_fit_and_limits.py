"""Memory estimate before loading, and the budget/affinity mechanisms (in child processes we start)."""
import subprocess
import sys

import pytest

from deploy import backends
from deploy.backends import ModelShape, parse_registry
from deploy.backends.fit import DoesNotFit, estimate, require_fit

GiB = 1024**3


def entry(**over):
    m = {"name": "m", "path": "/x.gguf", "backend": "llama.cpp", "port": 21002, "cores": [0],
         "memory_budget": "2GiB", "chat_template": "qwen2.5", "context_length": 4096, "concurrency": 4}
    m.update(over)
    return parse_registry({"models": [m]}).models[0]


QWEN05 = ModelShape(weight_bytes=491_400_064, n_layers=24, n_kv_heads=2, head_dim=64, kv_bytes_per_value=2)


def test_estimate_counts_kv_for_context_times_concurrency():
    e = estimate(entry(), QWEN05)
    assert e.kv_cache == 2 * 24 * 2 * 64 * 2 * 4096 * 4
    assert e.fits
    assert estimate(entry(concurrency=8), QWEN05).kv_cache == 2 * e.kv_cache


def test_a_unified_kv_cache_is_one_context_the_slots_share():
    """kv_unified (llama.cpp's --kv-unified): the default entries' 32,768-token contexts fit their
    budgets because the fit estimate counts one context, not one per slot."""
    shared = estimate(entry(kv_unified=True, context_length=32768, memory_budget="3GiB"), QWEN05)
    assert shared.kv_cache == 2 * 24 * 2 * 64 * 2 * 32768 and shared.fits
    assert estimate(entry(context_length=32768, memory_budget="3GiB"), QWEN05).kv_cache == 4 * shared.kv_cache


def test_refuses_with_the_numbers_and_the_fix():
    with pytest.raises(DoesNotFit) as err:
        require_fit(entry(memory_budget="600MiB"), QWEN05)
    msg = str(err.value)
    assert "does not fit its memory budget" in msg and "600.00 MiB" in msg and "weights 468.64 MiB" in msg
    assert "raise memory_budget to at least" in msg


def test_real_default_gguf_shapes():
    from conftest import DEFAULTS, QWEN, SMALL

    s = backends.of(DEFAULTS[QWEN]).shape(DEFAULTS[QWEN])
    assert (s.n_layers, s.n_kv_heads, s.head_dim) == (24, 2, 64)
    s = backends.of(DEFAULTS[SMALL]).shape(DEFAULTS[SMALL])
    assert (s.n_layers, s.n_kv_heads, s.head_dim) == (30, 3, 64)


CHILD = """
import os, resource, sys
from deploy.worker.limits import apply_memory_budget, pin_to_cores
pin_to_cores([0], 1)
lim = apply_memory_budget(256 * 1024**2, 3 * 1024**3, "pytest-%d" % os.getpid(), prefer=sys.argv[1])
print(lim.mechanism, sorted(os.sched_getaffinity(0)), os.environ["OMP_NUM_THREADS"], resource.getrlimit(resource.RLIMIT_AS)[0],
      lim.where or "-", flush=True)
try:
    blob = bytearray(int(sys.argv[2]) * 1024**2)
    blob[::4096] = b"x" * len(blob[::4096])
    print("allocated")
except MemoryError:
    print("MemoryError")
lim.release()
"""


def run_child(mechanism, mib: int = 1024):
    """A child pinned to core 0 with a 256 MiB budget (and 3 GiB of address-space headroom), which
    then allocates and touches `mib` MiB."""
    return subprocess.run([sys.executable, "-c", CHILD, mechanism, str(mib)], capture_output=True, text=True)


def test_rlimit_as_fallback_refuses_an_allocation_past_the_cap():
    """Address space is capped at budget + headroom (3.25 GiB): 1 GiB fits under it (address space
    is not memory; that is the fallback's weakness, which the README states), 4 GiB is refused."""
    within = run_child("rlimit_as", 1024)
    first = within.stdout.splitlines()[0].split()
    assert first[0] == "rlimit_as" and first[1:3] == ["[0]", "1"]  # pinned, one thread
    assert within.stdout.splitlines()[-1] == "allocated"
    past = run_child("rlimit_as", 4096)
    assert past.returncode == 0 and past.stdout.splitlines()[-1] == "MemoryError", past.stdout + past.stderr


def test_cgroup_budget_kills_an_overshoot_when_the_host_offers_one():
    from pathlib import Path

    r = run_child("cgroup1")
    if r.stdout.startswith("rlimit_as"):
        pytest.skip("no writable cgroup v1 memory controller on this host")
    Path(r.stdout.split()[4]).rmdir()  # the killed child could not remove its cgroup
    assert r.stdout.startswith("cgroup1 [0] 1")
    assert "allocated" not in r.stdout
    assert r.returncode == -9  # the kernel's OOM killer, at the budget
