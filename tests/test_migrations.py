"""Migrations are named by number and subject (issue 13): applied files are never renamed, and from
0012 on each has a number of its own, names its subject in lower-case words, and depends on the one
before it, so the order yoyo applies them in is the order of their numbers."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[1] / "core" / "migrations"
# Applied before the rule (issue 13): kept as they are, since renaming an applied file re-runs it.
LEGACY_LAST = 12
NAME = re.compile(r"^(\d{4})\.([a-z0-9]+(?:-[a-z0-9]+)*)\.sql$")


def _numbered() -> list[tuple[int, Path]]:
    return sorted((int(p.name[:4]), p) for p in MIGRATIONS.glob("*.sql"))


def test_every_migration_from_0012_has_its_own_number_and_a_subject() -> None:
    seen: dict[int, str] = {}
    for number, path in _numbered():
        if number < LEGACY_LAST:
            continue
        match = NAME.match(path.name)
        assert match, f"{path.name}: name it NNNN.subject-words.sql"
        assert number not in seen, f"{path.name} repeats number {number:04d} ({seen[number]})"
        seen[number] = path.name


def test_each_new_migration_depends_on_the_one_before() -> None:
    ordered = [p for n, p in _numbered() if n >= LEGACY_LAST]
    for before, after in itertools.pairwise(ordered):
        first = after.read_text().splitlines()[0]
        assert first.startswith("-- depends:"), f"{after.name}: first line must be '-- depends: ...'"
        assert before.stem in first.split(), f"{after.name} does not depend on {before.stem}"


def test_numbers_have_no_gaps() -> None:
    numbers = sorted({n for n, _ in _numbered()})
    assert numbers == list(range(1, numbers[-1] + 1))
