"""Rule grading: every verdict carries its reason, the criteria met, the text that met them, and
whether the rules are sure (the judge is asked only where they are not).

How an answer is read (each step guards against something the seed answers do):
1. normalized the same way as the rules (textnorm): near-miss wording still matches;
2. the question, echoed verbatim, is masked: repeating it earns nothing (ChatGLM3, DeepSeek);
3. each criterion with `anchors` is looked for only in its own part of the answer: from the
   phrase it explains to the next item, so `讽刺` on the 意思意思 line never counts for 真有意思,
   and generic words (含义, 保暖) count only right after that phrase;
4. `ignore` and `circular` spans are masked: quoting the puzzle's phrases (能穿多少穿多少 contains
   穿多) or restating the question as its own answer ("谁不知道的事情是他不知道的事情") explains nothing;
5. rules match one sentence at a time, never across a sentence end;
6. a `wrong` reading asserted (not negated) cancels the credit of the items it contradicts;
   stating more than one `exclusive` option is a hedge and scores 0;
7. an answer that meets nothing, repeats the question and adds almost nothing is an echo.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

from eval.askall.puzzles import Criterion, Puzzle
from eval.askall.textnorm import MASK, REAL_ENDS, masked, normalize, normalize_map, sentence_start, sentences

GRADER_VERSION = "rules-2"
NEAR = 30  # characters after an anchor in which a generic word counts
REGION_MAX = 240  # an item's part of the answer ends here at the latest
NEGATION = re.compile(r"(不|非|没|无|未|别|否认|并不|不是|而非|并非)\"?$")
ITEM_START = re.compile(r"(?:^|\n)\s*(?:[(（]?\d{1,2}[.、)）:]|第[一二三四五六七八九十\d]+[个点条、]|[-•*])")


def _ngrams(s: str, n: int = 4) -> set[str]:
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def question_coverage(answer: str, question: str, n: int = 4) -> float:
    """Share of the question's n-grams that the answer repeats."""
    grams = _ngrams(question, n)
    return len(grams & _ngrams(answer, n)) / len(grams) if grams else 0.0


def new_chars(answer: str, question: str, n: int = 4) -> int:
    """Characters (not punctuation) of the answer not covered by any n-gram of the question."""
    grams = _ngrams(question, n)
    covered = [False] * len(answer)
    for i in range(len(answer) - n + 1):
        if answer[i:i + n] in grams:
            for j in range(i, i + n):
                covered[j] = True
    return sum(1 for ch, c in zip(answer, covered) if not c and not unicodedata.category(ch).startswith("P")
               and ch not in "\n" + MASK)


@dataclass
class Verdict:
    score: float
    max_score: float
    label: str  # right / partial / wrong / echo / hedge / error / ungraded
    reason: str
    evidence: list[dict] = field(default_factory=list)
    source: str = "rules"
    confident: bool = True  # False: the rules could not tell; a judge (if any) decides
    criteria: dict[str, bool] = field(default_factory=dict)  # criterion name -> met

    def to_dict(self) -> dict:
        return asdict(self)

    def in_words(self) -> str:
        """The verdict for a reader of the web page: what the answer got, missed and got wrong, each
        part named as its puzzle names it and quoted from the answer. `reason` keeps the rules' own
        account (sense order, restatements, why they are unsure) for the report and the judge."""
        if self.label == "hedge":
            said = [f"“{e['matched']}”" for e in self.evidence if e["kind"] == "hedge"]
            return f"It gives more than one answer to '{self.evidence[0]['criterion']}' ({', '.join(said)}): " \
                   f"an answer that hedges scores 0."
        if self.label == "echo":
            return f"It {self.reason}."
        if self.label not in ("right", "partial", "wrong"):  # no answer, or no rules
            return self.reason[:1].upper() + self.reason[1:] + "."
        quoted = lambda e: f"{e['criterion']} (“{e['matched']}”)"  # noqa: E731
        cancelled = {e["criterion"] for e in self.evidence if e["kind"] == "cancelled"}
        wrong = [e for e in self.evidence if e["kind"] == "wrong"]
        sentences = [
            ("It gets: ", [quoted(e) for e in self.evidence if e["kind"] == "met"]),
            ("It misses: ", [n for n, ok in self.criteria.items() if not ok and n not in cancelled
                             and not any(e["criterion"] == n for e in wrong)]),
            ("It says the opposite of: ", [quoted(e) for e in wrong if e["criterion"] in self.criteria]),
            ("It says something wrong: ", [quoted(e) for e in wrong if e["criterion"] not in self.criteria]),
            ("So no credit for: ", [quoted(e) for e in self.evidence if e["kind"] == "cancelled"]),
        ]
        return " ".join(head + "; ".join(parts) + "." for head, parts in sentences if parts) or self.reason

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def label_for(score: float, max_score: float) -> str:
    """The one rule from a score to a label, for rules, judges, humans and report cells."""
    if score >= max_score - 1e-6:
        return "right"
    return "partial" if score > 0 else "wrong"


@dataclass
class _Text:
    """An answer prepared for matching: normalized, question masked, offsets back to the original."""
    original: str
    norm: str
    idx: list[int]
    anchored: str  # question masked: anchors are found here
    text: str  # also ignore and circular spans masked: criteria are matched here
    circular: list[str]

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Original offsets of normalized span [a, b)."""
        return (self.idx[a], self.idx[b - 1] + 1) if b > a else (self.idx[a] if a < len(self.idx) else 0,) * 2

    def quote(self, a: int, b: int) -> str:
        s, e = self.span(a, b)
        return self.original[s:e]


def _find(patterns: list[str], text: str, lo: int = 0, hi: int | None = None, negatable: bool = False):
    """Matches of any pattern inside one sentence of text[lo:hi] (never across a sentence end)."""
    out = []
    for s, e in sentences(text, lo, hi):
        sent = text[s:e]
        for p in patterns:
            for m in re.finditer(normalize(p), sent):
                if m.end() == m.start():
                    continue
                if negatable and NEGATION.search(sent[max(0, m.start() - 4):m.start()]):
                    continue
                out.append((s + m.start(), s + m.end()))
    return sorted(set(out))


def _prepare(puzzle: Puzzle, answer: str) -> _Text:
    norm, idx = normalize_map(answer)
    q = normalize(puzzle.question)
    anchored = masked(norm, [(m.start(), m.end()) for m in re.finditer(re.escape(q), norm)]) if q else norm
    circ = []
    spans = []
    for p in puzzle.circular:
        for m in re.finditer(normalize(p), anchored):
            spans.append(m.span())
            circ.append(m.group(0))
    for p in puzzle.ignore:
        spans += [m.span() for m in re.finditer(normalize(p), anchored) if m.end() > m.start()]
    return _Text(answer, norm, idx, anchored, masked(anchored, spans), circ)


def _anchor_hits(puzzle: Puzzle, t: _Text) -> list[tuple[int, int, int]]:
    """(start, end, criterion index) of each item's phrase in the answer; the longest wins where
    phrases overlap (没什么意思 over 什么意思), and a phrase shared by several items (不好意思)
    goes to the first of them not yet found."""
    raw = []
    for i, c in enumerate(puzzle.criteria):
        for p in c.anchors:
            raw += [(m.start(), m.end(), i) for m in re.finditer(normalize(p), t.anchored) if m.end() > m.start()]
    raw.sort(key=lambda h: (h[0], -(h[1] - h[0]), h[2]))
    hits, found, taken_end = [], set(), -1
    k = 0
    while k < len(raw):
        a, b, _ = raw[k]
        same = [h for h in raw[k:] if (h[0], h[1]) == (a, b)]
        k += len(same)
        if a < taken_end:
            continue
        owners = [h[2] for h in same]
        fresh = [i for i in owners if i not in found]
        if puzzle.ordered and found:  # an item after the last one found, if the phrase allows it
            later = [i for i in fresh if i > max(found)]
            fresh = later or fresh
        i = (fresh or owners)[0]
        found.add(i)
        hits.append((a, b, i))
        taken_end = b
    return hits


def _regions(t: _Text, hits) -> dict[int, list[tuple[int, int, int, int]]]:
    """criterion index -> [(region start, region end, anchor start, anchor end)]."""
    items = [m.start() + (1 if m.group(0).startswith("\n") else 0) for m in ITEM_START.finditer(t.anchored)]
    out: dict[int, list] = {}
    for n, (a, b, i) in enumerate(hits):
        prev_end = hits[n - 1][1] if n else 0
        nxt = hits[n + 1][0] if n + 1 < len(hits) else len(t.text)
        end = min([nxt, b + REGION_MAX] + [x for x in items if x > b] + [x for x in
                  (t.anchored.find("\n\n", b),) if x > 0])
        s0 = sentence_start(t.anchored, a)  # the words before the phrase, in its sentence, unless another item's
        start = a if n and hits[n - 1][0] >= s0 else max(s0, prev_end)
        start = max([start] + [x for x in items if x <= a])
        out.setdefault(i, []).append((start, end, a, b))
    return out


def _near_end(text: str, b: int, end: int) -> int:
    """Where generic words stop counting: NEAR characters after the anchor, within its sentence or
    the next (a masked quote is not a sentence end here)."""
    stops = [i for i in range(b, min(end, b + NEAR)) if text[i] in REAL_ENDS]
    return min(end, b + NEAR, stops[1] if len(stops) > 1 else end)


def _criterion_matches(c: Criterion, t: _Text, regions, claimed) -> tuple[list, str, list]:
    """(matches of c as (start, end, anchor span), how it was looked for, its `unless` matches: the
    answer contradicting itself on this item)."""
    if not c.anchors:
        against = _find(c.unless, t.text, negatable=True)
        if against:
            return [], "unless", against
        return [(a, b, None) for a, b in _find(c.patterns, t.text)], "whole", []
    if not regions:  # the answer never quotes the item's phrase: its strong patterns, outside other items' parts
        return [(a, b, None) for a, b in _find(c.patterns, t.text)
                if not any(lo <= a < hi for lo, hi in claimed)], "no-anchor", []
    found, against = [], []
    for lo, hi, a, b in regions:
        bad = _find(c.unless, t.text, lo, hi, negatable=True)
        if bad:
            against += bad
            continue
        found += [(x, y, (a, b)) for x, y in _find(c.patterns, t.text, lo, hi)]
        found += [(x, y, (a, b)) for x, y in _find(c.generic, t.text, lo, _near_end(t.text, b, hi))]
    return sorted(found), "region" if found or not against else "unless", against


def _ordered_choice(per: list[list], points: list[float]) -> list:
    """The criteria met in their listed order (one match each, positions rising) worth the most points."""
    events = sorted(((m[0], i, m) for i, ms in enumerate(per) for m in ms), key=lambda e: e[:2])
    best: list[tuple[float, list]] = []
    for k, (pos, i, m) in enumerate(events):
        cand = (points[i], [(i, m)])
        for j in range(k):
            pj, ij, _ = events[j]
            if pj < pos and ij < i and best[j][0] + points[i] > cand[0]:
                cand = (best[j][0] + points[i], best[j][1] + [(i, m)])
        best.append(cand)
    chosen: list = [None] * len(per)
    if best:
        for i, m in max(best, key=lambda b: b[0])[1]:
            chosen[i] = m
    return chosen


def _ev(t: _Text, a: int, b: int, **kw) -> dict:
    s, e = t.span(a, b)
    lo, hi = max(0, a - 12), min(len(t.norm), b + 12)
    return {**kw, "matched": t.original[s:e], "start": s, "end": e,
            "context": t.norm[lo:hi].replace("\n", " ").replace(MASK, "")}


def grade(puzzle: Puzzle, answer: str | None, error: str | None = None) -> Verdict:
    mx = puzzle.max_score
    if error or answer is None:
        return Verdict(0.0, mx, "error", f"no answer: {error or 'missing'}")
    if not puzzle.has_rules:
        return Verdict(0.0, mx, "ungraded", "this puzzle has no rules: a judge or a human grades it", confident=False)
    t = _prepare(puzzle, answer)

    # exclusive options: more than one stated is a hedge
    stated_options = []
    for ex in puzzle.exclusive:
        stated = {}
        for label, pats in ex.options.items():
            ms = _find(pats, t.text, negatable=True)
            if ms:
                stated[label] = ms[0]
        stated_options += [f"{ex.name}: {k} (“{t.quote(*v)}”)" for k, v in stated.items()]
        if len(stated) > 1:
            shown = "; ".join(f"{k}: “{t.quote(*v)}”" for k, v in stated.items())
            return Verdict(0.0, mx, "hedge", f"states more than one answer to '{ex.name}' ({shown})",
                           [_ev(t, *v, criterion=ex.name, option=k, kind="hedge") for k, v in stated.items()],
                           criteria={c.name: False for c in puzzle.criteria})

    hits = _anchor_hits(puzzle, t)
    regions = _regions(t, hits)
    claimed = [(lo, hi) for rs in regions.values() for lo, hi, _, _ in rs]
    per, how, against = [], [], []
    for i, c in enumerate(puzzle.criteria):
        ms, h, bad = _criterion_matches(c, t, regions.get(i, []), claimed)
        per.append(ms)
        how.append(h)
        against.append(bad)
    chosen = [ms[0] if ms and h == "region" else None for ms, h in zip(per, how)]
    loose = [ms if h != "region" else [] for ms, h in zip(per, how)]  # matched over the whole answer
    if puzzle.ordered:
        picked = _ordered_choice(loose, [c.points for c in puzzle.criteria])
    else:
        picked = [ms[0] if ms else None for ms in loose]
    chosen = [c if c is not None else p for c, p in zip(chosen, picked)]

    # wrong readings cancel what they contradict
    wrong_found = []
    cancelled: dict[str, str] = {}
    for w in puzzle.wrong:
        ms = _find(w.patterns, t.text, negatable=True)
        if ms:
            wrong_found.append((w, ms[0]))
            for name in (w.cancels or [c.name for c in puzzle.criteria]):
                cancelled.setdefault(name, w.name)

    score, evidence, missed, lost = 0.0, [], [], []
    met = {}
    for c, m, h in zip(puzzle.criteria, chosen, how):
        if m is None:
            missed.append(c.name)
            met[c.name] = False
            continue
        ev = _ev(t, m[0], m[1], criterion=c.name, points=c.points, kind="met")
        if m[2] is not None:
            ev["anchor"] = t.quote(*m[2])
        if c.name in cancelled:
            ev["kind"] = "cancelled"
            lost.append(f"{c.name} (contradicted by '{cancelled[c.name]}')")
            met[c.name] = False
        else:
            score += c.points
            met[c.name] = True
        evidence.append(ev)
    evidence += [_ev(t, *m, criterion=w.name, kind="wrong") for w, m in wrong_found]
    contradicted = [(c, bad[0]) for c, bad, m in zip(puzzle.criteria, against, chosen) if bad and m is None]
    evidence += [_ev(t, *m, criterion=c.name, kind="wrong") for c, m in contradicted]
    score = round(min(score, mx), 4)

    added = new_chars(t.anchored, normalize(puzzle.question))
    if score == 0 and not stated_options and not wrong_found and not any(chosen) and not any(against) \
            and question_coverage(t.norm, normalize(puzzle.question)) >= 0.5 and added < puzzle.min_new_chars:
        return Verdict(0.0, mx, "echo", f"echoes the question: repeats it and adds only {added} character(s) "
                                         f"of its own (an answer needs {puzzle.min_new_chars})", criteria=met)

    label = label_for(score, mx)
    got = [e for e in evidence if e["kind"] == "met"]
    parts = [f"rules: met {len(got)}/{len(puzzle.criteria)}: "
             + (", ".join(f"{e['criterion']} (“{e['matched']}”)" for e in got) or "none")]
    if missed:
        parts.append(f"missed: {', '.join(missed)}")
    if wrong_found:
        parts.append("asserts a wrong reading: " + ", ".join(f"{w.name} (“{t.quote(*m)}”)" for w, m in wrong_found))
    if lost:
        parts.append(f"no credit for {', '.join(lost)}")
    if contradicted:
        parts.append("says the opposite of " + ", ".join(f"{c.name} (“{t.quote(*m)}”)" for c, m in contradicted))
    if t.circular:
        parts.append("restates the question as its answer: " + ", ".join(f"“{x}”" for x in t.circular[:3]))
    if puzzle.ordered and any(per[i] and chosen[i] is None for i in range(len(per))):
        parts.append("some senses were found only out of order")
    if stated_options and score == 0 and not wrong_found:
        parts.append(f"states {', '.join(stated_options)}")
    confident, why = _confidence(puzzle, score, mx, how, chosen, wrong_found or contradicted, stated_options)
    if not confident:
        parts.append(f"rules unsure: {why}")
    return Verdict(score, mx, label, "; ".join(parts), evidence, confident=confident, criteria=met)


def _confidence(puzzle, score, mx, how, chosen, wrong_found, stated_options) -> tuple[bool, str]:
    """Sure: every criterion met, a wrong reading or an option stated, or every missed item's phrase
    found and explained with nothing the rules know. Unsure: nothing found either way, or an item
    the answer may explain without quoting its phrase."""
    if wrong_found or (stated_options and score == 0):
        return True, ""
    if score >= mx - 1e-6:
        return True, ""
    if score == 0 and not any(chosen):
        return False, "the answer meets no criterion and asserts no known wrong reading"
    unlocated = [c.name for c, h in zip(puzzle.criteria, how) if h == "no-anchor"]
    if unlocated:
        return False, f"{len(unlocated)} item(s) whose phrase the answer never quotes"
    if any(m is None and h == "whole" for h, m in zip(how, chosen)):
        return False, "a part the rules could not find"
    return True, ""
