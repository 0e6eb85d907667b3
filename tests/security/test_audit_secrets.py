"""A cooperative read an admin's webhook URL, with its `?key=`, through the audit API (issue 12, item
5). Webhooks are staff configuration, so a cooperative gets the 404 of a missing entity; regulators
see the URL's origin only, with what was cut listed in `redacted`; admins see everything and can
still re-hash every entry (checked here with hashlib, not with our own code)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator

import pytest
from attacker import Tenant
from fastapi.testclient import TestClient

from agritrace import db
from agritrace.api.app import create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def rehash(entry: dict[str, str]) -> str:
    return hashlib.sha256(bytes.fromhex(entry["prev_hash"]) + entry["canonical"].encode()).hexdigest()


def test_a_webhook_key_never_reaches_a_cooperative_or_a_regulator_through_the_audit_view(
    client: TestClient, conn: db.Conn, tenant: Tenant
) -> None:
    key = "SECRET" + secrets.token_hex(8)
    url = f"https://hooks.example.com/x?key={key}"
    r = client.post(
        "/api/v1/coldchain/webhooks",
        json={"url": url, "cooperative": tenant.cooperative},
        headers=tenant.admin,
    )
    assert r.status_code == 201, r.text
    hook = r.json()["id"]
    # A later change: credentials in the URL this time.
    conn.execute(
        "UPDATE coldchain_webhooks SET url = %s WHERE id = %s",
        (f"https://ops:{key}@hooks.example.com/", hook),
    )
    path = f"/api/v1/audit/coldchain_webhooks/{hook}"

    own = client.get(path, headers=tenant.own)
    assert own.status_code == 404 and key not in own.text
    assert own.json() == client.get("/api/v1/audit/coldchain_webhooks/999999", headers=tenant.own).json()

    regulator = client.get(path, headers=tenant.regulator)
    assert regulator.status_code == 200 and key not in regulator.text
    insert, update = regulator.json()["entries"]
    assert insert["after"]["url"] == "https://hooks.example.com/…"
    assert insert["redacted"] == ["after.url", "canonical"] and insert["canonical"] is None
    assert update["before"]["url"] == "https://hooks.example.com/…"
    assert update["after"]["url"] == "https://hooks.example.com"
    assert update["redacted"] == ["before.url", "after.url", "canonical"]
    assert insert["valid"] and update["valid"]

    admin = client.get(path, headers=tenant.admin)
    assert admin.status_code == 200
    entries = admin.json()["entries"]
    assert entries[0]["after"]["url"] == url and all(e["redacted"] == [] for e in entries)
    assert [rehash(e) for e in entries] == [e["hash"] for e in entries]


def test_a_url_with_a_key_in_any_audited_text_is_cut_to_its_origin_for_non_admins(
    client: TestClient, conn: db.Conn, tenant: Tenant
) -> None:
    key = "SECRET" + secrets.token_hex(8)
    gw = conn.execute(
        "INSERT INTO gateways (id, cooperative_id, description) VALUES (%s, %s, %s) RETURNING id",
        (
            f"gw-{secrets.token_hex(4)}",
            tenant.cooperative_id,
            f"camera https://cam.example.org/live?token={key}",
        ),
    ).fetchone()
    assert gw is not None
    path = f"/api/v1/audit/gateways/{gw['id']}"
    for headers in (tenant.own, tenant.regulator):
        r = client.get(path, headers=headers)
        assert r.status_code == 200 and key not in r.text
    admin = client.get(path, headers=tenant.admin).json()["entries"]
    assert key in admin[0]["after"]["description"]


def test_a_cooperative_reads_its_own_tokens_history_without_the_tokens_prefix(
    client: TestClient, conn: db.Conn, tenant: Tenant
) -> None:
    token = tenant.own["Authorization"].removeprefix("Bearer ")
    row = conn.execute(
        "SELECT id, prefix FROM api_tokens WHERE cooperative_id = %s", (tenant.cooperative_id,)
    ).fetchone()
    assert row is not None and token.startswith(row["prefix"])
    r = client.get(f"/api/v1/audit/api_tokens/{row['id']}", headers=tenant.own)
    assert r.status_code == 200 and row["prefix"] not in r.text
    assert r.json()["entries"][0]["redacted"] == ["after.prefix", "canonical"]


def test_entries_without_secrets_stay_fully_checkable_by_everyone(client: TestClient, tenant: Tenant) -> None:
    for headers in (tenant.own, tenant.regulator):
        entries = client.get(f"/api/v1/audit/batches/{tenant.batch_id}", headers=headers).json()["entries"]
        assert entries and all(e["redacted"] == [] for e in entries)
        assert [rehash(e) for e in entries] == [e["hash"] for e in entries]
