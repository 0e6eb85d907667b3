"""Database access: connections, the pool, and schema migrations (yoyo, plain SQL files)."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

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


def cli_connect(url: str | None = None, *, autocommit: bool = False) -> Conn:
    """The connection every CLI command uses: whatever it changes, in any of its transactions, the
    audit trail records as `cli:<operator's login>` (a session-level actor; a request's own
    transaction-local actor would be lost at the first commit)."""
    conn = connect(url, autocommit=autocommit)
    conn.execute("SELECT set_config('agritrace.actor', %s, false)", (f"cli:{getpass.getuser()}",))
    if not autocommit:
        conn.commit()
    return conn


def _replace(
    url: str, *, user: str | None = None, password: str | None = None, dbname: str | None = None
) -> str:
    """The same connection URL with another role and/or database."""
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    old_user, _, old_password = userinfo.partition(":")
    user = quote(user, safe="") if user is not None else old_user
    password = quote(password, safe="") if password is not None else old_password
    auth = user + (f":{password}" if password else "")
    path = "/" + dbname if dbname is not None else parts.path
    return urlunsplit((parts.scheme, f"{auth}@{host}" if auth else host, path, parts.query, parts.fragment))


def with_database(url: str, name: str) -> str:
    """The same server and role, another database."""
    return _replace(url, dbname=name)


def owner_url(url: str | None = None) -> str:
    """The owner role's URL for the same server and database as `url` (default: the application's)."""
    s = get_settings()
    url = url or s.database_url
    if s.database_owner_password is None:
        return url
    return _replace(url, user=s.database_owner_user, password=s.database_owner_password.get_secret_value())


def _yoyo_url(url: str) -> str:
    # yoyo picks its psycopg 3 backend by this scheme.
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


def migrate(url: str | None = None) -> list[str]:
    """Applies pending migrations as the owner role; returns the ids applied."""
    backend = get_backend(_yoyo_url(owner_url(url)))
    migrations = read_migrations(str(Path(str(MIGRATIONS))))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


# --- scratch databases (tests, benchmarks) ---------------------------------------------------------
def admin_url(url: str | None = None) -> str:
    """Where to CREATE/DROP DATABASE: the owner role (CREATEDB) on the server's `postgres` database."""
    return with_database(owner_url(url), "postgres")


def create_database(name: str) -> str:
    """Creates and migrates database `name` beside the configured one (from template1, which has
    TimescaleDB); returns the application's URL for it (`owner_url` gives the owner's)."""
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
    url = with_database(get_settings().database_url, name)
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
