"""Cooperatives compete: cooperative A cannot read, list, change or even detect cooperative B's objects."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.api.deps import Scope
from agritrace.db import Conn
from agritrace.errors import NotFound


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def cooperative_with_things(conn: Conn) -> dict[str, str]:
    name = f"coop-{secrets.token_hex(4)}"
    coop = conn.execute("INSERT INTO cooperatives (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert coop is not None
    gw = f"gw-{secrets.token_hex(4)}"
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gw, coop["id"]))
    ch = conn.execute(
        "INSERT INTO channels (gateway_id, name) VALUES (%s, 'truck/temp') RETURNING id", (gw,)
    ).fetchone()
    assert ch is not None
    tok = tokens.issue(conn, role="cooperative", cooperative=name)
    return {
        "cooperatives": str(coop["id"]),
        "gateways": gw,
        "channels": str(ch["id"]),
        "api_tokens": str(tok["id"]),
        "token": str(tok["token"]),
    }


def test_a_cooperative_reads_its_own_history_but_not_anothers(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_things(conn), cooperative_with_things(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    for table in ("cooperatives", "gateways", "channels", "api_tokens"):
        assert client.get(f"/api/v1/audit/{table}/{a[table]}", headers=as_a).status_code == 200, table
        theirs = client.get(f"/api/v1/audit/{table}/{b[table]}", headers=as_a)
        assert theirs.status_code == 404, table


def test_another_cooperatives_object_looks_exactly_like_a_missing_one(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_things(conn), cooperative_with_things(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    theirs = client.get(f"/api/v1/audit/gateways/{b['gateways']}", headers=as_a)
    missing = client.get("/api/v1/audit/gateways/gw-does-not-exist", headers=as_a)
    assert (theirs.status_code, theirs.json()) == (missing.status_code, missing.json())
    other_table = client.get("/api/v1/audit/no_such_table/1", headers=as_a)
    assert (other_table.status_code, other_table.json()) == (missing.status_code, missing.json())


def test_a_cooperative_cannot_list_create_or_revoke_tokens(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_things(conn), cooperative_with_things(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    assert client.get("/api/v1/tokens", headers=as_a).status_code == 403
    assert client.post("/api/v1/tokens", json={"role": "admin"}, headers=as_a).status_code == 403
    assert client.delete(f"/api/v1/tokens/{b['api_tokens']}", headers=as_a).status_code == 403
    as_b = {"Authorization": f"Bearer {b['token']}"}
    assert client.get(f"/api/v1/audit/gateways/{b['gateways']}", headers=as_b).status_code == 200


def test_regulators_see_every_cooperative(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_things(conn), cooperative_with_things(conn)
    as_regulator = {"Authorization": f"Bearer {tokens.create(conn, role='regulator')}"}
    for who in (a, b):
        assert (
            client.get(f"/api/v1/audit/gateways/{who['gateways']}", headers=as_regulator).status_code == 200
        )


def test_the_scope_admits_only_the_callers_cooperative() -> None:
    everyone, coop = Scope(None), Scope(7)
    assert everyone.admits(7) and everyone.admits(None)
    assert coop.admits(7) and not coop.admits(8) and not coop.admits(None)
    with pytest.raises(NotFound):
        coop.check(8, "batch")
