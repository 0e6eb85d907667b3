"""Who the audit trail says made a change (issue 12, item 4): an actor cannot be forged with
`set_config`, and every CLI command records its operator, in all of its transactions."""

from __future__ import annotations

import ast
import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from agritrace import audit, db
from agritrace.api import tokens
from agritrace.devices import broker

REPO = Path(__file__).resolve().parents[2]
AGRITRACE = str(Path(sys.executable).parent / "agritrace")


def _insert_cooperative(database: str, actor: str, name: str = "伪造者合作社") -> None:
    with db.connect(database) as conn:
        audit.set_actor(conn, actor)
        conn.execute("INSERT INTO cooperatives (name) VALUES (%s)", (name,))
        conn.commit()


@pytest.mark.parametrize(
    "actor",
    [
        "token:999999:admin",  # no such token
        "regulator",  # not an actor form at all
        "someone else",
        "token:1:admin:cooperative=1",  # an admin token carries no cooperative
        "cli:x\ninjected",
    ],
)
def test_a_forged_actor_aborts_the_write(database: str, actor: str) -> None:
    with pytest.raises(psycopg.Error, match="actor"):
        _insert_cooperative(database, actor)
    with db.connect(database) as conn:
        assert conn.execute(
            "SELECT count(*) AS n FROM cooperatives WHERE name = '伪造者合作社'"
        ).fetchone() == {"n": 0}


def test_a_token_actor_must_match_the_tokens_role_and_liveness(database: str, conn: db.Conn) -> None:
    tokens.create(conn, role="regulator", description="actor test")
    conn.commit()
    row = conn.execute("SELECT max(id) AS id FROM api_tokens WHERE description = 'actor test'").fetchone()
    assert row is not None
    token_id = row["id"]
    # Claiming the regulator token as an admin is refused; as itself it is recorded.
    with pytest.raises(psycopg.Error, match="no live token"):
        _insert_cooperative(database, f"token:{token_id}:admin")
    _insert_cooperative(database, f"token:{token_id}:regulator", name="真正的监管者")
    # Once revoked (in an earlier transaction), it can no longer be named.
    tokens.revoke(conn, token_id=token_id)
    conn.commit()
    with pytest.raises(psycopg.Error, match="no live token"):
        _insert_cooperative(database, f"token:{token_id}:regulator")


def test_a_cli_command_records_its_operator_in_every_transaction(database: str, conn: db.Conn) -> None:
    # Before, `gateways create` recorded the cooperative and the gateway as `db:<login>`.
    name = f"cli-actor-{os.getpid()}"
    done = subprocess.run(
        [AGRITRACE, "gateways", "create", "--cooperative", name, "--json"],
        env={**os.environ, "AGRITRACE_DATABASE_URL": database},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    gateway_id = json.loads(done.stdout)["gateway_id"]
    try:
        actors = conn.execute(
            """SELECT DISTINCT actor FROM audit_log
                WHERE (table_name = 'gateways' AND row_key = %s)
                   OR (table_name = 'cooperatives' AND after ->> 'name' = %s)""",
            (gateway_id, name),
        ).fetchall()
        assert [r["actor"] for r in actors] == [f"cli:{getpass.getuser()}"]
    finally:
        with broker.admin_session() as dynsec:
            broker.remove_gateway(dynsec, gateway_id)


def test_every_cli_opens_its_connections_through_the_one_helper() -> None:
    # A command that calls db.connect() itself would record `db:<login>` again.
    offenders = []
    for path in REPO.glob("*/cli.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "connect":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
