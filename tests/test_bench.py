"""The benchmark's own arithmetic (the benchmark itself is run by hand: bench/bench.py)."""
from bench.bench import Timer, bandwidth, seed_table


def test_bandwidth_is_measured_per_core():
    """One reader per core, all at once: two cores run two readers, so their sum is far above what
    one reader alone does in the same time (the machine's 2 cores read 25-43 GB/s, README)."""
    one = bandwidth([0], seconds=0.5)
    both = bandwidth([0, 1], seconds=0.5)
    assert 1e9 < one < 1e12  # bytes per second, a plausible range for DRAM
    assert both > 1.2 * one, (one, both)


def test_seed_table_bounds_and_fit():
    """Figures worked by hand: Qwen-7B-Chat's 7.72e9 parameters at Q4_K_M's 0.606 bytes each are
    4.678 GB, which 20 GB/s reads 4.275 times a second; the three in bf16 are 41.74 GB of weights, plus
    1 GiB of runtime each: 44.96 GB."""
    rows = {r["format"]: r for r in seed_table(bw=20e9, ram=24 * 1024**3)}
    q4 = rows["Q4_K_M (llama.cpp)"]
    assert q4["fits_together"] and not rows["bf16 (transformers)"]["fits_together"]
    assert round(q4["Qwen-7B-Chat"]["gb"], 3) == 4.678
    assert round(q4["Qwen-7B-Chat"]["tps_bound"], 3) == 4.275
    assert round(rows["bf16 (transformers)"]["all_three_gb"], 2) == 44.96


def test_timer_decode_rate_excludes_time_to_first_token():
    t = Timer()
    t.t0 -= 1.0  # the first token comes a second after the request
    t.first, t.last, t.tokens = t.t0 + 1.0, t.t0 + 2.0, 11
    r = t.result()
    assert abs(r["decode_tps"] - 10.0) < 1e-9 and abs(r["ttft_s"] - 1.0) < 1e-9
