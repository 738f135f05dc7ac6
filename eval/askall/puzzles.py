"""The puzzle file: typed, validated, with errors that name the puzzle and field."""
from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "puzzles.toml"
PUZZLES_D = DEFAULT_FILE.parent / "puzzles.d"  # more puzzle files, added to the default set by name order


def _check_regexes(v: list[str]) -> list[str]:
    for p in v:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"pattern {p!r} is not a valid regular expression ({e})") from None
    return v


class Criterion(BaseModel):
    """One part of the answer. With `anchors`, it is looked for only in the part of the answer
    that speaks about that item (from its anchor to the next item); `generic` words (含义, 保暖)
    count only right after the anchor, in its own sentence or the next."""
    model_config = ConfigDict(extra="forbid")
    name: str
    points: float = Field(gt=0, le=1)
    patterns: list[str] = Field(default_factory=list)
    generic: list[str] = Field(default_factory=list)
    anchors: list[str] = Field(default_factory=list)
    unless: list[str] = Field(default_factory=list)

    _re = field_validator("patterns", "generic", "anchors", "unless")(_check_regexes)

    @model_validator(mode="after")
    def _some_pattern(self):
        if not self.patterns and not self.generic:
            raise ValueError("a criterion needs `patterns` (or `generic` words with `anchors`)")
        if self.generic and not self.anchors:
            raise ValueError("`generic` words need `anchors`: they count only next to the phrase they explain")
        return self


class WrongReading(BaseModel):
    """A reading that contradicts the answer key: asserting it loses the credit of the items it names."""
    model_config = ConfigDict(extra="forbid")
    name: str
    patterns: list[str] = Field(min_length=1)
    cancels: list[str] = Field(default_factory=list, description="criterion names; empty: all of them")

    _re = field_validator("patterns")(_check_regexes)


EXAMPLE_KINDS = ("right", "partial", "wrong", "echo", "hedge")


class Example(BaseModel):
    """A labelled answer: `--check-rules` fails when the rules do not give it this score."""
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description=" / ".join(EXAMPLE_KINDS))
    score: float = Field(ge=0, le=1)
    answer: str = Field(min_length=1)
    note: str = ""

    @field_validator("kind")
    @classmethod
    def _kind(cls, v):
        if v not in EXAMPLE_KINDS:
            raise ValueError(f"kind {v!r} is not one of {', '.join(EXAMPLE_KINDS)}")
        return v


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
    criteria: list[Criterion] = Field(default_factory=list)
    exclusive: list[Exclusive] = Field(default_factory=list)
    wrong: list[WrongReading] = Field(default_factory=list)
    circular: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)
    ordered: bool = False
    min_new_chars: int = Field(default=12, ge=0)
    examples: list[Example] = Field(default_factory=list)

    _re = field_validator("ignore", "circular")(_check_regexes)

    @model_validator(mode="after")
    def _points(self):
        total = sum(c.points for c in self.criteria)
        if total > 1.0 + 1e-6:
            raise ValueError(f"criteria points add up to {total:g}; they may add up to 1 at most")
        names = {c.name for c in self.criteria}
        for w in self.wrong:
            unknown = [n for n in w.cancels if n not in names]
            if unknown:
                raise ValueError(f"wrong reading '{w.name}' cancels {', '.join(map(repr, unknown))}, "
                                 f"which is not a criterion of this puzzle")
        for e in self.examples:
            if e.score > self.max_score + 1e-6:
                raise ValueError(f"an example scores {e.score:g}, above the puzzle's {self.max_score:g} points")
        return self

    @property
    def has_rules(self) -> bool:
        return bool(self.criteria)

    @property
    def max_score(self) -> float:
        """The points the criteria add up to; a puzzle without rules is worth 1 (a judge or a human grades it)."""
        return round(sum(c.points for c in self.criteria), 6) if self.criteria else 1.0

    def warnings(self) -> list[str]:
        if self.criteria and self.max_score < 1 - 1e-6:
            return [f"puzzle '{self.id}': its criteria add up to {self.max_score:g} points, not 1, "
                    f"so a perfect answer scores {self.max_score:g}"]
        return []


def puzzle_files(path: str | Path | None = None, extra_dir: Path = PUZZLES_D) -> list[Path]:
    """The files a run reads: `path` alone, or the default set, eval/puzzles.toml and every
    eval/puzzles.d/*.toml in name order."""
    if path:
        return [Path(path)]
    return [DEFAULT_FILE, *sorted(extra_dir.glob("*.toml"))]


def file_hash(path: str | Path | None = None, extra_dir: Path = PUZZLES_D) -> str:
    """sha256 of the puzzle file(s), recorded in run.json: a report says which rules graded it
    (one file: the file's own sha256)."""
    files = puzzle_files(path, extra_dir)
    if len(files) == 1:
        return hashlib.sha256(files[0].read_bytes()).hexdigest()
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


class PuzzleFileError(Exception):
    pass


def load_puzzles(path: str | Path | None = None, extra_dir: Path = PUZZLES_D) -> list[Puzzle]:
    """The puzzles of `path`, or of the default set (puzzle_files); ids are unique across files."""
    puzzles: list[Puzzle] = []
    where: dict[str, Path] = {}
    for f in puzzle_files(path, extra_dir):
        for p in _load_file(f):
            if p.id in where:
                raise PuzzleFileError(f"{f}: puzzle '{p.id}' appears twice"
                                      + ("" if where[p.id] == f else f" (also in {where[p.id]})")
                                      + "; ids must be unique")
            where[p.id] = f
            puzzles.append(p)
    return puzzles


def _load_file(path: Path) -> list[Puzzle]:
    if not path.exists():
        raise PuzzleFileError(f"{path}: no such puzzle file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PuzzleFileError(f"{path}: not valid TOML ({e})") from None
    raw = data.get("puzzle")
    if not isinstance(raw, list) or not raw:
        raise PuzzleFileError(f"{path}: no [[puzzle]] tables found")
    puzzles = []
    for i, item in enumerate(raw):
        pid = item.get("id", f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
        try:
            puzzles.append(Puzzle.model_validate(item))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(puzzle)"
            msg = err["msg"].removeprefix("Value error, ")
            raise PuzzleFileError(f"{path}: puzzle '{pid}', field '{field}': {msg}") from None
    return puzzles
