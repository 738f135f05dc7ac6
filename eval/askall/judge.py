"""An optional model judge: any registered model, or any OpenAI-compatible endpoint."""
from __future__ import annotations

import json
import re

from eval.askall.grading import Verdict, label_for
from eval.askall.puzzles import Puzzle

PROMPT = """You grade answers to a Chinese language puzzle against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Give partial credit for the parts of the reference the answer gets right. An answer that only
repeats the question, or states several contradictory answers so as to be safe, scores 0.
Reply with one line of JSON and nothing else: {{"score": <a number from 0 to 1>, "reason": "<one sentence>"}}"""


def parse_reply(text: str) -> tuple[float, str]:
    m = re.search(r"\{.*?\}", text or "", flags=re.S)
    if not m:
        raise ValueError(f"no JSON object in the judge's reply: {text[:200]!r}")
    obj = json.loads(m.group(0))
    score = float(obj["score"])
    if not 0 <= score <= 1:
        raise ValueError(f"judge score {score} is outside 0..1")
    return score, str(obj.get("reason", ""))


def judge(client, model: str, puzzle: Puzzle, answer: str, max_tokens: int = 256) -> Verdict:
    mx = puzzle.max_score
    try:
        r = client.chat.completions.create(
            model=model, temperature=0, max_tokens=max_tokens,
            messages=[{"role": "user", "content": PROMPT.format(question=puzzle.question,
                                                                reference=puzzle.reference, answer=answer)}])
        score, reason = parse_reply(r.choices[0].message.content)
    except Exception as e:
        return Verdict(0.0, mx, "error", f"judge {model} gave no usable verdict: {type(e).__name__}: {e}",
                       source=f"judge:{model}")
    score = round(score * mx, 4)
    return Verdict(score, mx, label_for(score, mx), f"judge {model}: {reason}", source=f"judge:{model}")
