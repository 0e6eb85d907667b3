"""The application's database login, tried as an attacker with its password (or an SQL injection)
would: it reads and writes rows, and can do nothing that changes the schema, the roles or the
server (issue 12, item 3: a role with CREATEROLE granted itself pg_execute_server_program and ran
`COPY ... FROM PROGRAM` as the server's OS user)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors

from agritrace import db

DENIED = (errors.InsufficientPrivilege,)


@pytest.fixture
def app(database: str) -> Iterator[db.Conn]:
    """A connection as the application's login (agritrace_app), autocommit."""
    with db.connect(database, autocommit=True) as c:
        yield c


def test_the_application_login_is_not_the_owner_and_has_no_role_powers(app: db.Conn) -> None:
    me = app.execute(
        "SELECT current_user AS name, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
        "  FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert me is not None
    assert me["name"] == "agritrace_app"
    assert not any(
        me[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
    )
    owned = app.execute(
        "SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relowner = current_user::regrole AND n.nspname NOT LIKE 'pg_temp%'"
    ).fetchone()
    assert owned == {"n": 0}
    # Nor is it a member of any role that could give it more.
    members = app.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " WHERE m.member = current_user::regrole"
    ).fetchall()
    assert members == []


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE ROLE intruder LOGIN PASSWORD 'x'",
        "GRANT pg_execute_server_program TO agritrace_app",
        "GRANT pg_read_server_files TO agritrace_app",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "CREATE TEMP TABLE shell (line text); COPY shell FROM PROGRAM 'id'",
        "ALTER ROLE agritrace_app CREATEROLE",
    ],
)
def test_the_application_login_cannot_reach_the_server_or_make_roles(app: db.Conn, statement: str) -> None:
    with pytest.raises(DENIED):
        app.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE batches ADD COLUMN backdoor text",
        "DROP TABLE readings",
        "TRUNCATE readings",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "ALTER TABLE cooperatives DISABLE TRIGGER audit",
        "CREATE TABLE public.planted (x int)",
        "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SELECT drop_chunks('readings', older_than => now())",
    ],
)
def test_the_application_login_cannot_change_the_schema(app: db.Conn, statement: str) -> None:
    with pytest.raises(DENIED):
        app.execute(statement)


def test_a_grant_by_the_application_login_grants_nothing(app: db.Conn, conn: db.Conn) -> None:
    before = conn.execute("SELECT relacl::text FROM pg_class WHERE relname = 'api_tokens'").fetchone()
    app.execute("GRANT SELECT ON api_tokens TO PUBLIC")  # PostgreSQL only warns: not the owner
    after = conn.execute("SELECT relacl::text FROM pg_class WHERE relname = 'api_tokens'").fetchone()
    assert before == after


def test_the_audit_log_is_append_only_for_the_application(app: db.Conn) -> None:
    app.execute("INSERT INTO cooperatives (name) VALUES ('审计合作社')")  # audited through the trigger
    entry = app.execute("SELECT id, actor FROM audit_log WHERE table_name = 'cooperatives'").fetchone()
    assert entry is not None and entry["actor"] == "db:agritrace_app"
    for statement in (
        "UPDATE audit_log SET actor = 'regulator' WHERE id = %s",
        "DELETE FROM audit_log WHERE id = %s",
    ):
        with pytest.raises(DENIED):
            app.execute(statement, (entry["id"],))
    with pytest.raises(DENIED):
        app.execute(
            "INSERT INTO audit_log (table_name, row_key, action, actor, at, prev_hash, hash)"
            " VALUES ('batches', '1', 'delete', 'regulator', now(), '\\x00', '\\x00')"
        )
    # Nor can it append an entry of its own making through the function the triggers use.
    with pytest.raises(DENIED):
        app.execute("SELECT audit_append('batches', '1', 'delete', NULL, NULL)")
    with pytest.raises(DENIED):
        app.execute("SELECT audit_attach('cooperatives')")


def test_the_application_still_writes_readings_into_new_chunks_and_retention_keeps_the_window(
    app: db.Conn, conn: db.Conn
) -> None:
    conn.execute("INSERT INTO cooperatives (name) VALUES ('c') ")
    conn.execute("INSERT INTO gateways (id, cooperative_id) SELECT 'gw-roles', id FROM cooperatives")
    ch = conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES ('gw-roles', 't', 'Cel') RETURNING id"
    ).fetchone()
    assert ch is not None
    # A time no chunk covers yet: TimescaleDB creates the chunk for the application's insert.
    app.execute(
        "INSERT INTO readings (time, channel_id, value) VALUES (%s, %s, 1.0)",
        (datetime(2019, 3, 1, tzinfo=UTC), ch["id"]),
    )
    assert app.execute("SELECT count(*) AS n FROM readings").fetchone() == {"n": 1}
    with pytest.raises(psycopg.Error, match="never dropped"):
        app.execute("SELECT readings_drop_chunks(now() - interval '1 day')")
    dropped = app.execute("SELECT readings_drop_chunks(now() - interval '365 days') AS c").fetchall()
    assert len(dropped) == 1
    assert app.execute("SELECT count(*) AS n FROM readings").fetchone() == {"n": 0}
