#!/usr/bin/env python3
"""The seed models' workload, measured: three 7B-class models resident at once on this machine.

Uses the SEED-SHAPED SYNTHETIC Q4_K_M files of bench/seed_models.py (made first if missing):
the exact architectures and tensor shapes of Qwen-7B-Chat, ChatGLM3-6B and DeepSeek-LLM-7B-Chat
with random weights, so every memory and speed figure is real and every answer is noise.

Brings the three up at once under supervisord, with budgets from the fit estimate, and reports
side by side in one run: RSS per worker against its budget and the total; cold start to all
registered; decode tok/s of each model alone and of all three at once; prompt processing; each
as a ratio to the read-bandwidth bound measured on the spot; 4 streams on one worker against 1;
core placements for three models on two cores; and eval/ask_all.py's five puzzles x three
models at 256 tokens per answer, against the 15 s - 2 min 15 s per answer of the seed reports;
and a DeepSeek-shaped SYNTHETIC bf16 Hugging Face folder on the transformers backend beside its
Q4_K_M on llama.cpp (fit estimate against RSS, decode rates).

    .venv/bin/python bench/seed_scale.py            # about 52 minutes on 2 cores
    .venv/bin/python bench/seed_scale.py --quick    # one placement, fewer tokens, no ask_all, no bf16
    .venv/bin/python bench/seed_scale.py --placements none --no-concurrency   # only bf16 beside Q4_K_M

Writes bench/results/seed-scale-<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import bandwidth, question_params, together  # bench/bench.py: a sibling, since this file runs as a script
from seed_models import load_shapes, make, make_hf  # bench/seed_models.py
from deploy.wire.client import FleetClient
from deploy.backends import load_registry
from deploy.ops.supervisor import programs
from deploy.registry.host import memory_of
from deploy.registry.paths import REPO_ROOT, FleetPaths
from deploy.wire.secret import read_secret
from deploy.registry.render import write
from deploy.backends.fit import estimate, suggest_budget
from tests.harness import free_port, shutdown_supervisord, write_registry

GB = 1e9
BF16_MODEL = "deepseek-llm-7b-chat"  # the bf16 transformers row: one model, 13.8 GB, as the seed reports ran it
SEED_REPORT_PER_ANSWER_S = (15, 135)  # what people measured by hand, fp32 on CPU (../shared/seeds)
QUESTION = "请详细介绍一下中国的四大发明，每一项写一段。"
LONG_PROMPT = "请总结下面的文字。" + "单身狗产生的原因有两个，一是谁都看不上，二是谁都看不上。" * 20
# Core placements for three models on two cores: label -> (cores per model, threads per model, poll);
# poll None is llama.cpp's default (50: waiting threads spin); 0 makes them sleep.
PLACEMENTS = {
    "all-on-both-2t": ([[0, 1]] * 3, 2, None),
    "all-on-both-1t": ([[0, 1]] * 3, 1, None),
    "one-core-each-1t": ([[0], [1], [0]], 1, None),
    "all-on-both-2t-poll0": ([[0, 1]] * 3, 2, 0),
}


def snapshot_of_deploy(tmp: Path) -> Path:
    """A copy of deploy/ taken once per run: every fleet of the run runs the same code, whatever
    happens to the working tree meanwhile (`python -m deploy` finds it first in its folder)."""
    snap = tmp / "deploy-snapshot"
    if not snap.exists():
        import shutil

        shutil.copytree(REPO_ROOT / "deploy", snap, ignore=shutil.ignore_patterns("__pycache__"))
    return snap


def gguf_entries(files: dict[str, Path], cores: list[list[int]], threads: int, poll: int | None = None,
                 concurrency: int = 1, context: int = 2048) -> list[dict]:
    """Registry entries (as written) for the synthetic Q4_K_M files, one per model."""
    shapes = {s.name: s for s in load_shapes()}
    models = []
    for (name, path), c in zip(files.items(), cores):
        raw = {"name": f"synthetic-{name}", "path": str(path), "backend": "llama.cpp", "cores": c, "threads": threads,
               "chat_template": shapes[name].chat_template, "context_length": context, "concurrency": concurrency,
               "source": "SYNTHETIC seed-shaped"}
        if poll is not None:
            raw["poll"] = poll
        models.append(raw)
    return models


class Fleet:
    """Synthetic seed-shaped models, the controller, API server and web UI, under supervisord;
    each entry's budget from the fit estimate."""

    def __init__(self, root: Path, models: list[dict]):
        root.mkdir(parents=True)
        (root / "deploy").symlink_to(snapshot_of_deploy(root.parent))
        for raw in models:
            raw.setdefault("port", free_port())
            raw["memory_budget"] = suggest_budget(raw)
        self.paths = FleetPaths(write_registry(root / "model_paths.toml", models, free_port(), free_port(), free_port()))
        self.reg = load_registry(self.paths.registry)
        write(self.reg, self.paths)
        (root / "logs").mkdir()
        self.client = FleetClient(self.reg.deployment.controller_url, timeout=30,
                                  secret=read_secret(self.reg.deployment.secret_path))
        self.names = [m["name"] for m in models]

    @property
    def api_base(self) -> str:
        d = self.reg.deployment
        return f"http://{d.host}:{d.api_port}/v1"

    def start(self, timeout: float = 600) -> float:
        """Seconds from `supervisord -c supervisord.conf` to every worker registered."""
        t0 = time.perf_counter()
        subprocess.run([str(REPO_ROOT / ".venv/bin/supervisord"), "-c", str(self.paths.supervisord_conf)], check=True,
                       cwd=self.paths.root)
        got = self.client.wait_registered(self.names, timeout=timeout, every=0.25)
        if not set(self.names) <= got:
            raise RuntimeError(f"not registered after {timeout}s: {set(self.names) - got}; logs in {self.paths.logs}")
        return time.perf_counter() - t0

    def stop(self) -> None:
        shutdown_supervisord(self.paths.root, timeout=120)

    def memory(self) -> dict:
        progs = programs(self.paths)
        out = {}
        for m in self.reg.models:
            p = progs.get(f"worker-{m.name}")
            mem = memory_of(p.pid) if p and p.pid else {"rss": 0, "anon": 0, "file": 0}
            out[m.name] = {"rss": mem["rss"], "anon": mem["anon"], "file": mem["file"], "budget": m.memory_budget}
        return out

    def decode(self, model: str, n: int, prompt: str = QUESTION, max_new: int | None = None) -> dict:
        """One request straight to the model's worker: TTFT, decode tok/s (ignore_eos: exactly n tokens)."""
        params = question_params(self.client, model, prompt, max_new or n)
        addr = self.client.worker_address(model)
        t0 = time.perf_counter()
        first = last = None
        usage = {}
        for frame in self.client.stream(addr, params):
            now = time.perf_counter()
            if frame.get("text") and first is None:
                first = now
            last = now
            usage = frame.get("usage") or usage
        toks = usage.get("completion_tokens", 0)
        return {"ttft_s": (first or last) - t0, "tokens": toks, "prompt_tokens": usage.get("prompt_tokens", 0),
                "decode_tps": (toks - 1) / (last - first) if first and last > first and toks > 1 else None,
                "wall_s": last - t0}


def measure_placement(label: str, files: dict, cores, threads: int, poll, n: int, tmp: Path, bw: float) -> dict:
    print(f"\n== placement {label}: cores {cores}, {threads} thread(s) each, poll {poll}", flush=True)
    fleet = Fleet(tmp / label, gguf_entries(files, cores, threads, poll))
    res: dict = {"cores": cores, "threads": threads, "poll": poll}
    try:
        res["cold_start_s"] = fleet.start()
        print(f"  cold start to all registered: {res['cold_start_s']:.1f} s", flush=True)
        for m in fleet.names:
            fleet.decode(m, 4)  # warm-up
        res["memory"] = fleet.memory()
        res["alone"] = {m: fleet.decode(m, n) for m in fleet.names}
        for m, r in res["alone"].items():
            print(f"  {m} alone: {r['decode_tps']:.2f} tok/s, TTFT {r['ttft_s']:.2f} s", flush=True)
        both, wall = together({m: (lambda m=m: fleet.decode(m, n)) for m in fleet.names})
        res["together"] = both
        res["together_aggregate_tps"] = sum(r["tokens"] for r in both.values()) / wall
        print(f"  all three at once: aggregate {res['together_aggregate_tps']:.2f} tok/s", flush=True)
        pp = {m: fleet.decode(m, 1, prompt=LONG_PROMPT) for m in fleet.names}
        res["prompt_tps"] = {m: r["prompt_tokens"] / r["ttft_s"] for m, r in pp.items()}
        res["files"] = {f"synthetic-{k}": v.stat().st_size for k, v in files.items()}
        res["bound_tps"] = {m: bw / res["files"][m] for m in fleet.names}
    finally:
        fleet.stop()
    return res


def measure_concurrency(files: dict, n: int, tmp: Path) -> dict:
    """1, 2 and 4 concurrent streams on one 7B-class worker with four slots, both cores, 2 threads:
    with flash attention as llama.cpp chooses (on) and off."""
    name = "deepseek-llm-7b-chat"
    res = {}
    for fa in ("auto", "off"):
        entries = gguf_entries({name: files[name]}, [[0, 1]], 2, concurrency=4)
        entries[0]["flash_attention"] = fa
        fleet = Fleet(tmp / f"concurrency-fa-{fa}", entries)
        print(f"  flash_attention = {fa!r}", flush=True)
        try:
            fleet.start()
            m = fleet.names[0]
            fleet.decode(m, 4)
            out, walls = {}, {}
            for k in (1, 2, 4):
                rs, wall = together({i: (lambda: fleet.decode(m, n)) for i in range(k)})
                # decode only: the streams decode in lockstep once their prompts are in, so the sum of
                # their rates (a stream that found its prompt cached in its slot skips prompt processing,
                # the others do not: tokens over wall time would mix the two)
                out[k] = sum(r["decode_tps"] for r in rs.values())
                walls[k] = sum(r["tokens"] for r in rs.values()) / wall
                print(f"    {k} stream(s) on one worker: decode {out[k]:.2f} tok/s in aggregate ({walls[k]:.2f} "
                      f"counting prompt processing)", flush=True)
            res[fa] = {**out, "with_prompt": walls}
        finally:
            fleet.stop()
    return res


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only), so that a cold start reads the weights from disk
    as after a reboot, not from the copy left by writing or a previous run. False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure_bf16(q4_file: Path, n: int, tmp: Path, bw: float) -> dict:
    """DeepSeek-shaped, side by side on both cores with 2 threads: the SYNTHETIC bf16 HF folder on
    the transformers backend, then its Q4_K_M on llama.cpp. Checks the fit estimate (and the budget
    derived from it) against the RSS a 7B bf16 model really takes, and gives both decode rates."""
    shape = next(s for s in load_shapes() if s.name == BF16_MODEL)
    rows = {"bf16 (transformers)": {"name": f"synthetic-{BF16_MODEL}-bf16", "path": str(make_hf(shape)),
                                    "backend": "transformers", "dtype": "bfloat16", "cores": [0, 1], "threads": 2,
                                    "chat_template": shape.chat_template, "context_length": 2048, "concurrency": 1,
                                    "source": "SYNTHETIC seed-shaped"},
            "Q4_K_M (llama.cpp)": gguf_entries({BF16_MODEL: q4_file}, [[0, 1]], 2)[0]}
    out = {}
    for label, raw in rows.items():
        print(f"  {label} ...", flush=True)
        fleet = Fleet(tmp / f"bf16-{label.split()[0]}", [raw])
        try:
            cold = drop_page_cache()
            r = {"cold_start_s": fleet.start(), "page_cache_dropped": cold}
            m = fleet.names[0]
            fleet.decode(m, 4)  # warm-up
            r["decode"] = fleet.decode(m, n)
            entry = fleet.reg.models[0]
            est = estimate(entry)
            r["estimate"], r["weights"] = est.total, est.weights
            r["memory"] = fleet.memory()[m]
            r["bound_tps"] = bw / r["weights"]
            print(f"    RSS {r['memory']['rss'] / 2**30:.2f} GiB (estimate {r['estimate'] / 2**30:.2f}, budget "
                  f"{r['memory']['budget'] / 2**30:.1f}); decode {r['decode']['decode_tps']:.2f} tok/s; "
                  f"cold start {r['cold_start_s']:.1f} s", flush=True)
        finally:
            fleet.stop()
        out[label] = r
    return out


def ask_all(files: dict, cores, threads: int, poll, tmp: Path, max_tokens: int) -> dict:
    fleet = Fleet(tmp / "ask_all", gguf_entries(files, cores, threads, poll))
    try:
        fleet.start()
        d = fleet.reg.deployment
        r = subprocess.run([sys.executable, str(REPO_ROOT / "eval/ask_all.py"), "--controller", d.controller_url,
                            "--api-base", fleet.api_base, "--results-dir", str(tmp / "askall"), "--run", "seed-scale",
                            "--max-tokens", str(max_tokens), "--no-progress"], capture_output=True, text=True)
        recs = [json.loads(line) for line in (tmp / "askall/seed-scale/answers.jsonl").read_text().splitlines()]
        meta = json.loads((tmp / "askall/seed-scale/run.json").read_text())
        lat = [x["latency_s"] for x in recs if not x.get("error")]
        return {"exit_code": r.returncode, "answers": len(recs), "failed": sum(1 for x in recs if x.get("error")),
                "wall_s": meta["sessions"][-1]["wall_s"], "per_answer_s": {"min": min(lat), "max": max(lat),
                                                                           "mean": sum(lat) / len(lat)},
                "tokens": [x.get("completion_tokens") for x in recs]}
    finally:
        fleet.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per decode measurement")
    ap.add_argument("--placements",
                    help=f"comma-separated, of: {', '.join(PLACEMENTS)}; 'none' for none (default: the first three)")
    ap.add_argument("--no-concurrency", action="store_true",
                    help="skip 1, 2 and 4 streams on one worker (flash attention as chosen and off)")
    ap.add_argument("--no-ask-all", action="store_true")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                    help="the DeepSeek-shaped bf16 HF folder on transformers beside its Q4_K_M (writes 13.8 GB "
                         "once; default: on, off with --quick)")
    args = ap.parse_args(argv)
    n = 32 if args.quick else args.tokens
    files = {s.name: make(s) for s in load_shapes()}
    res: dict = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "tokens": n, "synthetic": True,
                 "ram": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    print("measuring read bandwidth ...", flush=True)
    res["bandwidth"] = {"1_core": bandwidth([0]), "2_cores": bandwidth([0, 1])}
    tmp = Path(tempfile.mkdtemp(prefix="seed-scale-"))
    if args.placements:
        wanted = [] if args.placements == "none" else args.placements.split(",")
    else:
        wanted = list(PLACEMENTS)[1:2] if args.quick else list(PLACEMENTS)[:3]
    res["placements"] = {label: measure_placement(label, files, *PLACEMENTS[label], n, tmp, res["bandwidth"]["2_cores"])
                         for label in wanted}
    if args.bf16 if args.bf16 is not None else not args.quick:
        print(f"\n== bf16 on transformers beside Q4_K_M on llama.cpp ({BF16_MODEL}, 2 threads)", flush=True)
        res["bf16"] = measure_bf16(files[BF16_MODEL], n, tmp, res["bandwidth"]["2_cores"])
    if not args.no_concurrency:
        print("\n== concurrency on one worker", flush=True)
        res["concurrency"] = measure_concurrency(files, n, tmp)
    if wanted and not args.quick and not args.no_ask_all:
        best = max(res["placements"], key=lambda k: res["placements"][k]["together_aggregate_tps"])
        print(f"\n== eval/ask_all.py, 5 puzzles x 3 models at 256 tokens, placement {best}", flush=True)
        res["ask_all"] = ask_all(files, *PLACEMENTS[best], tmp, 256)
        res["ask_all"]["placement"] = best
    return finish("seed-scale", res, report)


def finish(kind: str, res: dict, report) -> int:
    """Print the run's report and keep its figures in bench/results/<kind>-<time>.json."""
    out = REPO_ROOT / "bench" / "results" / time.strftime(f"{kind}-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    report(res)
    print(f"\nresults: {out}")
    return 0


def report(r: dict) -> None:
    bw2 = r["bandwidth"]["2_cores"]
    print(f"\nSEED-SHAPED SYNTHETIC WEIGHTS (real shapes, random values). Read bandwidth "
          f"{r['bandwidth']['1_core'] / GB:.1f} GB/s on 1 core, {bw2 / GB:.1f} GB/s on 2.")
    for label, p in r["placements"].items():
        total = sum(v["rss"] for v in p["memory"].values())
        print(f"\n{label} (cores {p['cores']}, {p['threads']} thread(s) each, poll {p.get('poll')}): cold start "
              f"{p['cold_start_s']:.1f} s, "
              f"total RSS {total / 2**30:.2f} GiB")
        print(f"{'model':38} {'file GB':>7} {'RSS GiB':>8} {'(file)':>7} {'budget':>7} {'alone':>7} {'of bound':>8} "
              f"{'3 at once':>9} {'prompt':>7}")
        for m in p["alone"]:
            mem, a, t = p["memory"][m], p["alone"][m], p["together"][m]
            print(f"{m:38} {p['files'][m] / GB:>7.2f} {mem['rss'] / 2**30:>8.2f} {mem.get('file', 0) / 2**30:>7.2f} "
                  f"{mem['budget'] / 2**30:>7.1f} "
                  f"{a['decode_tps']:>7.2f} {a['decode_tps'] / p['bound_tps'][m]:>8.0%} {t['decode_tps'] or 0:>9.2f} "
                  f"{p['prompt_tps'][m]:>7.1f}")
        best_alone = max(a["decode_tps"] for a in p["alone"].values())
        print(f"  aggregate of all three at once {p['together_aggregate_tps']:.2f} tok/s = "
              f"{p['together_aggregate_tps'] / best_alone:.0%} of the best single-model rate")
    for fa, c in (r.get("concurrency") or {}).items():
        print(f"\nOne worker, 4 slots, flash_attention {fa!r}: aggregate decode 1 stream {c[1]:.2f}, 2 streams "
              f"{c[2]:.2f}, 4 streams {c[4]:.2f} tok/s (x{c[4] / c[1]:.2f})")
    if "bf16" in r:
        print(f"\n{BF16_MODEL}, both cores, 2 threads, one run (cold start: page cache dropped first; "
              f"transformers maps its weights and reads them during the first answer):")
        print(f"{'format':22} {'weights GB':>10} {'estimate GiB':>12} {'RSS GiB':>8} {'budget':>7} {'decode':>7} "
              f"{'of bound':>8} {'cold start':>10}")
        for label, b in r["bf16"].items():
            mem = b["memory"]
            print(f"{label:22} {b['weights'] / GB:>10.2f} {b['estimate'] / 2**30:>12.2f} {mem['rss'] / 2**30:>8.2f} "
                  f"{mem['budget'] / 2**30:>7.1f} {b['decode']['decode_tps']:>7.2f} "
                  f"{b['decode']['decode_tps'] / b['bound_tps']:>8.0%} {b['cold_start_s']:>9.1f}s"
                  f"{'' if b.get('page_cache_dropped') else ' (page cache not dropped: not root)'}")
        bf, q4 = (r["bf16"][k]["decode"]["decode_tps"] for k in ("bf16 (transformers)", "Q4_K_M (llama.cpp)"))
        print(f"  Q4_K_M decodes {q4 / bf:.1f}x as fast as bf16")
    if "ask_all" in r:
        q = r["ask_all"]
        pa = q["per_answer_s"]
        print(f"\nask_all, 5 puzzles x 3 models at 256 tokens ({q['placement']}): wall {q['wall_s']:.0f} s; per answer "
              f"{pa['min']:.0f}-{pa['max']:.0f} s (mean {pa['mean']:.0f} s) against {SEED_REPORT_PER_ANSWER_S[0]}-"
              f"{SEED_REPORT_PER_ANSWER_S[1]} s by hand in fp32, one model at a time")


if __name__ == "__main__":
    sys.exit(main())
