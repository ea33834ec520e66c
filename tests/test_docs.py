"""Every `docs/...` path named in the repository exists, and every `#anchor` on a docs page is one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SEARCHED = (
    "README.md",
    "BENCHMARKS.md",
    "Makefile",
    "pyproject.toml",
    "train.py",
    "conf",
    "docs",
    "experiments",
)
SEARCHED += ("mega", "tasks", "tests")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".txt", ""}
DOC_REFERENCE = re.compile(r"docs/([\w./-]*\w\.(?:md|png))(#[\w-]+)?")
MARKDOWN_LINK = re.compile(r"\]\(((?:[\w./-]+\.md)?)(#[\w-]+)?\)")  # relative links inside docs/*.md


def text_files() -> list[Path]:
    files = []
    for name in SEARCHED:
        path = REPO / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [
            f
            for f in candidates
            if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts
        ]
    return files


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors: heading text lower-cased, punctuation but `-` and `_` dropped, spaces as `-`."""
    anchors = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*$", line):
            anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-"))
    return anchors


def references() -> list[tuple[str, Path, str | None]]:
    """(where, target page or file, anchor or None) for every docs reference in the searched files."""
    found = []
    for file in text_files():
        text = file.read_text(encoding="utf-8", errors="replace")
        where = str(file.relative_to(REPO))
        for match in DOC_REFERENCE.finditer(text):
            found.append((where, REPO / "docs" / match.group(1), match.group(2)))
        if file.parent == REPO / "docs" and file.suffix == ".md":
            for match in MARKDOWN_LINK.finditer(text):
                target = file.parent / match.group(1) if match.group(1) else file
                found.append((where, target, match.group(2)))
    return found


def test_the_scan_sees_the_known_references():
    targets = {(where, target.name, anchor) for where, target, anchor in references()}
    assert ("README.md", "recipes.md", None) in targets
    assert ("README.md", "data.md", "#pathfinder") in targets


@pytest.mark.parametrize(
    "where, target, anchor", references(), ids=lambda v: str(v.name) if isinstance(v, Path) else str(v)
)
def test_docs_reference_exists(where: str, target: Path, anchor: str | None):
    assert target.is_file(), f"{where} names {target.relative_to(REPO)}, which does not exist"
    if anchor and target.suffix == ".md":
        anchors = heading_anchors(target)
        assert anchor[1:] in anchors, f"{where} links {target.name}{anchor}; headings give {sorted(anchors)}"


def test_anchor_rule():
    page = REPO / "docs" / "recipes.md"
    assert {"shared-settings", "path-x-on-one-device", "per-task-recipes"} <= heading_anchors(page)
    assert {"pathfinder", "path-x", "speech-commands", "text"} <= heading_anchors(REPO / "docs" / "data.md")
