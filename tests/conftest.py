"""Test fixtures: a fresh database per test session (migrated), a clean slate per test, the real broker."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from agritrace import db
from agritrace.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A database of its own for this test run, so runs never see each other's or the demo's data."""
    os.environ.setdefault("AGRITRACE_ENV_FILE", str(REPO / ".local" / "agritrace.env"))
    get_settings.cache_clear()
    name = f"agritrace_test_{secrets.token_hex(4)}"
    url = db.create_database(name)
    os.environ["AGRITRACE_DATABASE_URL"] = url
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    db.drop_database(name)


def _data_tables(conn: db.Conn) -> list[str]:
    rows = conn.execute(
        """SELECT tablename FROM pg_tables
            WHERE schemaname = 'public' AND tablename NOT LIKE '\\_yoyo%' AND tablename NOT LIKE 'yoyo%'"""
    ).fetchall()
    return [str(r["tablename"]) for r in rows]


@pytest.fixture(autouse=True)
def clean_database(database: str) -> Iterator[None]:
    """Each test starts from empty tables (truncation: the API and workers use their own connections)."""
    yield
    with db.connect(database, autocommit=True) as conn:
        tables = _data_tables(conn)
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )


@pytest.fixture
def conn(database: str) -> Iterator[db.Conn]:
    """A connection in autocommit mode, for arranging and checking data."""
    with db.connect(database, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests save things a person may want to look at (screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
