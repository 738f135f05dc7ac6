"""Reports of a run: Markdown, and one self-contained HTML file (inline CSS and SVG, no scripts,
no fonts or images from anywhere), readable offline."""
from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field

from askall.grading import Verdict
from askall.puzzles import Puzzle


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


def collect(models: list[str], puzzles: list[Puzzle], graded: list[Graded]) -> dict[str, ModelStats]:
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


def _model_line(name: str, info: dict) -> tuple[str, str, str, str]:
    cores = ",".join(map(str, info.get("cores", []))) or "?"
    budget = f"{info['memory_budget'] / 1024**3:.1f} GiB" if info.get("memory_budget") else "?"
    return name, info.get("backend", "?"), cores, budget


def _bar(value, vmax, width=30) -> str:
    if value is None or not vmax:
        return ""
    return "█" * max(1, round(width * value / vmax))


def markdown(meta: dict, puzzles: list[Puzzle], graded: list[Graded]) -> str:
    models = [m["name"] for m in meta["models"]]
    info = {m["name"]: m.get("info", {}) for m in meta["models"]}
    stats = collect(models, puzzles, graded)
    s = meta["settings"]
    out = [f"# Puzzle run `{meta['run']}`", ""]
    last = meta["sessions"][-1] if meta.get("sessions") else {}
    out += ["## Settings", "", "| setting | value |", "| --- | --- |"]
    for k in ("api_base", "temperature", "max_tokens", "seed", "repeats", "judge"):
        out.append(f"| {k} | {s.get(k)} |")
    out.append(f"| puzzles | {len(puzzles)} ({', '.join(p.id for p in puzzles)}) |")
    if last:
        slowest = max(last["busy_s"].values()) if last.get("busy_s") else None
        ratio = f"{last['wall_s'] / slowest:.2f}" if slowest else "–"
        out.append(f"| wall time (last session) | {last['wall_s']:.1f} s; slowest model's share "
                   f"{_fmt(slowest, ' s', 1)}; ratio {ratio} |")
    out.append(f"| sessions | {len(meta.get('sessions', []))} (a resumed run has more than one) |")
    out += ["", "## Models", "", "| model | backend | cores | memory budget | answered | failed |",
            "| --- | --- | --- | --- | --- | --- |"]
    for m in models:
        n, b, c, bud = _model_line(m, info[m])
        out.append(f"| {n} | {b} | {c} | {bud} | {stats[m].asked - stats[m].failed} | {stats[m].failed} |")

    out += ["", "## Scores", "", "Final verdicts (human over judge over rules), mean over repeats.", "",
            "| model | " + " | ".join(p.id for p in puzzles) + " | total |",
            "| --- | " + " | ".join("---" for _ in puzzles) + " | --- |"]
    for m in models:
        cells = []
        for p in puzzles:
            gs = _cell(p.id, m, graded)
            cells.append(f"{statistics.mean(g.final.score for g in gs):.2f}" if gs else "–")
        out.append(f"| {m} | " + " | ".join(cells) + f" | **{stats[m].score:.2f}** / {stats[m].max_score:.0f} |")

    out += ["", "## Speed", "", "| model | mean TTFT | mean latency | mean decode tok/s | tokens |",
            "| --- | --- | --- | --- | --- |"]
    for m in models:
        st = stats[m]
        out.append(f"| {m} | {_fmt(st.mean(st.ttft), ' s')} | {_fmt(st.mean(st.latency), ' s')} | "
                   f"{_fmt(st.mean(st.tps), '', 1)} | {st.tokens} |")
    for title, attr, unit in (("Mean latency (s)", "latency", "s"), ("Mean decode speed (tok/s)", "tps", "tok/s")):
        vals = {m: stats[m].mean(getattr(stats[m], attr)) for m in models}
        vmax = max((v for v in vals.values() if v is not None), default=None)
        out += ["", f"**{title}**", "", "```"]
        width = max(len(m) for m in models)
        for m in models:
            out.append(f"{m:<{width}}  {_bar(vals[m], vmax)} {_fmt(vals[m], ' ' + unit, 1)}")
        out.append("```")

    out += ["", "## Answers, puzzle by puzzle"]
    for p in puzzles:
        out += ["", f"### {p.id}", "", f"**Question:** {p.question}", "", f"**Reference:** {p.reference}"]
        for m in models:
            for g in _cell(p.id, m, graded):
                r, v = g.rec, g.final
                rep = f" (repeat {r['repeat']})" if meta["settings"].get("repeats", 1) > 1 else ""
                out += ["", f"#### {m}{rep}: {v.label}, {v.score:.2f}/{v.max_score:.0f}", "",
                        f"- verdict ({v.source}): {v.reason}"]
                for o in g.others:
                    out.append(f"- overridden {o.source} verdict: {o.label} {o.score:.2f}: {o.reason}")
                out.append(f"- {_fmt(r.get('ttft_s'), ' s')} to first token, {_fmt(r.get('latency_s'), ' s')} in all, "
                           f"{r.get('completion_tokens') or '–'} tokens, {_fmt(r.get('decode_tps'), ' tok/s', 1)}, "
                           f"finish: {r.get('finish_reason') or '–'}" + (f", error: {r['error']}" if r.get("error") else ""))
                if r.get("answer"):
                    out += ["", "```text", r["answer"].replace("```", "ˋˋˋ"), "```"]
    return "\n".join(out) + "\n"


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


def _svg_bars(title: str, values: dict, unit: str) -> str:
    items = [(k, v) for k, v in values.items()]
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


def html_report(meta: dict, puzzles: list[Puzzle], graded: list[Graded]) -> str:
    e = html.escape
    models = [m["name"] for m in meta["models"]]
    info = {m["name"]: m.get("info", {}) for m in meta["models"]}
    stats = collect(models, puzzles, graded)
    s = meta["settings"]
    out = ['<!doctype html><html lang="zh"><head><meta charset="utf-8">',
           f"<title>Puzzle run {e(meta['run'])}</title><style>{CSS}</style></head><body>",
           f"<h1>Puzzle run <code>{e(meta['run'])}</code></h1>", "<h2>Settings</h2><table>"]
    for k in ("api_base", "temperature", "max_tokens", "seed", "repeats", "judge"):
        out.append(f"<tr><th>{k}</th><td>{e(str(s.get(k)))}</td></tr>")
    last = meta["sessions"][-1] if meta.get("sessions") else {}
    if last:
        slowest = max(last["busy_s"].values()) if last.get("busy_s") else None
        out.append(f"<tr><th>wall time</th><td>{last['wall_s']:.1f} s (slowest model's share "
                   f"{_fmt(slowest, ' s', 1)})</td></tr>")
    out.append("</table><h2>Models</h2><table><tr><th>model</th><th>backend</th><th>cores</th>"
               "<th>memory budget</th><th>answered</th><th>failed</th></tr>")
    for m in models:
        n, b, c, bud = _model_line(m, info[m])
        out.append(f"<tr><td>{e(n)}</td><td>{e(b)}</td><td>{e(c)}</td><td>{e(bud)}</td>"
                   f"<td>{stats[m].asked - stats[m].failed}</td><td>{stats[m].failed}</td></tr>")
    out.append("</table><h2>Scores</h2><table><tr><th>model</th>" +
               "".join(f"<th>{e(p.id)}</th>" for p in puzzles) + "<th>total</th></tr>")
    for m in models:
        out.append(f"<tr><td>{e(m)}</td>")
        for p in puzzles:
            gs = _cell(p.id, m, graded)
            if not gs:
                out.append("<td>–</td>")
                continue
            sc = statistics.mean(g.final.score for g in gs)
            lab = gs[0].final.label if len(gs) == 1 else ("right" if sc >= 0.999 else "partial" if sc > 0 else "wrong")
            out.append(f'<td class="score {lab}">{sc:.2f}</td>')
        out.append(f'<td class="score">{stats[m].score:.2f} / {stats[m].max_score:.0f}</td></tr>')
    out.append("</table><h2>Speed</h2>")
    out.append(_svg_bars("Mean latency per answer", {m: stats[m].mean(stats[m].latency) for m in models}, "s"))
    out.append(_svg_bars("Mean decode speed", {m: stats[m].mean(stats[m].tps) for m in models}, "tok/s"))
    out.append(_svg_bars("Mean time to first token", {m: stats[m].mean(stats[m].ttft) for m in models}, "s"))
    out.append("<h2>Answers, side by side</h2>")
    for p in puzzles:
        out.append(f"<h3>{e(p.id)}</h3><p><b>Question:</b> {e(p.question)}</p>"
                   f"<p><b>Reference:</b> {e(p.reference)}</p><div class=\"grid\">")
        for m in models:
            for g in _cell(p.id, m, graded):
                r, v = g.rec, g.final
                overridden = "".join(f"<div class=\"meta\">overridden {e(o.source)}: {e(o.label)} {o.score:.2f}: "
                                     f"{e(o.reason)}</div>" for o in g.others)
                err = f"<div class=\"meta\">error: {e(r['error'])}</div>" if r.get("error") else ""
                rep = f" · repeat {r['repeat']}" if s.get("repeats", 1) > 1 else ""
                out.append(
                    f'<div class="card"><h4>{e(m)}{rep} '
                    f'<span class="badge {v.label}">{e(v.label)} {v.score:.2f}</span></h4>'
                    f'<div class="meta">{e(v.source)}: {e(v.reason)}</div>{overridden}'
                    f'<div class="meta">TTFT {_fmt(r.get("ttft_s"), " s")} · latency {_fmt(r.get("latency_s"), " s")}'
                    f' · {r.get("completion_tokens") or "–"} tokens · {_fmt(r.get("decode_tps"), " tok/s", 1)}'
                    f' · finish {e(str(r.get("finish_reason") or "–"))}</div>{err}'
                    f'<div class="answer">{e(r.get("answer") or "")}</div></div>')
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
