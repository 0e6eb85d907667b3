"""Database roles the application manages: the Grafana reader logins, members of `agritrace_grafana`
(the group itself and the reporting views it may read are made by the migrations)."""

from __future__ import annotations

import re

from psycopg import sql

from agritrace.db import Conn
from agritrace.errors import InvalidInput

READER_GROUP = "agritrace_grafana"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{2,62}$")


def create_reader(conn: Conn, *, name: str, password: str) -> None:
    """Creates (or updates the password of) a login role that can read only the reporting views."""
    if not _ROLE_NAME.match(name):
        raise InvalidInput("role name: 3-63 lower-case letters, digits or '_', not starting with a digit")
    if len(password) < 12:
        raise InvalidInput("password: at least 12 characters")
    role = sql.Identifier(name)
    # An existing role is updated only if it is already a reader: otherwise this would reset the
    # password of (and make read-only) the application's own login or any other role.
    exists = conn.execute(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb AS powerful,"
        "       pg_has_role(oid, %s, 'MEMBER') AS reader"
        "  FROM pg_roles WHERE rolname = %s",
        (READER_GROUP, name),
    )
    row = exists.fetchone()
    if row is not None and (row["powerful"] or not row["reader"]):
        raise InvalidInput(f"role {name} exists and is not a Grafana reader; choose another name")
    verb = sql.SQL("ALTER") if row is not None else sql.SQL("CREATE")
    conn.execute(sql.SQL("{} ROLE {} LOGIN INHERIT PASSWORD {}").format(verb, role, sql.Literal(password)))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(READER_GROUP), role))
    # Belt and braces: even a view that could write (none can) is refused, and a runaway panel
    # query cannot hold a connection for long.
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '30s'").format(role))
