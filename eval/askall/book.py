"""The eval's puzzles and grading as the web UI's Puzzles tab takes them (deploy.webui.puzzles_tab:
PuzzleBook): `python -m deploy webui` hands this in, so the page shows what ask_all asks, graded
the way ask_all grades, without the page importing eval."""
from __future__ import annotations

from eval.askall.grading import Verdict, grade
from eval.askall.puzzles import Puzzle, PuzzleFileError, load_puzzles, puzzle_files


class EvalPuzzleBook:
    def __init__(self, path: str | None = None):
        files = puzzle_files(path)
        try:
            self._puzzles = load_puzzles(path)
            self.source = " and ".join(f"`{f.parent.name}/{f.name}`" for f in files)
        except PuzzleFileError as e:
            self._puzzles = []
            self.source = f"the puzzle files cannot be read: {e}"

    def puzzles(self) -> list[Puzzle]:
        return self._puzzles

    def grade(self, puzzle: Puzzle, answer: str) -> Verdict:
        return grade(puzzle, answer)
