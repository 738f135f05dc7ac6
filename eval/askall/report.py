"""Reports of a run: Markdown, and one self-contained HTML file (inline CSS and SVG, no scripts,
no fonts or images from anywhere), readable offline.

Each table and each answer is built once as data (`Table`, `AnswerView`) and rendered twice,
so the two reports cannot disagree.
"""
from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field

from eval.askall.grading import Verdict, label_for
from eval.askall.puzzles import Puzzle


@dataclass
class Graded:
    rec: dict
    final: Verdict
    others: list[Verdict] = field(default_factory=list)  # the verdicts the final one overrode


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
    rows.append([_c("sessions"), _c(f"{len(meta.get('sessions', []))} (a resumed run has more than one)")])
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
            row.append(_c(f"{score:.2f}", css=f"score {label}"))
        row.append(_c(f"{stats[m].score:.2f} / {stats[m].max_score:.0f}", css="score", strong=True))
        rows.append(row)
    return Table("Scores", ["model", *[p.id for p in puzzles], "total"], rows,
                 "Final verdicts (human over judge over rules), mean over repeats.")


def speed_table(models: list[str], stats: dict[str, ModelStats]) -> Table:
    rows = [[_c(m), _c(_fmt(st.mean(st.ttft), " s")), _c(_fmt(st.mean(st.latency), " s")),
             _c(_fmt(st.mean(st.tps), "", 1)), _c(st.tokens)] for m, st in ((m, stats[m]) for m in models)]
    return Table("Speed", ["model", "mean TTFT", "mean latency", "mean decode tok/s", "tokens"], rows)


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


def answer_views(meta: dict, p: Puzzle, models: list[str], graded: list[Graded]) -> list[AnswerView]:
    out = []
    for m in models:
        for g in _cell(p.id, m, graded):
            r = g.rec
            timing = (f"{_fmt(r.get('ttft_s'), ' s')} to first token, {_fmt(r.get('latency_s'), ' s')} in all, "
                      f"{r.get('completion_tokens') or '–'} tokens, {_fmt(r.get('decode_tps'), ' tok/s', 1)}, "
                      f"finish: {r.get('finish_reason') or '–'}")
            repeat = f"repeat {r['repeat']}" if meta["settings"].get("repeats", 1) > 1 else ""
            out.append(AnswerView(m, repeat, g.final, g.others, timing, r.get("error"), r.get("answer") or ""))
    return out


def _parts(meta: dict, puzzles: list[Puzzle], graded: list[Graded]):
    models = [m["name"] for m in meta["models"]]
    stats = collect(models, graded)
    tables = [settings_table(meta, puzzles), models_table(meta, stats), scores_table(models, puzzles, graded, stats),
              speed_table(models, stats)]
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
                        f"{v.score:.2f}/{v.max_score:.0f}", "", f"- verdict ({v.source}): {v.reason}"]
            out += [f"- overridden {o.source} verdict: {o.label} {o.score:.2f}: {o.reason}" for o in a.others]
            out.append(f"- {a.timing}" + (f", error: {a.error}" if a.error else ""))
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
.badge{display:inline-block;padding:1px 6px;border-radius:4px;font-size:12px}
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


def _html_card(a: AnswerView) -> str:
    e, v = html.escape, a.verdict
    overridden = "".join(f'<div class="meta">overridden {e(o.source)}: {e(o.label)} {o.score:.2f}: {e(o.reason)}</div>'
                         for o in a.others)
    err = f'<div class="meta">error: {e(a.error)}</div>' if a.error else ""
    return (f'<div class="card"><h4>{e(a.model)}{f" · {e(a.repeat)}" if a.repeat else ""} '
            f'<span class="badge {v.label}">{e(v.label)} {v.score:.2f}</span></h4>'
            f'<div class="meta">{e(v.source)}: {e(v.reason)}</div>{overridden}'
            f'<div class="meta">{e(a.timing)}</div>{err}<div class="answer">{e(a.answer)}</div></div>')


def html_report(meta: dict, puzzles: list[Puzzle], graded: list[Graded]) -> str:
    e = html.escape
    models, stats, tables = _parts(meta, puzzles, graded)
    out = ['<!doctype html><html lang="zh"><head><meta charset="utf-8">',
           f"<title>Puzzle run {e(meta['run'])}</title><style>{CSS}</style></head><body>",
           f"<h1>Puzzle run <code>{e(meta['run'])}</code></h1>"]
    out += [html_table(t) for t in tables]
    out += [_svg_bars(title, vals, unit) for title, vals, unit in speed_charts(models, stats)]
    out.append("<h2>Answers, side by side</h2>")
    for p in puzzles:
        out.append(f"<h3>{e(p.id)}</h3><p><b>Question:</b> {e(p.question)}</p>"
                   f"<p><b>Reference:</b> {e(p.reference)}</p><div class=\"grid\">")
        out += [_html_card(a) for a in answer_views(meta, p, models, graded)]
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
