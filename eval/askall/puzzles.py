"""The puzzle file: typed, validated, with errors that name the puzzle and field."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "puzzles.toml"


def _check_regexes(v: list[str]) -> list[str]:
    for p in v:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"pattern {p!r} is not a valid regular expression ({e})") from None
    return v


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    points: float = Field(gt=0, le=1)
    patterns: list[str] = Field(min_length=1)
    unless: list[str] = Field(default_factory=list)

    _re = field_validator("patterns", "unless")(_check_regexes)


class Exclusive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, list[str]] = Field(min_length=2)

    @field_validator("options")
    @classmethod
    def _opts(cls, v):
        for pats in v.values():
            _check_regexes(pats)
        return v


class Puzzle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    question: str = Field(min_length=1)
    reference: str = Field(min_length=1)
    criteria: list[Criterion] = Field(min_length=1)
    exclusive: list[Exclusive] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)
    ordered: bool = False
    min_new_chars: int = Field(default=12, ge=0)

    _re = field_validator("ignore")(_check_regexes)

    @model_validator(mode="after")
    def _points(self):
        total = sum(c.points for c in self.criteria)
        if total > 1.0 + 1e-6:
            raise ValueError(f"criteria points add up to {total:g}; they may add up to 1 at most")
        return self

    @property
    def max_score(self) -> float:
        return round(sum(c.points for c in self.criteria), 6)


class PuzzleFileError(Exception):
    pass


def load_puzzles(path: str | Path | None = None) -> list[Puzzle]:
    path = Path(path or DEFAULT_FILE)
    if not path.exists():
        raise PuzzleFileError(f"{path}: no such puzzle file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PuzzleFileError(f"{path}: not valid TOML ({e})") from None
    raw = data.get("puzzle")
    if not isinstance(raw, list) or not raw:
        raise PuzzleFileError(f"{path}: no [[puzzle]] tables found")
    puzzles, seen = [], set()
    for i, item in enumerate(raw):
        pid = item.get("id", f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
        try:
            p = Puzzle.model_validate(item)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(puzzle)"
            msg = err["msg"].removeprefix("Value error, ")
            raise PuzzleFileError(f"{path}: puzzle '{pid}', field '{field}': {msg}") from None
        if p.id in seen:
            raise PuzzleFileError(f"{path}: puzzle '{p.id}' appears twice; ids must be unique")
        seen.add(p.id)
        puzzles.append(p)
    return puzzles
