"""python eval/ask_all.py: the puzzle set to every registered model, graded, timed, reported."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
from pathlib import Path

from eval.askall.cascade import Cascade, Graded
from eval.askall.check import check_puzzles, render
from eval.askall.fleet import AskAllError, cannot_all_be_resident, discover
from eval.askall.grading import GRADER_VERSION
from eval.askall.judge import Calibration, Judge, JudgeError, admit
from eval.askall.overrides import load_overrides
from eval.askall.puzzles import PuzzleFileError, file_hash, load_puzzles, puzzle_files
from eval.askall.report import csv_report, html_report, markdown
from eval.askall.runner import Settings, run_all
from eval.askall.thinking import labelled, served
from eval.askall.store import RESULTS_DIR, RunStore, key

def _deployment():
    from deploy.backends import load_registry
    from deploy.registry.config import Deployment, RegistryError

    try:
        return load_registry().deployment
    except RegistryError:
        return Deployment()


def fleet_defaults() -> tuple[str, str]:
    """Controller and API addresses from the deployment's model_paths.toml, if it reads."""
    d = _deployment()
    return d.controller_url, f"http://{d.host}:{d.api_port}/v1"


def fleet_api_key() -> str | None:
    """The API key to send ($FLEET_API_KEY or the deployment's keys file); never stored in a run."""
    from deploy.wire.keys import client_key

    return client_key(_deployment().api_keys_path)


def parse_args(argv):
    controller, api = fleet_defaults()
    p = argparse.ArgumentParser(prog="python eval/ask_all.py", description=__doc__)
    p.add_argument("--controller", default=controller, help=f"FastChat controller (default {controller})")
    p.add_argument("--api-base", default=api, help=f"OpenAI-compatible API (default {api})")
    p.add_argument("--models", help="comma-separated names or globs (default: every registered model)")
    p.add_argument("--puzzles", help="comma-separated puzzle ids (default: all)")
    p.add_argument("--puzzle-file", help="one puzzle file instead of the default set: eval/puzzles.toml and every "
                   "eval/puzzles.d/*.toml")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, help="sampling seed (repeat k uses seed + k)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--thinking", choices=("default", "on", "off", "both"), default="default",
                   help="a thinking model's trace: as its template has it (default), on, off, or both: every model "
                        "asked twice, 'NAME [thinking on]' and 'NAME [thinking off]', side by side in the report")
    p.add_argument("--timeout", type=float, default=600, help="seconds per answer")
    p.add_argument("--judge", help="a registered model that grades answers against the references")
    p.add_argument("--judge-api-base", help="judge on another OpenAI-compatible endpoint (default: --api-base)")
    p.add_argument("--judge-api-key-env", default="JUDGE_API_KEY", help="env var holding the judge's API key")
    p.add_argument("--overrides", help="human verdicts (default: eval/overrides.toml)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--run", help="name of a new run's folder (default run-DATE-TIME)")
    p.add_argument("--resume", nargs="?", const="latest", help="continue a run (default: the latest) "
                   "with its own settings; asks only what it has no answer for")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: ask failed answers again")
    p.add_argument("--regrade", metavar="RUN", help="grade a finished run again (name or path) with the current "
                   "rules, judge and overrides, and rewrite its reports; asks no model")
    p.add_argument("--check-rules", nargs="*", metavar="FILE", help="check the rules of these puzzle files "
                   "(default: --puzzle-file or the default set) against their labelled examples; exit 1 on a mismatch")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def pick(names: list[str], spec: str | None) -> list[str]:
    if not spec:
        return names
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatch(n, w) for w in wanted)]
    missing = [w for w in wanted if not any(fnmatch.fnmatch(n, w) for n in names)]
    if missing:
        raise AskAllError(f"--models: {', '.join(missing)} not registered (registered: {', '.join(names)})")
    return chosen


def run_target(args, name: str) -> RunStore:
    """--resume and --regrade take a run's name (in --results-dir) or a path to a run's folder."""
    named = Path(args.results_dir) / name
    return RunStore(named if named.is_dir() or not Path(name).is_dir() else Path(name))


def resume_hint(args, store: RunStore) -> str:
    """A command that resumes this very run, as printed: it works when pasted."""
    where = "" if Path(args.results_dir).resolve() == RESULTS_DIR.resolve() else f" --results-dir {args.results_dir}"
    return f"python eval/ask_all.py{where} --resume {store.path.name} --retry-failed"


def open_run(args):
    """A new run (settings from the options) or a resumed one (settings from its run.json)."""
    if args.resume:
        store = RunStore.latest(Path(args.results_dir)) if args.resume == "latest" else run_target(args, args.resume)
        if store is None or not store.meta_file.exists():
            raise AskAllError(f"no run '{args.resume}' to resume in {args.results_dir}. Fix: pass a run name from "
                              f"that folder, a run's path, or --results-dir where the run is")
        return store, store.read_meta(), True
    store = RunStore.create(Path(args.results_dir), args.run)
    settings = {"api_base": args.api_base, "controller": args.controller, "temperature": args.temperature,
                "max_tokens": args.max_tokens, "seed": args.seed, "repeats": args.repeats, "timeout": args.timeout,
                "judge": args.judge, "judge_api_base": args.judge_api_base,
                "judge_api_key_env": args.judge_api_key_env, "models": args.models,
                "puzzles": args.puzzles, "puzzle_file": str(Path(args.puzzle_file).resolve()) if args.puzzle_file else None,
                "thinking": args.thinking}
    return store, {"run": store.path.name, "settings": settings, "sessions": []}, False


def make_judge(settings: dict) -> Judge | None:
    if not settings.get("judge"):
        return None
    from openai import OpenAI

    client = OpenAI(base_url=settings.get("judge_api_base") or settings["api_base"], max_retries=0, timeout=120,
                    api_key=os.environ.get(settings.get("judge_api_key_env") or "JUDGE_API_KEY") or fleet_api_key() or "unused")
    return Judge(client, settings["judge"])


def ready_judge(store: RunStore, meta: dict, puzzles: list) -> Judge | None:
    """The run's judge, checked (registered, answering) and calibrated on the puzzles' labelled
    examples; the calibration is kept in the run folder, so --resume does not repeat it."""
    judge = make_judge(meta["settings"])
    if judge is None:
        return None
    cal_file = store.path / "calibration.json"
    sha = file_hash(meta["settings"].get("puzzle_file"))
    ids = sorted(p.id for p in puzzles)
    cached = None
    if cal_file.exists():
        saved = json.loads(cal_file.read_text(encoding="utf-8"))
        if (saved.get("judge"), saved.get("puzzle_sha256"), saved.get("puzzles")) == (judge.model, sha, ids):
            cached = Calibration(judge.model, saved["agree"], saved["total"], saved["misses"])

    def keep(c: Calibration) -> None:
        cal_file.write_text(json.dumps({"judge": judge.model, "puzzle_sha256": sha, "puzzles": ids, "agree": c.agree,
                                        "total": c.total, "misses": c.misses}, ensure_ascii=False, indent=2),
                            encoding="utf-8")
    cal = admit(judge, puzzles, cached, keep)
    meta["judge_calibration"] = {"judge": judge.model, "agree": cal.agree, "total": cal.total}
    return judge


def grade_all(store, meta, puzzles, records, overrides, judge: Judge | None = None) -> list[Graded]:
    return Cascade(puzzles, judge, overrides, meta["run"], store.judgement_cache()).grade_all(records)


def select_puzzles(settings: dict) -> list:
    puzzles = load_puzzles(settings.get("puzzle_file"))
    if settings.get("puzzles"):
        ids = [x.strip() for x in settings["puzzles"].split(",")]
        unknown = [i for i in ids if i not in {p.id for p in puzzles}]
        if unknown:
            raise AskAllError(f"--puzzles: no puzzle {', '.join(unknown)} (have: {', '.join(p.id for p in puzzles)})")
        puzzles = [p for p in puzzles if p.id in ids]
    return puzzles


def resolve_models(store: RunStore, meta: dict, resumed: bool) -> tuple[list[str], list[str], list[str]]:
    """(every model of the run, those registered now, those gone); a new run records its models."""
    fleet = discover(meta["settings"]["controller"])
    registered = [m.name for m in fleet]
    if resumed:
        names = [m["name"] for m in meta["models"]]
        up = [n for n in names if served(n)[0] in registered]
        return names, up, [n for n in names if n not in up]
    chosen = pick(registered, meta["settings"].get("models"))
    modes = {"default": [None], "on": ["on"], "off": ["off"], "both": ["on", "off"]}[meta["settings"].get("thinking")
                                                                                    or "default"]
    meta["models"] = [{"name": labelled(m.name, mode), "worker": m.worker, "info": m.info}
                      for m in fleet if m.name in chosen for mode in modes]
    store.write_meta(meta)
    names = [m["name"] for m in meta["models"]]
    return names, names, []


def ask(args, store: RunStore, meta: dict, puzzles: list, live: list[str], gone: list[str], resumed: bool) -> None:
    """Ask what has no answer yet (and failed ones with --retry-failed); record gone models as failed."""
    s = meta["settings"]
    done = {key(r) for r in store.records() if not (args.retry_failed and r.get("error"))}
    settings = Settings(api_base=s["api_base"], temperature=s["temperature"], max_tokens=s["max_tokens"],
                        seed=s.get("seed"), repeats=s["repeats"], timeout=s["timeout"], api_key=fleet_api_key())
    todo = [(m, p.id, r) for m in live for r in range(settings.repeats) for p in puzzles if (m, p.id, r) not in done]
    print(f"{'Resuming' if resumed else 'Run'} {store.path} : {len(live) + len(gone)} model(s) × {len(puzzles)} "
          f"puzzle(s) × {settings.repeats}; {len(todo)} to ask" + (f"; not registered now: {', '.join(gone)}" if gone else ""),
          file=sys.stderr)
    for m in gone:  # recorded as failed, so the run can finish and the report says why
        for r in range(settings.repeats):
            for p in puzzles:
                if (m, p.id, r) not in done:
                    store.append({"model": m, "puzzle": p.id, "repeat": r, "question": p.question, "answer": None,
                                  "error": "model is no longer registered with the controller"})
    if not todo:
        return
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="answer", desc="asking", file=sys.stderr)

    def on_answer(rec):
        if bar:
            bar.set_postfix_str(f"{rec['model']}: {rec['puzzle']}" + (" FAILED" if rec.get("error") else ""))
            bar.update(1)

    apart = cannot_all_be_resident(s["controller"], sorted({served(m)[0] for m in live}))
    if apart:
        print(f"asking one model at a time: {apart}; each model is loaded before its answers, so each is timed "
              f"as if alone", file=sys.stderr)
    timing = run_all(live, puzzles, settings, store, done, on_answer, one_at_a_time=apart)
    if bar:
        bar.close()
    meta["sessions"].append(timing)
    store.write_meta(meta)
    slowest = max(timing["busy_s"].values()) if timing["busy_s"] else 0
    print(f"wall time {timing['wall_s']:.1f} s; slowest model's share {slowest:.1f} s", file=sys.stderr)


def summarise(args, store: RunStore, meta: dict, puzzles: list, names: list[str], graded: list[Graded]) -> int:
    """Write both reports, print totals; 1 if any answer is missing or failed."""
    (store.path / "report.md").write_text(markdown(meta, puzzles, graded), encoding="utf-8")
    (store.path / "report.html").write_text(html_report(meta, puzzles, graded), encoding="utf-8")
    (store.path / "report.csv").write_text(csv_report(meta, graded), encoding="utf-8")
    repeats = meta["settings"]["repeats"]
    recs = {key(r): r for r in store.records()}
    missing = [k for k in ((m, p.id, r) for m in names for p in puzzles for r in range(repeats))
               if k not in recs or recs[k].get("error")]
    totals: dict[str, float] = {}
    for g in graded:
        totals[g.rec["model"]] = totals.get(g.rec["model"], 0) + g.final.score
    print("\n".join(f"  {m:34} {totals.get(m, 0):.2f} / {len(puzzles) * repeats}" for m in names), file=sys.stderr)
    print(f"answers:  {store.answers}\nreport:   {store.path / 'report.md'}\n          {store.path / 'report.html'}"
          f"\n          {store.path / 'report.csv'}")
    if missing:
        print(f"ask_all: {len(missing)} answer(s) missing or failed (see the report); "
              f"`{resume_hint(args, store)}` asks them again", file=sys.stderr)
        return 1
    return 0


def check_rules(files: list[str]) -> int:
    """--check-rules: 0 when every puzzle file's rules give its examples their labels, 1 if not, 2 for a bad file."""
    rc = 0
    for f in files:
        try:
            checks, warnings = check_puzzles(load_puzzles(f))
        except PuzzleFileError as e:
            print(f"ask_all: {e}", file=sys.stderr)
            rc = 2
            continue
        print(render(str(f), checks, warnings))
        if not all(c.ok for c in checks):
            rc = max(rc, 1)
    return rc


def record_grader(meta: dict) -> None:
    """Which rules graded this run: the puzzle file's hash and the grader's version, in run.json."""
    f = meta["settings"].get("puzzle_file")
    meta["grader"] = {"version": GRADER_VERSION, "puzzle_file": ", ".join(map(str, puzzle_files(f))),
                      "puzzle_sha256": file_hash(f)}


def regrade(args) -> int:
    """Grade a finished run again with today's rules, judge and overrides; nothing is asked."""
    store = run_target(args, args.regrade)
    try:
        if not store.meta_file.exists():
            raise AskAllError(f"no run '{args.regrade}' in {args.results_dir}. Fix: pass a run name from that "
                              f"folder, a run's path, or --results-dir where the run is")
        meta = store.read_meta()
        puzzles = select_puzzles(meta["settings"])
        overrides = load_overrides(args.overrides)
        judge = ready_judge(store, meta, puzzles)
    except (AskAllError, PuzzleFileError, JudgeError) as e:
        print(f"ask_all: {e}", file=sys.stderr)
        return 2
    record_grader(meta)
    store.write_meta(meta)
    graded = grade_all(store, meta, puzzles, store.records(), overrides, judge)
    return summarise(args, store, meta, puzzles, [m["name"] for m in meta["models"]], graded)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_rules is not None:
        return check_rules(args.check_rules or [str(f) for f in puzzle_files(args.puzzle_file)])
    if args.regrade:
        return regrade(args)
    store, resumed = None, False
    try:
        store, meta, resumed = open_run(args)
        puzzles = select_puzzles(meta["settings"])
        overrides = load_overrides(args.overrides)
        judge = ready_judge(store, meta, puzzles)
        names, live, gone = resolve_models(store, meta, resumed)
    except (AskAllError, PuzzleFileError, JudgeError) as e:
        print(f"ask_all: {e}", file=sys.stderr)
        if store is not None and not resumed and not store.answers.exists():
            shutil.rmtree(store.path, ignore_errors=True)
        return 2
    record_grader(meta)
    store.write_meta(meta)
    ask(args, store, meta, puzzles, live, gone, resumed)
    graded = grade_all(store, meta, puzzles, store.records(), overrides, judge)
    return summarise(args, store, meta, puzzles, names, graded)
