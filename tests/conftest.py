"""Test fixtures: a fresh database per test session (migrated), a clean slate per test, the real broker."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from agritrace import db
from agritrace.devices import broker
from agritrace.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A database of its own for this test run, so runs never see each other's or the demo's data;
    its URL is the application's login (agritrace_app)."""
    os.environ.setdefault("AGRITRACE_ENV_FILE", str(REPO / ".local" / "agritrace.env"))
    get_settings.cache_clear()
    name = f"agritrace_test_{secrets.token_hex(4)}"
    url = db.create_database(name)
    os.environ["AGRITRACE_DATABASE_URL"] = url
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    db.drop_database(name)


@pytest.fixture(scope="session")
def roles_url(database: str) -> str:
    """The login that may create roles (AGRITRACE_DATABASE_ROLES_URL: `dashboards reader` only)."""
    url = get_settings().database_roles_url
    if url is None:
        pytest.fail("AGRITRACE_DATABASE_ROLES_URL is not set (the local stack's env file sets it)")
    return url.get_secret_value()


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
    with db.connect(db.owner_url(database), autocommit=True) as conn:
        tables = _data_tables(conn)
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )


@pytest.fixture
def conn(database: str) -> Iterator[db.Conn]:
    """A connection in autocommit mode, for arranging and checking data, as the owner role (the
    application's own connections, e.g. through the API, log in as `agritrace_app`)."""
    with db.connect(db.owner_url(database), autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests save things a person may want to look at (screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def observer_account(database: str) -> Iterator[tuple[str, str]]:
    """A broker account that may read every agritrace topic, for tests that watch what the platform
    publishes (test-only: any client id; deleted at the end of the run)."""
    username = f"agritrace-test-observer-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    with broker.admin_session() as dynsec:
        dynsec.run({"command": "createRole", "rolename": username})
        dynsec.run(
            *[
                {
                    "command": "addRoleACL",
                    "rolename": username,
                    "acltype": t,
                    "topic": "agritrace/v1/#",
                    "allow": True,
                }
                for t in ("subscribePattern", "publishClientReceive")
            ]
        )
        dynsec.run(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "roles": [{"rolename": username}],
            }
        )
    yield username, password
    with broker.admin_session() as dynsec:
        dynsec.run(
            {"command": "deleteClient", "username": username}, {"command": "deleteRole", "rolename": username}
        )


@pytest.fixture(scope="session")
def alerts_env(database: str) -> Iterator[dict[str, str]]:
    """Environment for an `agritrace alerts run` of this test run: its own alert-publisher account
    (the account's one client id is pinned, so it must not be shared with a running `make up`)."""
    username = f"agritrace-alerts-t{secrets.token_hex(4)}"
    settings = get_settings().model_copy(update={"mqtt_alerts_username": username})
    with broker.admin_session() as dynsec:
        broker.ensure_alerts_account(dynsec, settings)
    yield {"AGRITRACE_MQTT_ALERTS_USERNAME": username}
    with broker.admin_session() as dynsec:
        dynsec.run({"command": "deleteClient", "username": username}, tolerate=("not found",))


@pytest.fixture
def alerts_process(database: str, alerts_env: dict[str, str]) -> Iterator[None]:
    """The real `agritrace alerts run` process on this test run's database."""
    agritrace = Path(sys.executable).parent / "agritrace"
    env = {**os.environ, "AGRITRACE_DATABASE_URL": database, **alerts_env}
    proc = subprocess.Popen([str(agritrace), "alerts", "run", "--interval", "0.2"], env=env)
    yield
    proc.terminate()
    proc.wait(timeout=15)
