"""The audit trail: every change recorded with who made it, and history that cannot be quietly edited."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from agritrace import audit, db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.db import Conn

REPO = Path(__file__).resolve().parents[1]


def agritrace_cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".venv/bin/agritrace"), *args],
        capture_output=True,
        text=True,
        env={
            "AGRITRACE_DATABASE_URL": database,
            "AGRITRACE_ENV_FILE": str(REPO / ".local/agritrace.env"),
            "PATH": "/usr/bin:/bin",
            "USER": "operator",
        },
        check=False,
    )


def tamper(conn: Conn, statement: str, params: tuple[object, ...] = ()) -> None:
    """What someone owning the tables could do: switch the guard trigger off, rewrite, switch back."""
    with conn.transaction():
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        conn.execute(statement, params)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def coop_and_gateway(conn: Conn) -> tuple[int, str]:
    coop = conn.execute(
        "INSERT INTO cooperatives (name) VALUES (%s) RETURNING id", (f"coop-{secrets.token_hex(4)}",)
    ).fetchone()
    assert coop is not None
    gw = f"gw-{secrets.token_hex(4)}"
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gw, coop["id"]))
    return coop["id"], gw


def test_changes_are_recorded_with_before_after_and_the_database_user(conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    conn.execute("UPDATE gateways SET description = 'cold room 2' WHERE id = %s", (gw,))
    conn.execute("DELETE FROM gateways WHERE id = %s", (gw,))
    rows = conn.execute(
        "SELECT action, actor, before, after FROM audit_log WHERE table_name = 'gateways' ORDER BY id"
    ).fetchall()
    assert [r["action"] for r in rows] == ["insert", "update", "delete"]
    assert rows[1]["before"]["description"] is None and rows[1]["after"]["description"] == "cold room 2"
    assert rows[2]["after"] is None
    assert all(r["actor"].startswith("db:") for r in rows)


def test_a_gateways_liveness_updates_are_not_audited_but_its_edits_are(conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    conn.execute(
        "UPDATE gateways SET online = true, last_seen = now(), status_at = now() WHERE id = %s", (gw,)
    )
    assert conn.execute("SELECT count(*) AS n FROM audit_log WHERE table_name = 'gateways'").fetchone() == {
        "n": 1
    }
    conn.execute("UPDATE gateways SET disabled_at = now() WHERE id = %s", (gw,))
    assert conn.execute("SELECT count(*) AS n FROM audit_log WHERE table_name = 'gateways'").fetchone() == {
        "n": 2
    }


def test_token_hashes_never_reach_the_audit_log(conn: Conn) -> None:
    tokens.create(conn, role="admin")
    entry = conn.execute("SELECT after FROM audit_log WHERE table_name = 'api_tokens'").fetchone()
    assert entry is not None and "token_hash" not in entry["after"] and entry["after"]["role"] == "admin"


def test_changes_through_the_api_name_the_token_that_made_them(client: TestClient, conn: Conn) -> None:
    admin = tokens.issue(conn, role="admin")
    resp = client.post(
        "/api/v1/tokens", json={"role": "regulator"}, headers={"Authorization": f"Bearer {admin['token']}"}
    )
    assert resp.status_code == 201, resp.text
    entry = conn.execute(
        "SELECT actor FROM audit_log WHERE table_name = 'api_tokens' AND row_key = %s",
        (str(resp.json()["id"]),),
    ).fetchone()
    assert entry == {"actor": f"token:{admin['id']}:admin"}


def test_cli_changes_name_the_operator(database: str, conn: Conn) -> None:
    out = agritrace_cli(database, "token", "create", "--role", "regulator")
    assert out.returncode == 0, out.stderr
    entry = conn.execute("SELECT actor FROM audit_log WHERE table_name = 'api_tokens'").fetchone()
    assert entry == {"actor": "cli:operator"}


def test_the_application_role_cannot_update_or_delete_history(conn: Conn) -> None:
    coop_and_gateway(conn)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE audit_log SET actor = 'someone else'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM audit_log")


def test_audit_verify_passes_on_untouched_history(database: str, conn: Conn) -> None:
    coop_and_gateway(conn)
    out = agritrace_cli(database, "audit", "verify")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: 2 entries")


def test_editing_history_in_sql_makes_verify_fail_and_name_the_row(database: str, conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    conn.execute("UPDATE gateways SET description = 'north cold room' WHERE id = %s", (gw,))
    edited = conn.execute(
        "SELECT id FROM audit_log WHERE table_name = 'gateways' AND action = 'update'"
    ).fetchone()
    assert edited is not None
    # Someone rewrites what the gateway used to be, and the gateway row too, to hide a change.
    tamper(
        conn,
        "UPDATE audit_log SET after = jsonb_set(after, '{description}', '\"south cold room\"') WHERE id = %s",
        (edited["id"],),
    )
    out = agritrace_cli(database, "audit", "verify")
    assert out.returncode == 1
    assert (
        f"audit_log entry {edited['id']} (gateways {gw}, its content does not match its hash)" in out.stderr
    )


def test_deleting_an_entry_is_found_at_the_entry_after_it(database: str, conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    conn.execute("UPDATE gateways SET description = 'x' WHERE id = %s", (gw,))
    ids = [r["id"] for r in conn.execute("SELECT id FROM audit_log ORDER BY id").fetchall()]
    tamper(conn, "DELETE FROM audit_log WHERE id = %s", (ids[1],))
    findings = audit.verify(conn)
    assert findings[0].entry_id == ids[2]
    assert findings[0].problem == "an entry before it is missing"
    out = agritrace_cli(database, "audit", "verify", "--json")
    assert out.returncode == 1 and '"ok": false' in out.stdout


def test_a_change_made_with_the_audit_trigger_off_is_found(conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    with conn.transaction():
        conn.execute("ALTER TABLE gateways DISABLE TRIGGER audit")
        conn.execute("UPDATE gateways SET description = 'quiet edit' WHERE id = %s", (gw,))
        conn.execute("ALTER TABLE gateways ENABLE TRIGGER audit")
    assert [str(f) for f in audit.verify(conn)] == [f"gateways {gw}: differs from its last audited state"]


def test_attaching_the_audit_to_a_table_takes_one_call_and_records_its_rows(conn: Conn) -> None:
    conn.execute("CREATE TABLE lots (code text PRIMARY KEY, kg numeric, secret text)")
    try:
        conn.execute("INSERT INTO lots VALUES ('L1', 10, 's'), ('L2', 20, 's')")
        conn.execute("SELECT audit_attach('lots', ARRAY['secret'])")
        conn.execute("SELECT audit_attach('lots', ARRAY['secret'])")  # idempotent
        conn.execute("UPDATE lots SET kg = 11 WHERE code = 'L1'")
        rows = conn.execute(
            "SELECT row_key, action, after FROM audit_log WHERE table_name = 'lots' ORDER BY id"
        ).fetchall()
        assert [(r["row_key"], r["action"]) for r in rows] == [
            ("L1", "attach"),
            ("L2", "attach"),
            ("L1", "update"),
        ]
        assert rows[2]["after"] == {"code": "L1", "kg": 11}
        assert "lots" in audit.audited_tables(conn)
        assert audit.verify(conn) == []
    finally:
        conn.execute("DROP TABLE lots")


def test_concurrent_writers_keep_one_unbroken_chain(database: str, conn: Conn) -> None:
    def writer() -> None:
        with db.connect(database) as c:
            for _ in range(10):
                c.execute("INSERT INTO cooperatives (name) VALUES (%s)", (f"coop-{secrets.token_hex(6)}",))
                c.commit()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert conn.execute("SELECT count(*) AS n FROM audit_log").fetchone() == {"n": 40}
    assert audit.verify(conn) == []


def test_the_proof_endpoint_lets_anyone_recompute_the_hashes(client: TestClient, conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    conn.execute("UPDATE gateways SET description = '冷库 1' WHERE id = %s", (gw,))
    regulator = tokens.create(conn, role="regulator")
    resp = client.get(f"/api/v1/audit/gateways/{gw}", headers={"Authorization": f"Bearer {regulator}"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [e["action"] for e in body["entries"]] == ["insert", "update"]
    for entry in body["entries"]:
        assert entry["valid"] is True
        recomputed = hashlib.sha256(
            bytes.fromhex(entry["prev_hash"]) + entry["canonical"].encode()
        ).hexdigest()
        assert recomputed == entry["hash"]
    # The regulator's token was created after, so the head is that newer entry.
    assert body["head"]["id"] > body["entries"][-1]["id"]


def test_the_proof_endpoint_flags_an_edited_entry(client: TestClient, conn: Conn) -> None:
    _, gw = coop_and_gateway(conn)
    tamper(conn, "UPDATE audit_log SET actor = 'nobody' WHERE table_name = 'gateways'")
    admin = tokens.create(conn, role="admin")
    body = client.get(f"/api/v1/audit/gateways/{gw}", headers={"Authorization": f"Bearer {admin}"}).json()
    assert [e["valid"] for e in body["entries"]] == [False]


def test_unknown_audited_table_or_entity_is_a_404(client: TestClient, conn: Conn) -> None:
    admin = tokens.create(conn, role="admin")
    auth = {"Authorization": f"Bearer {admin}"}
    assert client.get("/api/v1/audit/pg_authid/1", headers=auth).status_code == 404
    assert client.get("/api/v1/audit/gateways/nope", headers=auth).status_code == 404
    assert client.get("/api/v1/audit/Robert'); DROP/1", headers=auth).status_code in (404, 422)


def test_audit_head_prints_the_newest_hash(database: str, conn: Conn) -> None:
    coop_and_gateway(conn)
    out = agritrace_cli(database, "audit", "head")
    assert out.returncode == 0
    n, digest = out.stdout.split()
    assert n == "2" and len(digest) == 64


def test_adding_a_column_to_an_audited_table_is_not_mistaken_for_tampering(conn: Conn) -> None:
    conn.execute("CREATE TABLE crates (id int PRIMARY KEY, kg numeric)")
    try:
        conn.execute("SELECT audit_attach('crates')")
        conn.execute("INSERT INTO crates VALUES (1, 5)")
        conn.execute("ALTER TABLE crates ADD COLUMN grade text DEFAULT 'A'")
        assert audit.verify(conn) == []
        with conn.transaction():
            conn.execute("ALTER TABLE crates DISABLE TRIGGER audit")
            conn.execute("UPDATE crates SET kg = 50")
            conn.execute("ALTER TABLE crates ENABLE TRIGGER audit")
        assert [str(f) for f in audit.verify(conn)] == ["crates 1: differs from its last audited state"]
    finally:
        conn.execute("DROP TABLE crates")
