"""Reports of a run: Markdown, and one self-contained HTML file (inline CSS and SVG, no scripts,
no fonts or images from anywhere), readable offline.

Each table and each answer is built once as data (`Table`, `AnswerView`) and rendered twice,
so the two reports cannot disagree.
"""
from __future__ import annotations

import csv
import html
import io
import math
import statistics
from dataclasses import dataclass, field

from eval.askall.cascade import Graded
from eval.askall.grading import Verdict, label_for
from eval.askall.puzzles import Puzzle
from eval.askall.thinking import labelled, served

SOURCE_TAG = {"rules": "R", "human": "H"}  # judge:* -> J


def source_tag(v: Verdict) -> str:
    return SOURCE_TAG.get(v.source, "J" if v.source.startswith("judge:") else "?")


@dataclass
class ModelStats:
    name: str
    asked: int = 0
    failed: int = 0
    score: float = 0.0
    max_score: float = 0.0
    ttft: list = field(default_factory=list)
    latency: list = field(default_factory=list)
    tps: list = field(default_factory=list)
    tokens: int = 0
    thinking: list = field(default_factory=list)  # seconds in the trace, per answer that had one
    trace_tokens: list = field(default_factory=list)

    @staticmethod
    def mean(xs):
        return round(statistics.mean(xs), 3) if xs else None


def collect(models: list[str], graded: list[Graded]) -> dict[str, ModelStats]:
    stats = {m: ModelStats(m) for m in models}
    for g in graded:
        st = stats.setdefault(g.rec["model"], ModelStats(g.rec["model"]))
        st.asked += 1
        st.score += g.final.score
        st.max_score += g.final.max_score
        if g.rec.get("error"):
            st.failed += 1
            continue
        for attr, k in (("ttft", "ttft_s"), ("latency", "latency_s"), ("tps", "decode_tps")):
            if g.rec.get(k) is not None:
                getattr(st, attr).append(g.rec[k])
        st.tokens += g.rec.get("completion_tokens") or 0
        if g.rec.get("reasoning") is not None or g.rec.get("thinking_s") is not None:
            st.thinking.append(g.rec.get("thinking_s") or 0.0)
            st.trace_tokens.append(g.rec.get("reasoning_tokens") or 0)
    return stats


def _cell(pid: str, model: str, graded: list[Graded]) -> list[Graded]:
    return [g for g in graded if g.rec["model"] == model and g.rec["puzzle"] == pid]


def _fmt(x, unit="", nd=2):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


# ---- the data both reports show ----------------------------------------------------------------
@dataclass
class Cell:
    text: str
    css: str = ""      # HTML class (a label colour)
    strong: bool = False


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    note: str = ""


def _c(x, **kw) -> Cell:
    return Cell(str(x), **kw)


def settings_table(meta: dict, puzzles: list[Puzzle]) -> Table:
    s = meta["settings"]
    rows = [[_c(k), _c(s.get(k))] for k in ("api_base", "temperature", "max_tokens", "seed", "repeats", "judge")]
    rows.append([_c("puzzles"), _c(f"{len(puzzles)} ({', '.join(p.id for p in puzzles)})")])
    last = meta["sessions"][-1] if meta.get("sessions") else {}
    if last:
        slowest = max(last["busy_s"].values()) if last.get("busy_s") else None
        ratio = f"{last['wall_s'] / slowest:.2f}" if slowest else "–"
        rows.append([_c("wall time (last session)"),
                     _c(f"{last['wall_s']:.1f} s; slowest model's share {_fmt(slowest, ' s', 1)}; ratio {ratio}")])
        if last.get("one_at_a_time"):
            loads = ", ".join(f"{m} {v:.1f} s" for m, v in last.get("load_s", {}).items())
            rows.append([_c("models asked"), _c(f"one at a time, not side by side: {last['one_at_a_time']}. Each "
                                                f"was loaded before its answers (loading took: {loads}), so its "
                                                f"times are its own, as if alone")])
    rows.append([_c("sessions"), _c(f"{len(meta.get('sessions', []))} (a resumed run has more than one)")])
    g = meta.get("grader") or {}
    if g:
        rows.append([_c("grader"), _c(f"{g.get('version')}; {g.get('puzzle_file')} sha256 {g.get('puzzle_sha256', '')[:12]}")])
    cal = meta.get("judge_calibration")
    if cal and cal.get("judge") == s.get("judge"):
        rows.append([_c("judge calibration"), _c(f"{cal['agree']} of {cal['total']} labelled examples agree")])
    return Table("Settings", ["setting", "value"], rows)


def models_table(meta: dict, stats: dict[str, ModelStats]) -> Table:
    rows = []
    for m in meta["models"]:
        info, st = m.get("info", {}), stats[m["name"]]
        budget = f"{info['memory_budget'] / 1024**3:.1f} GiB" if info.get("memory_budget") else "?"
        rows.append([_c(m["name"]), _c(info.get("backend", "?")), _c(",".join(map(str, info.get("cores", []))) or "?"),
                     _c(budget), _c(st.asked - st.failed), _c(st.failed)])
    return Table("Models", ["model", "backend", "cores", "memory budget", "answered", "failed"], rows)


def scores_table(models: list[str], puzzles: list[Puzzle], graded: list[Graded], stats: dict[str, ModelStats]) -> Table:
    rows = []
    for m in models:
        row = [_c(m)]
        for p in puzzles:
            gs = _cell(p.id, m, graded)
            if not gs:
                row.append(_c("–"))
                continue
            score = statistics.mean(g.final.score for g in gs)
            label = gs[0].final.label if len(gs) == 1 else label_for(score, p.max_score)
            tags = "".join(sorted({source_tag(g.final) for g in gs}))
            cut = " ✂" if any(g.cut_off for g in gs) else ""
            row.append(_c(f"{score:.2f} {tags}{cut}{spread([g.final.score for g in gs])}", css=f"score {label}"))
        row.append(_c(f"{stats[m].score:.2f} / {stats[m].max_score:.0f}", css="score", strong=True))
        rows.append(row)
    return Table("Scores", ["model", *[p.id for p in puzzles], "total"], rows,
                 "Final verdicts, mean over repeats. Where each score came from: R rules, J judge (asked only "
                 "where the rules were unsure), H a human (eval/overrides.toml). ✂ an answer cut off at the "
                 "token limit. With repeats: (min–max), or ± a 95% interval from 3 repeats on.")


def spread(xs: list[float]) -> str:
    """'' for one value; (min–max) for two; ± half a 95% t-interval for three or more."""
    if len(xs) < 2:
        return ""
    if len(xs) == 2:
        return f" ({min(xs):.2f}–{max(xs):.2f})"
    t95 = {3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(len(xs), 2.0)
    return f" ±{t95 * statistics.stdev(xs) / math.sqrt(len(xs)):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def criteria_tables(models: list[str], puzzles: list[Puzzle], graded: list[Graded]) -> list[Table]:
    """Per puzzle with several criteria: which criterion each answer met, by the rules."""
    out = []
    for p in puzzles:
        if len(p.criteria) < 2:
            continue
        rows = []
        for m in models:
            for g in _cell(p.id, m, graded):
                met = g.rules.criteria
                rep = f" #{g.rec['repeat']}" if len(_cell(p.id, m, graded)) > 1 else ""
                rows.append([_c(m + rep)] + [_c("✓" if met.get(c.name) else "✗", css="right" if met.get(c.name)
                                                else "wrong") for c in p.criteria])
        out.append(Table(f"Criteria: {p.id}", ["model", *[c.name for c in p.criteria]], rows,
                         "Per criterion, as the rules read each answer (✓ met, ✗ not met or contradicted)."))
    return out


def disagreements_table(graded: list[Graded]) -> Table | None:
    """Answers the judge graded where its score and the rules' differ by more than 0.25."""
    rows = []
    for g in graded:
        j = g.judged
        if j is None or j.label == "error" or abs(j.score - g.rules.score) <= 0.25:
            continue
        rows.append([_c(g.rec["model"]), _c(g.rec["puzzle"]), _c(g.rec["repeat"]),
                     _c(f"{g.rules.score:.2f} {g.rules.label}"), _c(f"{j.score:.2f} {j.label}"),
                     _c(j.reason), _c(source_tag(g.final))])
    if not any(g.judged for g in graded):
        return None
    return Table("Rules vs judge disagreements", ["model", "puzzle", "repeat", "rules", "judge", "judge's reason", "final"],
                 rows, "Answers the rules were unsure of, where the judge's score differs from the rules' by more "
                       "than 0.25. " + ("None." if not rows else "Read these first when you check the grading."))


def warnings(puzzles: list[Puzzle], graded: list[Graded]) -> list[str]:
    out = [w for p in puzzles for w in p.warnings()]
    cut = sum(1 for g in graded if g.cut_off)
    if cut:
        out.append(f"{cut} answer(s) were cut off at the token limit (✂): their scores may understate the model")
    failed = [g for g in graded if g.judged and g.judged.label == "error"]
    if failed:
        out.append(f"{len(failed)} judgement(s) failed; the rules' verdict stands; --resume asks the judge again")
    return out


def speed_table(models: list[str], stats: dict[str, ModelStats]) -> Table:
    rows = [[_c(m), _c(_fmt(st.mean(st.ttft), " s")), _c(_fmt(st.mean(st.latency), " s")),
             _c(_fmt(st.mean(st.tps), "", 1)), _c(st.tokens), _c(_fmt(st.mean(st.thinking), " s")),
             _c(_fmt(st.mean(st.trace_tokens), "", 0))] for m, st in ((m, stats[m]) for m in models)]
    return Table("Speed", ["model", "mean TTFT", "mean latency", "mean decode tok/s", "tokens", "mean thinking",
                           "mean thinking tokens"], rows,
                 "TTFT: to the answer's first token, after a thinking model's trace. Decoding counts the trace's "
                 "tokens too. Thinking: the time and tokens of the trace, for the answers that had one (– none did).")


def thinking_table(models: list[str], stats: dict[str, ModelStats]) -> Table | None:
    """A model asked with thinking on and with it off (--thinking both): the two side by side."""
    pairs = [(m, labelled(served(m)[0], "off")) for m in models if served(m)[1] == "on"]
    pairs = [(on, off) for on, off in pairs if off in stats]
    if not pairs:
        return None
    rows = []
    for on, off in pairs:
        a, b = stats[on], stats[off]
        rows.append([_c(served(on)[0]), _c(f"{a.score:.2f} / {a.max_score:.0f}"), _c(f"{b.score:.2f} / {b.max_score:.0f}"),
                     _c(_fmt(a.mean(a.latency), " s")), _c(_fmt(b.mean(b.latency), " s")),
                     _c(_fmt(a.mean(a.trace_tokens), "", 0)), _c(_fmt(b.mean(b.trace_tokens), "", 0))])
    return Table("Thinking on and off", ["model", "score, on", "score, off", "latency, on", "latency, off",
                                         "thinking tokens, on", "thinking tokens, off"], rows,
                 "The same questions asked with the model's trace on and off (--thinking both).")


def speed_charts(models: list[str], stats: dict[str, ModelStats]) -> list[tuple[str, dict, str]]:
    return [(title, {m: stats[m].mean(getattr(stats[m], attr)) for m in models}, unit)
            for title, attr, unit in (("Mean latency (s)", "latency", "s"), ("Mean decode speed (tok/s)", "tps", "tok/s"),
                                      ("Mean time to first token (s)", "ttft", "s"))]


@dataclass
class AnswerView:
    """One answer as both reports show it."""
    model: str
    repeat: str
    verdict: Verdict
    others: list[Verdict]
    timing: str
    error: str | None
    answer: str
    cut_off: bool = False
    evidence: list[dict] = field(default_factory=list)  # spans of `answer` the rules read (rules' verdict)
    trace: str | None = None  # a thinking model's reasoning, shown folded (never graded)
    trace_line: str = ""


EVIDENCE_WORDS = {"met": "met", "wrong": "wrong reading", "cancelled": "met but contradicted", "hedge": "option stated"}


def answer_views(meta: dict, p: Puzzle, models: list[str], graded: list[Graded]) -> list[AnswerView]:
    out = []
    for m in models:
        for g in _cell(p.id, m, graded):
            r = g.rec
            timing = (f"{_fmt(r.get('ttft_s'), ' s')} to first token, {_fmt(r.get('latency_s'), ' s')} in all, "
                      f"{r.get('completion_tokens') or '–'} tokens, {_fmt(r.get('decode_tps'), ' tok/s', 1)}, "
                      f"finish: {r.get('finish_reason') or '–'}")
            repeat = f"repeat {r['repeat']}" if meta["settings"].get("repeats", 1) > 1 else ""
            trace_line = (f"Thinking: {r.get('reasoning_tokens') or '–'} tokens, {_fmt(r.get('thinking_s'), ' s')}"
                          if r.get("reasoning") is not None else "")
            out.append(AnswerView(m, repeat, g.final, g.others, timing, r.get("error"), r.get("answer") or "",
                                  g.cut_off, [e for e in g.rules.evidence if "start" in e], r.get("reasoning"),
                                  trace_line))
    return out


def _parts(meta: dict, puzzles: list[Puzzle], graded: list[Graded]):
    models = [m["name"] for m in meta["models"]]
    stats = collect(models, graded)
    dis, both = disagreements_table(graded), thinking_table(models, stats)
    tables = [settings_table(meta, puzzles), models_table(meta, stats), scores_table(models, puzzles, graded, stats),
              speed_table(models, stats), *([both] if both else []), *criteria_tables(models, puzzles, graded),
              *([dis] if dis else [])]
    return models, stats, tables


# ---- Markdown ------------------------------------------------------------------------------------
def md_table(t: Table) -> list[str]:
    def cell(c: Cell) -> str:
        return f"**{c.text}**" if c.strong else c.text
    out = ["", f"## {t.title}", ""] + ([t.note, ""] if t.note else [])
    out += ["| " + " | ".join(t.headers) + " |", "| " + " | ".join("---" for _ in t.headers) + " |"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    return out


def _bar(value, vmax, width=30) -> str:
    if value is None or not vmax:
        return ""
    return "█" * max(1, round(width * value / vmax))


def markdown(meta: dict, puzzles: list[Puzzle], graded: list[Graded]) -> str:
    models, stats, tables = _parts(meta, puzzles, graded)
    out = [f"# Puzzle run `{meta['run']}`"]
    for t in tables:
        out += md_table(t)
    warns = warnings(puzzles, graded)
    if warns:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in warns]
    width = max((len(m) for m in models), default=0)
    for title, vals, unit in speed_charts(models, stats):
        vmax = max((v for v in vals.values() if v is not None), default=None)
        out += ["", f"**{title}**", "", "```"]
        out += [f"{m:<{width}}  {_bar(vals[m], vmax)} {_fmt(vals[m], ' ' + unit, 1)}" for m in models]
        out.append("```")
    out += ["", "## Answers, puzzle by puzzle"]
    for p in puzzles:
        out += ["", f"### {p.id}", "", f"**Question:** {p.question}", "", f"**Reference:** {p.reference}"]
        for a in answer_views(meta, p, models, graded):
            v = a.verdict
            out += ["", f"#### {a.model}{f' ({a.repeat})' if a.repeat else ''}: {v.label}, "
                        f"{v.score:.2f}/{v.max_score:.0f} [{source_tag(v)}]{' ✂ cut off' if a.cut_off else ''}", "",
                    f"- verdict ({v.source}): {v.reason}"]
            out += [f"- {o.source} verdict (not final): {o.label} {o.score:.2f}: {o.reason}" for o in a.others]
            out += [f"- evidence, {EVIDENCE_WORDS[e['kind']]}: “{e['matched']}” → {e['criterion']}"
                    + (f" (on “{e['anchor']}”)" if e.get("anchor") else "") for e in a.evidence]
            out.append(f"- {a.timing}" + (f", error: {a.error}" if a.error else ""))
            if a.cut_off:
                out.append("- ✂ cut off at the token limit: the answer did not finish")
            if a.trace is not None:  # folded where Markdown is rendered (GitHub, editors)
                out += ["", f"<details><summary>{a.trace_line} (not graded)</summary>", "", "```text",
                        a.trace.replace("```", "ˋˋˋ"), "```", "", "</details>"]
            if a.answer:
                out += ["", "```text", a.answer.replace("```", "ˋˋˋ"), "```"]
    return "\n".join(out) + "\n"


# ---- HTML ----------------------------------------------------------------------------------------
CSS = """
body{font-family:"Noto Sans CJK SC","WenQuanYi Micro Hei","PingFang SC","Microsoft YaHei",sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}
th{background:#f4f4f4}.score{text-align:center;font-weight:bold}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.card{border:1px solid #ccc;border-radius:6px;padding:10px;background:#fff}
.card h4{margin:0 0 6px 0;font-size:14px}.answer{white-space:pre-wrap;font-size:13px;background:#fafafa;
border:1px solid #eee;padding:6px;max-height:420px;overflow:auto}.meta{font-size:12px;color:#555}
.right{background:#d8f3dc}.partial{background:#fff3bf}.wrong,.echo,.hedge{background:#ffd6d6}.error{background:#e9ecef}
.badge{display:inline-block;padding:1px 6px;border-radius:4px;font-size:12px}.src{background:#e7f0fa}
mark.ev-met{background:#b7e4c7}mark.ev-wrong,mark.ev-hedge{background:#ffb3b3}mark.ev-cancelled{background:#ffe066}
.cut{color:#a61e4d;font-weight:bold}details.trace{margin:4px 0}details.trace summary{font-size:12px;color:#555;cursor:pointer}
"""


def html_table(t: Table) -> str:
    e = html.escape

    def cell(c: Cell) -> str:
        attr = f' class="{e(c.css)}"' if c.css else ""
        return f"<td{attr}>{f'<b>{e(c.text)}</b>' if c.strong else e(c.text)}</td>"
    head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in t.rows)
    note = f"<p>{e(t.note)}</p>" if t.note else ""
    return f"<h2>{e(t.title)}</h2>{note}<table><tr>{head}</tr>{body}</table>"


def _svg_bars(title: str, values: dict, unit: str) -> str:
    items = list(values.items())
    vmax = max((v for _, v in items if v is not None), default=0) or 1
    row, label_w, bar_w = 22, 260, 360
    h = row * len(items) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{h}" role="img" '
             f'aria-label="{html.escape(title)}"><text x="0" y="14" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for i, (k, v) in enumerate(items):
        y = 24 + i * row
        w = 0 if v is None else max(1, bar_w * v / vmax)
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(k)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="14" fill="#4c78a8"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 14}" font-size="12">'
                     f'{"–" if v is None else f"{v:.2f} {unit}"}</text>')
    parts.append("</svg>")
    return "".join(parts)


def highlight(answer: str, evidence: list[dict]) -> str:
    """The answer, escaped, with the spans the rules read marked (title: the criterion)."""
    e = html.escape
    spans = sorted({(x["start"], x["end"], x["kind"], x["criterion"]) for x in evidence if x["end"] > x["start"]})
    out, pos = [], 0
    for a, b, kind, crit in spans:
        if a < pos:
            continue
        out.append(e(answer[pos:a]))
        out.append(f'<mark class="ev-{e(kind)}" title="{e(EVIDENCE_WORDS.get(kind, kind))}: {e(crit)}">{e(answer[a:b])}</mark>')
        pos = b
    out.append(e(answer[pos:]))
    return "".join(out)


def _html_card(a: AnswerView) -> str:
    e, v = html.escape, a.verdict
    others = "".join(f'<div class="meta">{e(o.source)} (not final): {e(o.label)} {o.score:.2f}: {e(o.reason)}</div>'
                     for o in a.others)
    err = f'<div class="meta">error: {e(a.error)}</div>' if a.error else ""
    cut = '<div class="meta cut">✂ cut off at the token limit: the answer did not finish</div>' if a.cut_off else ""
    trace = (f'<details class="trace"><summary>{e(a.trace_line)} (not graded)</summary>'
             f'<div class="answer">{e(a.trace)}</div></details>' if a.trace is not None else "")
    return (f'<div class="card"><h4>{e(a.model)}{f" · {e(a.repeat)}" if a.repeat else ""} '
            f'<span class="badge {v.label}">{e(v.label)} {v.score:.2f}</span> '
            f'<span class="badge src" title="{e(v.source)}">{e(source_tag(v))}</span></h4>'
            f'<div class="meta">{e(v.source)}: {e(v.reason)}</div>{others}'
            f'<div class="meta">{e(a.timing)}</div>{cut}{err}{trace}'
            f'<div class="answer">{highlight(a.answer, a.evidence)}</div></div>')


def html_report(meta: dict, puzzles: list[Puzzle], graded: list[Graded]) -> str:
    e = html.escape
    models, stats, tables = _parts(meta, puzzles, graded)
    out = ['<!doctype html><html lang="zh"><head><meta charset="utf-8">',
           f"<title>Puzzle run {e(meta['run'])}</title><style>{CSS}</style></head><body>",
           f"<h1>Puzzle run <code>{e(meta['run'])}</code></h1>"]
    out += [html_table(t) for t in tables]
    warns = warnings(puzzles, graded)
    if warns:
        out.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in warns) + "</ul>")
    out += [_svg_bars(title, vals, unit) for title, vals, unit in speed_charts(models, stats)]
    out.append("<h2>Answers, side by side</h2>")
    for p in puzzles:
        out.append(f"<h3>{e(p.id)}</h3><p><b>Question:</b> {e(p.question)}</p>"
                   f"<p><b>Reference:</b> {e(p.reference)}</p><div class=\"grid\">")
        out += [_html_card(a) for a in answer_views(meta, p, models, graded)]
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


# ---- CSV -----------------------------------------------------------------------------------------
CSV_FIELDS = ["model", "puzzle", "repeat", "score", "max_score", "label", "source", "rules_score", "judge_score",
              "cut_off", "finish_reason", "ttft_s", "latency_s", "completion_tokens", "decode_tps", "thinking_s",
              "reasoning_tokens", "error", "reason"]


def csv_report(meta: dict, graded: list[Graded]) -> str:
    """One row per answer, for a spreadsheet."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS)
    w.writeheader()
    for g in graded:
        r, j = g.rec, g.judged
        w.writerow({"model": r["model"], "puzzle": r["puzzle"], "repeat": r["repeat"], "score": g.final.score,
                    "max_score": g.final.max_score, "label": g.final.label, "source": g.final.source,
                    "rules_score": g.rules.score, "judge_score": j.score if j and j.label != "error" else "",
                    "cut_off": int(g.cut_off), "finish_reason": r.get("finish_reason") or "",
                    **{k: r.get(k) if r.get(k) is not None else "" for k in
                       ("ttft_s", "latency_s", "completion_tokens", "decode_tps", "thinking_s", "reasoning_tokens")},
                    "error": r.get("error") or "", "reason": g.final.reason})
    return buf.getvalue()
