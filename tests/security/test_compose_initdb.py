"""Compose's database initialisation (deploy/postgres/initdb.sh + roles.sql), run for real by the
superuser against the local cluster as the TimescaleDB image would run it: it must make the Grafana
reader (reporting views only) without any CREATEROLE login, and keep the application's login powerless.
Passwords are the local stack's own, so re-running it changes nothing for the running stack."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

from agritrace import db
from agritrace.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
RUNUSER = shutil.which("runuser", path="/usr/sbin:/usr/bin:/sbin:/bin") or "runuser"


def _socket_dir() -> Path:
    state = Path(os.environ.get("AGRITRACE_STATE_DIR", REPO / ".local"))
    root = Path((state / "data-root").read_text().strip())
    return root / "pg-run"


@pytest.mark.skipif(os.geteuid() != 0, reason="runs psql as the postgres OS user")
def test_initdb_makes_a_reader_of_reporting_only_and_no_role_making_login(database: str) -> None:
    settings = get_settings()
    assert settings.database_owner_password is not None
    app_password = unquote(urlsplit(settings.database_url).password or "")
    reader = f"agritrace_grafana_c{secrets.token_hex(3)}"
    reader_password = secrets.token_urlsafe(16)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PGHOST": str(_socket_dir()),
        "PGPORT": str(urlsplit(settings.database_url).port),
        "POSTGRES_USER": "postgres",
        "AGRITRACE_DB_OWNER_PASSWORD": settings.database_owner_password.get_secret_value(),
        "AGRITRACE_DB_PASSWORD": app_password,
        "AGRITRACE_GRAFANA_DB_USER": reader,
        "AGRITRACE_GRAFANA_DB_PASSWORD": reader_password,
    }
    # The image mounts roles.sql at /agritrace/roles.sql; run the script with that path rewritten.
    script = (
        (REPO / "deploy/postgres/initdb.sh")
        .read_text()
        .replace("/agritrace/roles.sql", str(REPO / "deploy/postgres/roles.sql"))
    )
    done = subprocess.run(
        [RUNUSER, "-u", "postgres", "--", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    try:
        with psycopg.connect(make_conninfo(database, user=reader, password=reader_password)) as ro:
            assert ro.execute("SELECT count(*) FROM reporting.gateways").fetchone() is not None
            with pytest.raises(errors.InsufficientPrivilege):
                ro.execute("SELECT * FROM api_tokens")
            ro.rollback()
            with pytest.raises(errors.ReadOnlySqlTransaction):
                ro.execute("CREATE TEMP TABLE x (i int)")
        with db.connect(database) as conn:
            roles = conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname IN (%s, 'agritrace', 'agritrace_app')",
                (reader,),
            ).fetchall()
        assert {r["rolname"] for r in roles} == {reader, "agritrace", "agritrace_app"}
        assert not any(r["rolsuper"] or r["rolcreaterole"] for r in roles)
        # The stack still logs in with its own passwords (initdb set the same ones).
        with db.connect(database) as conn, db.connect(db.owner_url(database)) as owner:
            assert conn.execute("SELECT 1 AS ok").fetchone() == {"ok": 1}
            assert owner.execute("SELECT 1 AS ok").fetchone() == {"ok": 1}
    finally:
        subprocess.run(
            [RUNUSER, "-u", "postgres", "--", "psql", "-X", "-q", "-d", "postgres", "-c", f'DROP ROLE IF EXISTS "{reader}"'],
            env=env,
            capture_output=True,
            check=False,
            cwd="/",
        )  # fmt: skip
