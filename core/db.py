"""Database access: connections, the pool, and schema migrations (yoyo, plain SQL files)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import psycopg
from psycopg import sql
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


# --- scratch databases (tests, benchmarks) ---------------------------------------------------------
def admin_url(url: str | None = None) -> str:
    """Where to CREATE/DROP DATABASE: AGRITRACE_DATABASE_ADMIN_URL, else the server's `postgres`."""
    base = (url or get_settings().database_url).rsplit("/", 1)[0]
    return os.environ.get("AGRITRACE_DATABASE_ADMIN_URL") or base + "/postgres"


def create_database(name: str) -> str:
    """Creates and migrates database `name` beside the configured one (from template1, which has
    TimescaleDB); returns its URL."""
    admin = admin_url()
    # CREATE DATABASE fails while another session copies or uses template1 (a parallel test run or
    # benchmark creating its own database): wait and try again.
    for attempt in range(30):
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template1").format(sql.Identifier(name)))
            break
        except psycopg.errors.ObjectInUse:
            if attempt == 29:
                raise
            time.sleep(0.5)
    url = get_settings().database_url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    return url


def drop_database(name: str) -> None:
    """DROP DATABASE … WITH (FORCE), retried for half a minute: FORCE may not end a TimescaleDB
    background job's session in the database (it answers InsufficientPrivilege), and such jobs are
    short."""
    for attempt in range(30):
        try:
            with psycopg.connect(admin_url(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if attempt == 29:
                raise
            time.sleep(1.0)


@contextmanager
def scratch_database(name: str, *, keep: bool = False) -> Iterator[str]:
    """A migrated database of its own for a test run or benchmark; dropped at the end unless `keep`."""
    try:
        yield create_database(name)
    finally:
        if not keep:
            drop_database(name)
