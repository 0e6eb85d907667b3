"""Cooperatives compete: cooperative A cannot read, list, change or even detect cooperative B's objects."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.api.deps import Scope
from agritrace.db import Conn
from agritrace.errors import NotFound
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service


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


# ---- Devices and trace (integ-api): gateways, channels, readings, batches and codes ----


def cooperative_with_a_cold_room_and_a_batch(conn: Conn) -> dict[str, Any]:
    """A cooperative with a gateway, a channel with a reading, a batch holding one code, and a token."""
    things: dict[str, Any] = cooperative_with_things(conn)
    coop_id = int(things["cooperatives"])
    conn.execute(
        "INSERT INTO readings (time, channel_id, value) VALUES ('2026-05-01T10:00:00Z', %s, 11.5)",
        (int(things["channels"]),),
    )
    conn.execute(
        "UPDATE channels SET last_time = '2026-05-01T10:00:00Z', last_value = 11.5 WHERE id = %s",
        (int(things["channels"]),),
    )
    batch = trace_service.create_batch(conn, product="mango", cooperative_id=coop_id, quantity=100, unit="kg")
    batch2 = trace_service.create_batch(conn, product="mango", cooperative_id=coop_id, quantity=50, unit="kg")
    (code,) = trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)
    return {**things, "batch": batch["id"], "batch2": batch2["id"], "lot": batch["lot"], "code": code["code"]}


def _reads(x: dict[str, Any]) -> list[str]:
    gw, ch, batch = x["gateways"], x["channels"], x["batch"]
    return [
        f"/api/v1/gateways/{gw}",
        f"/api/v1/gateways/{gw}/latest",
        f"/api/v1/gateways/{gw}/channels",
        f"/api/v1/channels/{ch}",
        f"/api/v1/channels/{ch}/readings?start=2026-05-01T00:00:00Z&end=2026-05-02T00:00:00Z",
        f"/api/v1/batches/{batch}",
        f"/api/v1/batches/{batch}/lineage",
        f"/api/v1/batches/{batch}/epcis",
        f"/api/v1/batches/{batch}/certificates",
        f"/api/v1/batches/{batch}/labels.pdf",
    ]


def _writes(x: dict[str, Any]) -> list[tuple[str, str, Any]]:
    gw, ch, batch = x["gateways"], x["channels"], x["batch"]
    return [
        ("PATCH", f"/api/v1/channels/{ch}", {"asset_name": "taken over"}),
        ("POST", f"/api/v1/gateways/{gw}/disable", None),
        ("POST", f"/api/v1/gateways/{gw}/enable", None),
        ("POST", f"/api/v1/gateways/{gw}/credentials", None),
        (
            "POST",
            f"/api/v1/batches/{batch}/events",
            {"biz_step": "shipping", "event_time": "2026-05-02T01:00:00Z"},
        ),
        ("POST", f"/api/v1/batches/{batch}/split", {"parts": [{"quantity": 10, "unit": "kg"}]}),
        ("POST", f"/api/v1/batches/{batch}/codes", {"count": 1}),
        (
            "POST",
            f"/api/v1/batches/{batch}/inspections",
            {"inspected_at": "2026-05-02T02:00:00Z", "kind": "pesticide residue", "passed": False},
        ),
        ("POST", "/api/v1/batches/merge", {"batch_ids": [x["batch"], x["batch2"]]}),
    ]


def _missing() -> dict[str, Any]:
    return {"gateways": "gw-nobody-has-this", "channels": 2**31 - 1, "batch": 2**62, "batch2": 2**62 - 1}


def _same_answer(theirs: Any, missing: Any, their_id: str, missing_id: str) -> bool:
    """The same status and problem body, once the id that was asked for is set aside."""
    body = theirs.text.replace(their_id, "ID")
    return bool(theirs.status_code == missing.status_code and body == missing.text.replace(missing_id, "ID"))


def test_a_cooperative_cannot_read_anothers_gateways_channels_readings_or_batches(
    client: TestClient, conn: Conn, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # The EPCIS export mints identifiers under the public base URL (and refuses a local one).
    monkeypatch.setenv("AGRITRACE_PUBLIC_BASE_URL", "https://trace.example.cn")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    a, b = cooperative_with_a_cold_room_and_a_batch(conn), cooperative_with_a_cold_room_and_a_batch(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    for own in _reads(a):
        assert client.get(own, headers=as_a).status_code == 200, own
    for theirs, missing in zip(_reads(b), _reads(_missing()), strict=True):
        resp, gone = client.get(theirs, headers=as_a), client.get(missing, headers=as_a)
        assert resp.status_code == 404, theirs
        assert resp.headers["content-type"] == "application/problem+json"
        # Nothing tells "exists but not yours" from "does not exist".
        their_id = next(
            str(v) for k, v in b.items() if k in ("gateways", "channels", "batch") and str(v) in theirs
        )
        missing_id = next(str(v) for k, v in _missing().items() if str(v) in missing)
        assert _same_answer(resp, gone, their_id, missing_id), (resp.text, gone.text)
        assert b["cooperatives"] not in resp.text.replace(their_id, "")


def test_a_cooperative_lists_only_its_own_gateways_and_batches(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_a_cold_room_and_a_batch(conn), cooperative_with_a_cold_room_and_a_batch(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    gateways = client.get("/api/v1/gateways", headers=as_a).json()["items"]
    assert [g["gateway_id"] for g in gateways] == [a["gateways"]]
    batches, cursor = [], None
    while True:
        resp = client.get(
            "/api/v1/batches", params={"limit": 1, **({"cursor": cursor} if cursor else {})}, headers=as_a
        )
        assert resp.status_code == 200
        batches += resp.json()["items"]
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(x["id"] for x in batches) == sorted([a["batch"], a["batch2"]])
    # The regulator's view shows both, so the filter is the scope and not an accident of the data.
    as_regulator = {"Authorization": f"Bearer {tokens.create(conn, role='regulator')}"}
    everyone = {g["gateway_id"] for g in client.get("/api/v1/gateways", headers=as_regulator).json()["items"]}
    assert {a["gateways"], b["gateways"]} <= everyone


def test_a_cooperative_cannot_change_anothers_devices_or_batches(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_a_cold_room_and_a_batch(conn), cooperative_with_a_cold_room_and_a_batch(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    for method, url, body in _writes(b):
        resp = client.request(method, url, json=body, headers=as_a)
        assert resp.status_code == 404, (method, url, resp.text)
    # Nor through its own objects: B's channel cannot hold A's batch, A cannot write into B's name.
    custody = {"channel_id": int(b["channels"]), "started_at": "2026-05-01T00:00:00Z"}
    assert client.post(f"/api/v1/batches/{a['batch']}/custody", json=custody, headers=as_a).status_code == 404
    merge = {"batch_ids": [a["batch"], b["batch"]]}
    assert client.post("/api/v1/batches/merge", json=merge, headers=as_a).status_code == 404
    b_name = conn.execute("SELECT name FROM cooperatives WHERE id = %s", (int(b["cooperatives"]),)).fetchone()
    assert b_name is not None
    for url, body in (
        ("/api/v1/batches", {"product": "mango", "cooperative": b_name["name"]}),
        ("/api/v1/gateways", {"cooperative": b_name["name"]}),
    ):
        assert client.post(url, json=body, headers=as_a).status_code == 403, url
    # B's things are as they were.
    channel = conn.execute("SELECT asset_name FROM channels WHERE id = %s", (int(b["channels"]),)).fetchone()
    gateway = conn.execute("SELECT disabled_at FROM gateways WHERE id = %s", (b["gateways"],)).fetchone()
    assert channel is not None and channel["asset_name"] is None
    assert gateway is not None and gateway["disabled_at"] is None
    for table in ("trace_events", "inspections", "batch_custody"):
        row = conn.execute(f"SELECT count(*) AS n FROM {table} WHERE batch_id = %s", (b["batch"],)).fetchone()
        assert row is not None and row["n"] == 0, table
    codes = conn.execute("SELECT count(*) AS n FROM codes WHERE batch_id = %s", (b["batch"],)).fetchone()
    children = conn.execute(
        "SELECT count(*) AS n FROM batch_lineage WHERE parent_id = %s", (b["batch"],)
    ).fetchone()
    assert codes is not None and codes["n"] == 1 and children is not None and children["n"] == 0


def test_a_cooperative_cannot_see_flagged_codes_or_recall(client: TestClient, conn: Conn) -> None:
    a, b = cooperative_with_a_cold_room_and_a_batch(conn), cooperative_with_a_cold_room_and_a_batch(conn)
    as_a = {"Authorization": f"Bearer {a['token']}"}
    assert client.get("/api/v1/codes/flagged", headers=as_a).status_code == 403
    for batch in (a["batch"], b["batch"]):
        resp = client.post(f"/api/v1/batches/{batch}/recall", json={"reason": "test"}, headers=as_a)
        assert resp.status_code == 403
    # A box's code is public by design (the shopper has no token), and tells only what the page shows.
    page = client.get(f"/api/v1/trace/{b['code']}").json()
    assert "token" not in page and "cooperative_id" not in page["batch"]
