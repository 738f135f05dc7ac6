"""A conversation or a battle as a file to keep (Markdown, JSON) and as a result to share (a short
Markdown text to paste anywhere; nothing is uploaded: the page never talks to the outside)."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from deploy.webui.arena import Battle, Side
from deploy.webui.votes import VOTES


CUT_OFF = "cut off at the most new tokens"  # an answer's "incomplete" when it stopped at max tokens


def turns(side: Side, hidden: bool = False) -> list[dict]:
    """(question, reasoning, answer, who answered, speed) per turn, from the conversation itself
    (the answer the model is handed back; a thinking model's trace apart from it). `hidden`: a
    battle before its vote, where nothing may name a model (a thinking style can)."""
    msgs = side.conv.messages[side.conv.offset:] if side.conv is not None else []
    out = []
    for k in range(0, len(msgs) - 1, 2):
        i = k // 2
        sp = side.speeds[i] if i < len(side.speeds) else None
        model, system = side.turn_models[i] if i < len(side.turn_models) else (side.model, "")
        trace = side.traces[i] if i < len(side.traces) else None
        answering = msgs[k + 1][1] is None  # exported while it streams: what it said so far, marked
        out.append({"user": msgs[k][1], "reasoning": None if hidden or trace is None else trace.text,
                    "reasoning_tokens": None if hidden or trace is None else trace.tokens,
                    "assistant": (side.answers[i] if answering and i < len(side.answers) else msgs[k + 1][1]) or "",
                    "incomplete": "still answering" if answering else
                    CUT_OFF if i < len(side.cut) and side.cut[i] else None,
                    "model": None if hidden else model, "system": None if hidden else system,
                    "speed": None if hidden or sp is None or sp.ttft is None else
                    {"ttft_s": round(sp.ttft, 3), "tokens": sp.tokens,
                     "tokens_per_s": None if sp.tps is None else round(sp.tps, 2),
                     "prompt_tokens": sp.prompt_tokens, "cached_tokens": sp.cached_tokens}})
    return out


def _system(side: Side, settings: dict, hidden: bool) -> str:
    """The system prompt: the user's own, or (names shown) the model's template default, which
    can name the model ("You are Qwen...")."""
    if hidden:
        return settings.get("system_prompt") or ""
    return side.conv.system_message if side.conv is not None else ""


def as_json(sides: list[Side], labels: list[str], settings: dict, vote: str | None = None, hidden: bool = False) -> str:
    return json.dumps({"exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "vote": vote,
                       "conversations": [{"label": lab, "model": None if hidden else s.model,
                                          "system": _system(s, settings, hidden),
                                          "turns": turns(s, hidden)} for s, lab in zip(sides, labels)]},
                      ensure_ascii=False, indent=2)


def as_markdown(sides: list[Side], labels: list[str], settings: dict, vote: str | None = None,
                hidden: bool = False) -> str:
    out = [f"# Conversation, exported {time.strftime('%Y-%m-%d %H:%M')}", "",
           "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items() if v not in (None, "")), ""]
    if vote:
        out += [f"Vote: **{vote}**", ""]
    for s, lab in zip(sides, labels):
        models = list(dict.fromkeys(m for m, _ in s.turn_models))  # in the order they answered
        named = not hidden and s.model and s.model != lab and len(models) <= 1
        title = " → ".join(models) if len(models) > 1 and not hidden else lab + (f" ({s.model})" if named else "")
        out += [f"## {title}", ""]
        system = _system(s, settings, hidden)
        if system and len(models) <= 1:
            out += [f"*System:* {system}", ""]
        shown_system = system
        for t in turns(s, hidden):
            who = lab if hidden or named or not t["model"] else t["model"]
            if not hidden and len(models) > 1 and t["system"] and t["system"] != shown_system:
                out += [f"*System ({t['model']}):* {t['system']}", ""]
                shown_system = t["system"]
            out += [f"**User:** {t['user']}", ""]
            if t["reasoning"]:
                out += [f"<details><summary>{who} thought ({t['reasoning_tokens']} tokens)</summary>", "",
                        t["reasoning"], "", "</details>", ""]
            out += [f"**{who}:** {t['assistant']}", ""]
            if t["incomplete"]:
                out += [f"*(incomplete: {t['incomplete']})*", ""]
            if t["speed"]:
                sp = t["speed"]
                out += [f"*{sp['ttft_s']} s to first token, {sp['tokens']} tokens"
                        + (f", {sp['tokens_per_s']} tok/s*" if sp["tokens_per_s"] else "*"), ""]
    return "\n".join(out)


def share_text(battle: Battle, vote_type: str) -> str:
    """A battle's result in a few lines: the question, who fought, who won, how fast."""
    a, b = battle.sides
    verdict = {"leftvote": f"{a.model} won", "rightvote": f"{b.model} won", "tievote": "a tie",
               "bothbad_vote": "both answers were bad"}[vote_type]
    speed = []
    for s in (a, b):
        sp = s.speeds[-1] if s.speeds else None
        if sp and sp.tps:
            speed.append(f"{s.model} {sp.tps:.1f} tok/s")
    q = battle.question if len(battle.question) <= 120 else battle.question[:117] + "…"
    return (f"Anonymous battle on fastchat-fleet: {a.model} vs {b.model}: {verdict} "
            f"(my vote: {VOTES[vote_type][0]}).\n\nQuestion: {q}" + (f"\n\nSpeed: {', '.join(speed)}" if speed else ""))


def write_file(text: str, stem: str, suffix: str) -> str:
    """A temporary file for the download; Gradio serves it from its cache to this page only."""
    d = Path(tempfile.mkdtemp(prefix="fleet-export-"))
    path = d / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
    path.write_text(text, encoding="utf-8")
    return str(path)
