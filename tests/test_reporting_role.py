"""The Grafana reader can read the reporting views and nothing else."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from agritrace import db, roles
from agritrace.errors import InvalidInput


@pytest.fixture(scope="module")
def reader(database: str, roles_url: str) -> Iterator[tuple[str, str]]:
    name = f"agritrace_grafana_t{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    with db.connect(roles_url, autocommit=True) as conn:
        roles.create_reader(conn, name=name, password=password)
    yield name, make_conninfo(database, user=name, password=password)
    with db.connect(roles_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _relations(conn: db.Conn, *, reporting: bool) -> list[tuple[str, str]]:
    """Tables, views and sequences of the application (public, reporting, TimescaleDB's chunks).

    TimescaleDB's own catalog views (job statistics, sizes) are readable by every role by the
    extension's design and hold no application data; they are extension members and left out.
    """
    rows = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND n.nspname IN ('public', 'reporting', '_timescaledb_internal')
              AND (n.nspname = 'reporting') = %s
              AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2""",
        (reporting,),
    ).fetchall()
    return [(r["nspname"], r["relname"]) for r in rows]


def test_grafana_reader_is_refused_on_every_non_reporting_table(
    conn: db.Conn, reader: tuple[str, str]
) -> None:
    # A reading, so the readings hypertable has a chunk (which holds the data itself).
    conn.execute("INSERT INTO cooperatives (name) VALUES ('c') RETURNING id")
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES ('gw-role', 1)")
    conn.execute("INSERT INTO channels (gateway_id, name) VALUES ('gw-role', 't')")
    conn.execute("INSERT INTO readings VALUES (now(), 1, 1.0)")
    relations = _relations(conn, reporting=False)
    names = {f"{s}.{r}" for s, r in relations}
    assert {"public.api_tokens", "public.readings", "public.gateways"} <= names
    # The domains' tables behind the reporting views are refused too.
    assert {
        "public.alerts",
        "public.coldchain_profiles",
        "public.coldchain_webhooks",
        "public.dead_letters",
        "public.batches",
        "public.certificates",
        "public.compliance_certificates",
        "public.inspections",
        "public.batch_recalls",
        "public.batch_custody",
        "public.codes",
        "public.code_scans",
        "public.audit_log",
    } <= names
    assert any(s == "_timescaledb_internal" for s, _ in relations), "expected a chunk of readings"
    with psycopg.connect(reader[1], autocommit=True) as ro:
        readable = []
        for schema, rel in relations:
            try:
                ro.execute(
                    sql.SQL("SELECT * FROM {}.{} LIMIT 1").format(sql.Identifier(schema), sql.Identifier(rel))
                )
                readable.append(f"{schema}.{rel}")
            except errors.InsufficientPrivilege:
                pass
    assert readable == []


def test_grafana_reader_reads_every_reporting_view_but_cannot_write(
    conn: db.Conn, reader: tuple[str, str]
) -> None:
    views = _relations(conn, reporting=True)
    assert ("reporting", "open_alerts") in views
    with psycopg.connect(reader[1], autocommit=True) as ro:
        for schema, rel in views:
            ro.execute(
                sql.SQL("SELECT * FROM {}.{} LIMIT 1").format(sql.Identifier(schema), sql.Identifier(rel))
            )
        with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
            ro.execute("INSERT INTO reporting.cooperatives (cooperative) VALUES ('x')")
        with pytest.raises((errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
            ro.execute("CREATE TABLE reporting.mine (x int)")


def test_no_reporting_view_exposes_token_hashes_or_credentials(conn: db.Conn) -> None:
    columns = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'reporting'"
    ).fetchall()
    assert columns
    for row in columns:
        assert not any(
            word in row["column_name"] for word in ("hash", "password", "secret", "token", "pepper")
        )


def test_creating_the_reader_twice_updates_it(database: str, roles_url: str, reader: tuple[str, str]) -> None:
    name, _ = reader
    password = secrets.token_urlsafe(16)
    with db.connect(roles_url, autocommit=True) as conn:
        roles.create_reader(conn, name=name, password=password)
    with psycopg.connect(make_conninfo(database, user=name, password=password), autocommit=True) as ro:
        assert ro.execute("SELECT count(*) FROM reporting.gateways").fetchone() == (0,)


def test_the_application_role_cannot_be_turned_into_a_grafana_reader(roles_url: str) -> None:
    # With the role-making login (which could ALTER any non-superuser role), `dashboards reader`
    # still refuses to reset the password of, or make read-only, a role that is not a reader.
    with db.connect(roles_url, autocommit=True) as conn:
        for name in ("agritrace_app", "agritrace", "agritrace_roles"):
            with pytest.raises(InvalidInput, match="not a Grafana reader"):
                roles.create_reader(conn, name=name, password=secrets.token_urlsafe(16))
        with pytest.raises(InvalidInput):
            roles.create_reader(
                conn, name="Robert'); DROP TABLE readings;--", password=secrets.token_urlsafe(16)
            )
