"""docs/architecture.md names only what exists: every repository path it gives in backticks, and every
`path: name` it points at, so a newcomer following it never looks for a file that is not there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
TOP = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")}
# `folder/…` or `folder/file.ext`, optionally `: name` (a function, class or constant in that file).
SPAN = re.compile(r"`([a-z_]+/[\w./-]*)(?::\s*([A-Za-z_][\w.]*))?`")
LINK = re.compile(r"\]\(([^)#]+)\)")


def named_paths(text: str) -> list[tuple[str, str | None]]:
    return [(m[1], m[2]) for m in SPAN.finditer(text) if m[1].split("/")[0] in TOP]


def test_the_architecture_doc_names_the_path_of_a_reading_by_file() -> None:
    paths = {p for p, _ in named_paths(DOC.read_text())}
    for stage in ("ingest/worker.py", "ingest/store.py", "coldchain/evaluator.py", "trace/page.py"):
        assert stage in paths


def test_every_path_the_architecture_doc_names_exists() -> None:
    text = DOC.read_text()
    missing = [p for p, _ in named_paths(text) if not (REPO / p).exists()]
    assert missing == []
    unknown = [
        f"{p}: {name}"
        for p, name in named_paths(text)
        if name and name.split(".")[0] not in (REPO / p).read_text()
    ]
    assert unknown == []
    links = [link for link in LINK.findall(text) if "://" not in link]
    assert [link for link in links if not (DOC.parent / link).resolve().is_relative_to(REPO)] == []
    assert [link for link in links if not (DOC.parent / link).exists()] == []


def test_a_name_that_does_not_exist_is_caught() -> None:
    assert named_paths("see `trace/lineage.py` and `ingest/worker.py: Worker`") == [
        ("trace/lineage.py", None),
        ("ingest/worker.py", "Worker"),
    ]
    assert not (REPO / "trace/lineage.py").exists()
