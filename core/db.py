"""Database access: connections, the pool, and schema migrations (yoyo, plain SQL files)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import dict_row
from yoyo import get_backend, read_migrations

from agritrace.settings import get_settings

# Every connection returns rows as dicts.
Conn: TypeAlias = psycopg.Connection[dict[str, Any]]

MIGRATIONS = resources.files("agritrace") / "migrations"


def connect(url: str | None = None, *, autocommit: bool = False) -> Conn:
    """Opens one connection (for the CLI and workers), rows as dicts."""
    return psycopg.connect(url or get_settings().database_url, autocommit=autocommit, row_factory=dict_row)


def _yoyo_url(url: str) -> str:
    # yoyo picks its psycopg 3 backend by this scheme.
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


def migrate(url: str | None = None) -> list[str]:
    """Applies pending migrations; returns the ids applied."""
    backend = get_backend(_yoyo_url(url or get_settings().database_url))
    migrations = read_migrations(str(Path(str(MIGRATIONS))))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def pending_migrations(url: str | None = None) -> list[str]:
    """Lists migrations not yet applied."""
    backend = get_backend(_yoyo_url(url or get_settings().database_url))
    return [m.id for m in backend.to_apply(read_migrations(str(Path(str(MIGRATIONS)))))]
