"""The benchmark's own arithmetic (the benchmark itself is run by hand: bench/bench.py)."""
from bench.bench import BYTES_PER_PARAM, SEED_MODELS, Timer, bandwidth, seed_table


def test_bandwidth_is_measured_per_core():
    bw = bandwidth([0], seconds=0.5)
    assert 1e9 < bw < 1e12  # bytes per second, a plausible range for DRAM


def test_seed_table_bounds_and_fit():
    rows = {r["format"]: r for r in seed_table(bw=20e9, ram=24 * 1024**3)}
    q4 = rows["Q4_K_M (llama.cpp)"]
    assert q4["fits_together"] and not rows["bf16 (transformers)"]["fits_together"]
    size = SEED_MODELS["Qwen-7B-Chat"] * BYTES_PER_PARAM["Q4_K_M (llama.cpp)"]
    assert abs(q4["Qwen-7B-Chat"]["tps_bound"] - 20e9 / size) < 1e-9


def test_timer_decode_rate_excludes_time_to_first_token():
    t = Timer()
    t.t0 -= 1.0  # the first token comes a second after the request
    t.first, t.last, t.tokens = t.t0 + 1.0, t.t0 + 2.0, 11
    r = t.result()
    assert abs(r["decode_tps"] - 10.0) < 1e-9 and abs(r["ttft_s"] - 1.0) < 1e-9
