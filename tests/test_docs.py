"""The docs hold together: every relative link and #anchor in README.md, docs/, bench/README.md and
eval/README.md resolves; every message or docstring in deploy/ and eval/ that points at the docs
names a page and a heading that exist (the convention, in docs/development.md, "The docs": the
page's path, a comma and the heading's text in quotes, on one line); the field table in
docs/configuration.md is the code's own; the README stays short and maps every page; the security
page counts each lock file's advisories as the advisory database does."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO
from deploy.backends.reference import fields_markdown

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).*?\1")
# A pointer from the code to the docs: `docs/memory.md, "More models than memory"` (or 'single quotes').
PAGE = r"(?:docs/[\w.-]+\.md|bench/README\.md|eval/README\.md|README\.md)"
REFERENCE = re.compile(r"(?<![\w/.-])(" + PAGE + r")(?:, (?P<q>[\"'])(?P<section>[^\"'\n]+?)(?P=q))?")
LOOSE = re.compile(r"README|(?<![\w/.-])docs/")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench/README.md",
            REPO / "eval/README.md"]


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def heading_texts(path: Path) -> list[str]:
    """Each heading's text as written, without its # marks and the backticks of code in it."""
    return [m.group(2).replace("`", "") for _, line in prose_lines(path.read_text(encoding="utf-8"))
            if (m := HEADING.match(line))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link targets and emphasis dropped, lower case, punctuation
    other than '-' and '_' removed, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[*`]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in heading_texts(path):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(files: list[Path]) -> list[str]:
    problems = []
    for doc in files:
        for n, line in prose_lines(doc.read_text(encoding="utf-8")):
            for target in LINK.findall(CODE_SPAN.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                    continue
                where = f"{doc.relative_to(REPO)}:{n}: ({target})"
                path, _, anchor = target.partition("#")
                dest = (doc.parent / path).resolve() if path else doc
                if not dest.exists():
                    problems.append(f"{where}: no file {dest}")
                elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                    problems.append(f"{where}: no heading with the anchor #{anchor} in {dest.relative_to(REPO)}")
    return problems


def code_files() -> list[Path]:
    return [REPO / "model_paths.toml"] + sorted(
        p for root in ("deploy", "eval") for p in (REPO / root).rglob("*")
        if p.suffix in (".py", ".toml", ".html") and "__pycache__" not in p.parts)


def broken_references(files: list[Path]) -> list[str]:
    problems = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{f.relative_to(REPO)}:{n}"
            covered = []
            for m in REFERENCE.finditer(line):
                covered.append(m.span())
                page, section = REPO / m.group(1), m.group("section")
                if not page.exists():
                    problems.append(f"{where}: {m.group(1)} does not exist")
                elif section is None:
                    problems.append(f"{where}: {m.group(1)} is named without a section: write "
                                    f'{m.group(1)}, "Heading"')
                elif section not in heading_texts(page):
                    problems.append(f"{where}: {m.group(1)} has no heading {section!r}")
            for m in LOOSE.finditer(line):
                if not any(a <= m.start() < b for a, b in covered):
                    problems.append(f"{where}: {line.strip()[:100]!r} points at the docs without the convention "
                                    f'(docs/PAGE.md, "Heading")')
    return problems


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    assert broken_links(doc_files()) == []


def test_every_pointer_from_the_code_to_the_docs_names_a_page_and_a_heading_that_exist():
    files = code_files()
    assert any("docs/memory.md" in f.read_text(encoding="utf-8") for f in files)  # the scan sees the messages
    assert broken_references(files) == []


def test_configuration_documents_every_registry_field():
    """The table is exactly `python -m deploy reference` (deploy.backends.reference.fields_markdown)."""
    assert fields_markdown() in (REPO / "docs/configuration.md").read_text(encoding="utf-8")


def test_the_readme_is_short_and_maps_every_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    linked = {(REPO / t.partition("#")[0]).resolve() for _, line in prose_lines(readme)
              for t in LINK.findall(CODE_SPAN.sub("", line)) if not re.match(r"^[a-z]+:", t)}
    for page in doc_files()[1:]:
        if page.suffix == ".md":
            assert page.resolve() in linked, f"README.md does not link to {page.relative_to(REPO)}"


def test_github_anchors():
    assert slug("Comparing the models: `eval/ask_all.py`") == "comparing-the-models-evalask_allpy"
    assert slug("The layers of deploy/") == "the-layers-of-deploy"
    assert slug("bf16 on transformers, beside Q4_K_M") == "bf16-on-transformers-beside-q4_k_m"
    assert slug("A GPU host running vLLM") == "a-gpu-host-running-vllm"


def test_the_checks_find_a_broken_link_anchor_page_and_heading():
    """The two checks above, on a page and a code file with one fault of each kind (the checks must
    not pass by finding nothing)."""
    with tempfile.TemporaryDirectory(dir=REPO) as folder:
        page, code = Path(folder) / "page.md", Path(folder) / "code.py"
        page.write_text("# A page\n\n[fine](#a-page) [gone](nowhere.md) [no anchor](../docs/api.md#no-such-heading)\n"
                        "```\n[in code](ignored.md)\n```\n", encoding="utf-8")
        code.write_text('A = "see docs/api.md, \'Routes\'"\nB = "see docs/api.md, \'No such heading\'"\n'
                        'C = "see docs/gone.md, \'Routes\'"\nD = "see docs/api.md"\nE = "read the README"\n',
                        encoding="utf-8")
        links = broken_links([page])
        refs = broken_references([code])
    assert len(links) == 2 and "no file" in links[0] and "no heading with the anchor #no-such-heading" in links[1]
    assert [r.split(": ", 1)[0].rsplit(":", 1)[1] for r in refs] == ["2", "3", "4", "5"], refs
    assert "has no heading 'No such heading'" in refs[0] and "does not exist" in refs[1]
    assert "without a section" in refs[2] and "without the convention" in refs[3]


LOCKS = {"requirements.lock": "The main environment", "runtimes/transformers-4.41.lock": "The old runtime",
         "deploy/provision/converter.lock": "The converter"}


def test_the_security_page_counts_the_advisories_of_every_lock_file():
    """Each lock file's advisories, as the PyPA database snapshot counts them (../shared/advisories,
    or FLEET_ADVISORIES=DIR), are the number docs/security.md gives under that environment's heading."""
    check = Path(os.environ.get("FLEET_ADVISORIES", REPO.parent / "shared" / "advisories")) / "check_lock.py"
    if not check.exists():
        pytest.skip(f"no advisory database snapshot: {check} is missing (set FLEET_ADVISORIES=DIR)")
    headings = heading_texts(REPO / "docs/security.md")
    for lock, name in LOCKS.items():
        out = subprocess.run([sys.executable, str(check), lock], cwd=REPO, capture_output=True, text=True).stdout
        counted = re.search(r"^(\d+) known advisories affect", out, re.MULTILINE)
        assert counted, out[-500:]
        said = [h for h in headings if h.startswith(name + ":")]
        assert said and said[0].startswith(f"{name}: {counted.group(1)} advisories"), (lock, counted.group(0), said)
