"""The docs name only what exists: every repo path in README.md, ARCHITECTURE.md, BENCHMARKS.md
and docs/**/*.md, and every relative link in them. Plain text reading, no project imports."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / n for n in ("README.md", "ARCHITECTURE.md", "BENCHMARKS.md")] + sorted(
    (REPO / "docs").rglob("*.md")
)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ROOT_FILE = re.compile(r"[A-Z][A-Z_]*\.md|Makefile|[\w-]+\.toml")
"""Bare names (no folder) that stand for a file at the root: `README.md`, `pyproject.toml`.
Other bare names (`config.py` in a module's row, `latency.png` in a results folder) are
relative to the text around them and not checked."""
PLACEHOLDER = re.compile(r"[<>*$]")
"""`artifacts/models/<version>`, globs, `$PWD/...`: a pattern, not one path."""
EXTENSIONS = {"py", "md", "proto", "yaml", "yml", "toml", "png", "sh", "json", "txt"}
IGNORED = [
    line.strip().rstrip("/")
    for line in (REPO / ".gitignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def _generated(path: str) -> bool:
    """Whether `.gitignore` keeps ``path`` out of the tree (made at run time: `.venv/`,
    `.state/`, `artifacts/`, the gRPC stubs, results folders)."""
    path = path.rstrip("/")
    return any(
        fnmatch.fnmatch(path, pattern) or any(fnmatch.fnmatch(p, pattern) for p in path.split("/"))
        for pattern in IGNORED
    )


TOP = {p.name for p in REPO.iterdir() if p.is_dir() and p.name != ".git" and not _generated(p.name)}


def _words(text: str) -> Iterator[str]:
    """The words of fenced blocks (diagrams, shell) and of code spans, where paths are named."""
    for block in FENCE.findall(text):
        yield from block.split()
    for span in CODE_SPAN.findall(FENCE.sub("", text)):
        yield from span.split()


def _repo_path(word: str) -> str | None:
    """The repo path ``word`` names, or None if it names none.

    Args:
        word: One word of a doc, e.g. ``(serving/recommender.py:Recommender),``.

    Returns:
        The path without punctuation around it or a ``:...`` suffix, when it starts with a
        top-level folder of the repo or is a root file, and is not generated or a pattern.
    """
    word = word.lstrip("([{'\"").rstrip(")]}'\",;.").split(":")[0]
    if not word or PLACEHOLDER.search(word) or _generated(word):
        return None
    if "/" in word:
        return word if word.split("/")[0] in TOP else None
    return word if ROOT_FILE.fullmatch(word) else None


def _exists(path: str) -> bool:
    """Whether ``path`` is a file or folder, or names a module's attribute
    (``serving/stack.start_stack``: ``serving/stack.py`` mentions ``start_stack``)."""
    if (REPO / path).exists():
        return True
    folder, _, name = path.rstrip("/").rpartition("/")
    module, _, attribute = name.partition(".")
    source = REPO / folder / f"{module}.py"
    if not attribute or attribute in EXTENSIONS or not source.is_file():
        return False
    return re.search(rf"\b{re.escape(attribute.split('.')[0])}\b", source.read_text()) is not None


def test_every_repo_path_the_docs_name_exists() -> None:
    missing = [
        f"{doc.relative_to(REPO)}: {path}"
        for doc in DOCS
        for path in filter(None, map(_repo_path, _words(doc.read_text())))
        if not _exists(path)
    ]
    assert not missing, "docs name paths that do not exist:\n" + "\n".join(missing)


def test_every_relative_link_resolves() -> None:
    broken = [
        f"{doc.relative_to(REPO)}: {target}"
        for doc in DOCS
        for target in LINK.findall(FENCE.sub("", doc.read_text()))
        if not re.match(r"[a-z]+:|#", target) and not (doc.parent / target.split("#")[0]).exists()
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_docs_are_found() -> None:
    names = {d.relative_to(REPO).as_posix() for d in DOCS}
    assert {"docs/serving.md", "docs/operations.md", "docs/benchmarks/quality.md"} <= names
