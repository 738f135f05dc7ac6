"""Votes: logged durably in FastChat's own conversation-log format, and rated with FastChat's
monitor code (Bradley–Terry fit with bootstrap confidence intervals, pairwise wins), per category
of question. A model gets a rating only from MIN_BATTLES battles on; a battle in which a model
named itself is left out (its voter knew who it was), and counted as left out.

A log line is what FastChat's arena writes (`{"tstamp", "type", "models", "states", "ip"}`,
in `YYYY-MM-DD-conv.json` files), so `fastchat.serve.monitor` tools read these files too.
FastChat's `clean_battle_data` is not used for the leaderboard: it drops any battle whose text
mentions e.g. "alibaba" or "chatglm" (identity leaks on LMSYS's public arena), which would drop
every Qwen answer that introduces itself.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

# FastChat's vote types: (button label, winner as FastChat's monitor code names it)
VOTES = {"leftvote": ("A is better", "model_a"), "rightvote": ("B is better", "model_b"),
         "tievote": ("Tie", "tie"), "bothbad_vote": ("Both are bad", "tie (bothbad)")}


def state_dict(conv, conv_id: str, model_name: str) -> dict:
    """FastChat's gradio State.dict(): the conversation plus its id and model."""
    d = conv.dict()
    d.update({"conv_id": conv_id, "model_name": model_name})
    return d


PAIRS_CORNER = "model \\ beat →"  # the pairwise table's top-left cell
MIN_BATTLES = 5  # a model's battles before it gets a rating: with fewer, a fit says more about luck

# The categories a question falls in, each with its own board ("all" is every battle).
CATEGORIES = ("all", "chinese", "code", "other")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CODE = re.compile(r"```|\b(def|class|function|return|import|SELECT|printf|console\.log)\b|[{};]\s*$|=>|"
                   r"\b(python|javascript|java|c\+\+|sql|bash|regex|code)\b|代码|编程|函数", re.I | re.M)
# Who a model is, as it may name itself: a family (found in the model's registry name) and its names.
FAMILIES = {"qwen": ("qwen", "通义", "千问", "alibaba", "阿里"), "chatglm": ("chatglm", "智谱", "zhipu"),
            "glm": ("glm", "智谱", "zhipu"), "deepseek": ("deepseek", "深度求索"),
            "smollm": ("smollm", "hugging face", "huggingface"), "llama": ("llama", "meta ai"),
            "mistral": ("mistral",), "gemma": ("gemma", "google"), "phi": ("phi-", "microsoft"),
            "yi": ("01.ai", "零一万物"), "baichuan": ("baichuan", "百川"), "internlm": ("internlm", "书生")}


def category(question: str) -> str:
    """Code when the question asks for or shows code; else Chinese when it is written in Chinese."""
    if _CODE.search(question):
        return "code"
    return "chinese" if _CJK.search(question) else "other"


def names_itself(model: str, answers: str) -> bool:
    """Whether a model's answers say who it is (its family's names, or its registry name)."""
    low, name = answers.lower(), model.lower()
    if name in low:
        return True
    tokens = re.split(r"[^a-z0-9]+", name)
    families = [f for f in FAMILIES if any(t.startswith(f) for t in tokens)]  # an R1 distill of Qwen: both
    return any(word in low for f in families for word in FAMILIES[f])


@dataclass
class Leaderboard:
    ratings: list[dict]       # model, rating (BT; None below MIN_BATTLES), ci_low, ci_high, battles, wins
    pairwise: list[list]      # header row + one row per model: "share (wins/decided battles)" of row vs column
    n_votes: int              # anonymous battle votes ranked (self-naming ones left out)
    n_named: int = 0          # side-by-side votes (names shown): kept in the log, not ranked
    intervals: bool = True    # False: the bootstrap intervals are still being computed (ci_* None)
    n_discarded: int = 0      # anonymous votes left out because a model named itself in its answers
    category: str = "all"

    @property
    def rated(self) -> bool:
        """At least one model has enough battles for a rating."""
        return any(r["rating"] is not None for r in self.ratings)


class VoteLog:
    def __init__(self, folder: Path, bootstrap_rounds: int = 200):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rounds = bootstrap_rounds
        self._lock = threading.Lock()
        # per category: one bootstrap at a time, and the last board with the log's signature it came from
        # (a category's board never waits behind another's)
        self._computing = {c: threading.Lock() for c in CATEGORIES}
        self._cache: dict[str, tuple[tuple, Leaderboard]] = {}

    def _file(self) -> Path:
        return self.folder / f"{datetime.date.today():%Y-%m-%d}-conv.json"

    def record(self, vote_type: str, models: list[str], states: list[dict], ip: str, anony: bool,
               best_of: int | None = None) -> dict:
        """One line of FastChat's log; `best_of`: one of the pairwise outcomes a vote among that
        many panes was recorded as (a field FastChat's readers leave alone)."""
        if vote_type not in VOTES:
            raise ValueError(f"unknown vote {vote_type}")
        row = {"tstamp": round(datetime.datetime.now().timestamp(), 4), "type": vote_type,
               "models": ["", ""] if anony else list(models), "states": states, "ip": ip}
        if best_of:
            row["best_of"] = best_of
        with self._lock, open(self._file(), "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return row

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*-conv.json"))

    def battles(self) -> list[dict]:
        out = []
        for path in self.files():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("type") not in VOTES:
                    continue
                names = [s.get("model_name") for s in row["states"]] if row["models"][0] == "" else row["models"]
                if None in names or "" in names or names[0] == names[1]:
                    continue
                said = [_said(s) for s in row["states"]]
                out.append({"model_a": names[0], "model_b": names[1], "winner": VOTES[row["type"]][1],
                            "anony": row["models"][0] == "", "tstamp": row["tstamp"],
                            "category": category(_asked(row["states"][0])),
                            "named_itself": any(names_itself(m, t) for m, t in zip(names, said))})
        return out

    def _signature(self) -> tuple:
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.files())

    def leaderboard(self, wait: bool = True, category: str = "all") -> Leaderboard:
        """One category's board, recomputed only when a log file changed. The bootstrap intervals
        take seconds (a fit per round); with wait=False a changed log gives at once the ratings,
        counts and pairwise table with `intervals` False, so a new vote shows the moment the tab opens."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}: one of {', '.join(CATEGORIES)}")
        cached = self._cache.get(category)
        if cached and cached[0] == self._signature():
            return cached[1]
        pick = lambda bs: [b for b in bs if category == "all" or b["category"] == category]  # noqa: E731
        if not wait:
            return self._compute(pick(self.battles()), rounds=0, category=category)
        with self._computing[category]:  # one bootstrap at a time; a second caller finds it cached
            sig = self._signature()
            cached = self._cache.get(category)
            if cached and cached[0] == sig:
                return cached[1]
            lb = self._compute(pick(self.battles()), self.rounds, category=category)
            self._cache[category] = (sig, lb)
            return lb

    def warm(self) -> None:
        """Start computing the leaderboard now (at start, after a vote), so the tab finds it ready.
        FastChat's rating code takes seconds to import (pandas, plotly, scikit-learn): that was the
        first vote's wait for the leaderboard."""
        def run():
            from fastchat.serve.monitor.elo_analysis import compute_elo  # noqa: F401
            from sklearn.linear_model import LogisticRegression  # noqa: F401  (imported by FastChat's BT fit)
            self.leaderboard()
        threading.Thread(target=run, daemon=True, name="leaderboard").start()

    def _compute(self, battles: list[dict], rounds: int, category: str = "all") -> Leaderboard:
        import numpy as np
        import pandas as pd
        from fastchat.serve.monitor.elo_analysis import compute_elo_mle_with_tie

        # As Chatbot Arena: only votes cast before the names were shown are ranked (brand bias), and
        # not those where a model said who it was
        n_named = sum(not b["anony"] for b in battles)
        n_discarded = sum(b["anony"] and b["named_itself"] for b in battles)
        battles = [b for b in battles if b["anony"] and not b["named_itself"]]
        if not battles:
            return Leaderboard([], [], 0, n_named, n_discarded=n_discarded, category=category)
        df = pd.DataFrame(battles)
        models = sorted(set(df.model_a) | set(df.model_b))
        bt = _safe_bt(compute_elo_mle_with_tie, df, models)
        rng = np.random.default_rng(0)
        samples = []
        for _ in range(rounds):
            sample = df.iloc[rng.integers(0, len(df), len(df))].reset_index(drop=True)
            samples.append(_safe_bt(compute_elo_mle_with_tie, sample, models))
        boot = pd.DataFrame(samples)[models] if samples else None
        ratings = []
        for m in models:
            mine = df[(df.model_a == m) | (df.model_b == m)]
            wins = int(((df.model_a == m) & (df.winner == "model_a")).sum() + ((df.model_b == m) & (df.winner == "model_b")).sum())
            enough = len(mine) >= MIN_BATTLES
            ratings.append({"model": m, "rating": round(float(bt[m]), 1) if enough else None,
                            "ci_low": None if boot is None or not enough else round(float(boot[m].quantile(0.025)), 1),
                            "ci_high": None if boot is None or not enough else round(float(boot[m].quantile(0.975)), 1),
                            "battles": int(len(mine)), "wins": wins})
        ratings.sort(key=lambda r: (r["rating"] is None, -(r["rating"] or 0), -r["battles"], r["model"]))
        order = [r["model"] for r in ratings]
        pairwise = [[PAIRS_CORNER] + order] + [[a] + [_pairwise_cell(battles, a, b) for b in order] for a in order]
        return Leaderboard(ratings, pairwise, len(df), n_named, intervals=boot is not None, n_discarded=n_discarded,
                           category=category)


def _pairwise_cell(battles: list[dict], a: str, b: str) -> str:
    """Share of the decided a-b battles (ties left out) that a won, with the counts: FastChat's
    compute_pairwise_win_fraction gives NaN for most pairs of sparse data, so every cell was "–"."""
    if a == b:
        return "–"
    wins = games = 0
    for x in battles:
        if {x["model_a"], x["model_b"]} != {a, b} or x["winner"] not in ("model_a", "model_b"):
            continue
        games += 1
        wins += x[x["winner"]] == a
    return f"{wins / games:.2f} ({wins}/{games})" if games else "–"


def _safe_bt(fit, df, models) -> dict:
    """FastChat's BT fit needs both outcomes in the data; with too few votes, everyone stays at 1000."""
    try:
        s = fit(df)
        return {m: float(s.get(m, 1000.0)) for m in models}
    except ValueError:
        return {m: 1000.0 for m in models}


def _turns(state: dict) -> list:
    return state.get("messages", [])[state.get("offset", 0):]


def _asked(state: dict) -> str:
    """The battle's first question (what its category is judged by)."""
    return next((m[1] for m in _turns(state) if m[1]), "") or ""


def _said(state: dict) -> str:
    """Everything the model answered in the battle."""
    return "\n".join(m[1] or "" for k, m in enumerate(_turns(state)) if k % 2 == 1)
