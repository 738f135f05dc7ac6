"""The benchmark's own arithmetic (the benchmark itself is run by hand: bench/bench.py)."""
from bench.bench import Timer, readers, seed_table


def test_bandwidth_is_measured_per_core():
    """One reader per core, each pinned to its own core, all reading at once: the bandwidth is their
    sum. (How much two cores read beside one is a figure bench/bench.py prints, not a test.)"""
    got = readers([0, 1], seconds=0.3)
    assert sorted(r["cores"] for r in got) == [[0], [1]]
    assert max(r["start"] for r in got) < min(r["end"] for r in got)  # their reading overlapped
    assert all(r["bytes_per_s"] > 0 for r in got)


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
