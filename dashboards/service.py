"""The reporting database role: login roles Grafana connects as, members of `agritrace_grafana`."""

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
    exists = conn.execute(
        "SELECT rolsuper OR rolcreaterole AS powerful FROM pg_roles WHERE rolname = %s", (name,)
    )
    row = exists.fetchone()
    if row is not None and row["powerful"]:
        raise InvalidInput(f"role {name} is privileged; choose another name for the Grafana reader")
    verb = sql.SQL("ALTER") if row is not None else sql.SQL("CREATE")
    conn.execute(sql.SQL("{} ROLE {} LOGIN INHERIT PASSWORD {}").format(verb, role, sql.Literal(password)))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(READER_GROUP), role))
    # Belt and braces: even a view that could write (none can) is refused, and a runaway panel
    # query cannot hold a connection for long.
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '30s'").format(role))
