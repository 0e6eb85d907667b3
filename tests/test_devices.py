"""Cooperatives register gateways, get their MQTT credentials once, disable and rotate them; reads are scoped."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agritrace import db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.devices import broker
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import get_settings

AGRITRACE = str(Path(sys.executable).parent / "agritrace")


@pytest.fixture
def created() -> Iterator[list[str]]:
    """Gateway ids a test provisioned; removed from the shared broker afterwards."""
    ids: list[str] = []
    yield ids
    with broker.admin_session() as dynsec:
        for gw in ids:
            broker.remove_gateway(dynsec, gw)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def can_connect(username: str, password: str) -> bool:
    # A gateway's client id is pinned to its gateway id (its username).
    client = new_client(username, username=username, password=password)
    try:
        connect_blocking(client, get_settings(), timeout=5)
    except ConnectionError:
        return False
    client.disconnect()
    client.loop_stop()
    return True


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_cli_creates_a_gateway_and_prints_the_contract_json(database: str, created: list[str]) -> None:
    coop = f"沃柑合作社-{secrets.token_hex(3)}"
    out = subprocess.run(
        [AGRITRACE, "gateways", "create", "--cooperative", coop, "--json"],
        env=dict(os.environ, AGRITRACE_DATABASE_URL=database),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    doc = json.loads(out)
    created.append(doc["gateway_id"])
    settings = get_settings()
    assert set(doc) == {"gateway_id", "mqtt"}
    assert set(doc["mqtt"]) == {"host", "port", "tls", "ca_certificate", "client_id", "username", "password"}
    assert (
        doc["mqtt"]["host"] == settings.gateway_mqtt_host
        and doc["mqtt"]["port"] == settings.gateway_mqtt_port == settings.mqtt_tls_port
        and doc["mqtt"]["tls"] is True
    )
    assert settings.mqtt_tls_ca_file is not None
    assert doc["mqtt"]["ca_certificate"] == settings.mqtt_tls_ca_file.read_text()
    assert doc["mqtt"]["username"] == doc["mqtt"]["client_id"] == doc["gateway_id"]
    assert can_connect(doc["gateway_id"], doc["mqtt"]["password"])
    with db.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.name FROM gateways g JOIN cooperatives c ON c.id = g.cooperative_id WHERE g.id = %s",
            (doc["gateway_id"],),
        ).fetchone()
        assert row == {"name": coop}
        # No password (nor anything derived from it) is kept in our database.
        dump = conn.execute("SELECT row_to_json(g)::text AS j FROM gateways g").fetchone()
        assert dump is not None and doc["mqtt"]["password"] not in dump["j"]


def test_disabled_gateway_is_refused_and_rotation_replaces_the_password(
    database: str, client: TestClient, created: list[str]
) -> None:
    with db.connect(database, autocommit=True) as conn:
        admin = tokens.create(conn, role="admin")
    made = client.post("/api/v1/gateways", json={"cooperative": "茶园合作社"}, headers=auth(admin))
    assert made.status_code == 201, made.text
    gw, password = made.json()["gateway_id"], made.json()["mqtt"]["password"]
    created.append(gw)
    # The API hands out the broker's TLS listener and its CA, as the CLI does.
    assert made.json()["mqtt"]["tls"] is True and made.json()["mqtt"]["client_id"] == gw
    assert made.json()["mqtt"]["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert can_connect(gw, password)
    assert client.post(f"/api/v1/gateways/{gw}/disable", headers=auth(admin)).json()["disabled_at"]
    assert not can_connect(gw, password)
    assert client.post(f"/api/v1/gateways/{gw}/enable", headers=auth(admin)).json()["disabled_at"] is None
    assert can_connect(gw, password)
    rotated = client.post(f"/api/v1/gateways/{gw}/credentials", headers=auth(admin))
    assert rotated.status_code == 200
    new_password = rotated.json()["mqtt"]["password"]
    assert new_password != password
    assert not can_connect(gw, password)
    assert can_connect(gw, new_password)


def test_cooperative_sees_and_manages_only_its_own_gateways(
    database: str, client: TestClient, created: list[str]
) -> None:
    with db.connect(database, autocommit=True) as conn:
        admin = tokens.create(conn, role="admin")
        mine = client.post("/api/v1/gateways", json={"cooperative": "coop-a"}, headers=auth(admin)).json()
        theirs = client.post("/api/v1/gateways", json={"cooperative": "coop-b"}, headers=auth(admin)).json()
        created += [mine["gateway_id"], theirs["gateway_id"]]
        coop_a = tokens.create(conn, role="cooperative", cooperative="coop-a")
        regulator = tokens.create(conn, role="regulator")
    own = client.post("/api/v1/gateways", json={"description": "冷库 2"}, headers=auth(coop_a))
    assert own.status_code == 201
    created.append(own.json()["gateway_id"])
    forbidden = client.post("/api/v1/gateways", json={"cooperative": "coop-b"}, headers=auth(coop_a))
    assert forbidden.status_code == 403 and forbidden.headers["content-type"] == "application/problem+json"
    listed = client.get("/api/v1/gateways", headers=auth(coop_a)).json()["items"]
    assert sorted(g["gateway_id"] for g in listed) == sorted([mine["gateway_id"], own.json()["gateway_id"]])
    for path in ("", "/latest", "/channels"):
        other = client.get(f"/api/v1/gateways/{theirs['gateway_id']}{path}", headers=auth(coop_a))
        assert other.status_code == 404, path
    assert (
        client.post(f"/api/v1/gateways/{theirs['gateway_id']}/disable", headers=auth(coop_a)).status_code
        == 404
    )
    assert (
        client.post("/api/v1/gateways", json={"cooperative": "x"}, headers=auth(regulator)).status_code == 403
    )
    assert len(client.get("/api/v1/gateways", headers=auth(regulator)).json()["items"]) == 3


def test_channel_readings_raw_paged_and_bucketed_with_limits(
    database: str, client: TestClient, created: list[str]
) -> None:
    with db.connect(database, autocommit=True) as conn:
        coop = conn.execute("INSERT INTO cooperatives (name) VALUES ('c') RETURNING id").fetchone()
        assert coop is not None
        gw = f"gw-{secrets.token_hex(4)}"
        conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gw, coop["id"]))
        ch = conn.execute(
            "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, 'room/temp', 'Cel') RETURNING id",
            (gw,),
        ).fetchone()
        assert ch is not None
        t0 = datetime(2026, 5, 1, tzinfo=UTC)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (time, channel_id, value) VALUES (%s, %s, %s)",
                [(t0 + timedelta(minutes=i), ch["id"], 10 + i % 5) for i in range(120)],
            )
        token = tokens.create(conn, role="regulator")
        admin = tokens.create(conn, role="admin")
    url = f"/api/v1/channels/{ch['id']}/readings"
    window = {"start": "2026-05-01T00:00:00Z", "end": "2026-05-02T00:00:00Z"}
    page = client.get(url, params={**window, "limit": 100}, headers=auth(token)).json()
    assert len(page["items"]) == 100 and page["next_after"]
    rest = client.get(
        url, params={**window, "limit": 100, "after": page["next_after"]}, headers=auth(token)
    ).json()
    assert len(rest["items"]) == 20 and rest["next_after"] is None
    hourly = client.get(url, params={**window, "bucket": "PT1H"}, headers=auth(token)).json()
    assert [b["count"] for b in hourly["items"]] == [60, 60]
    assert hourly["items"][0]["min"] == 10 and hourly["items"][0]["max"] == 14
    for bad in (
        {"start": "2026-05-02T00:00:00Z", "end": "2026-05-01T00:00:00Z"},
        {"start": "2026-01-01T00:00:00Z", "end": "2026-05-01T00:00:00Z"},  # too long for raw
        {**window, "bucket": "PT1S"},  # too many buckets
        {"start": "2026-05-01T00:00:00", "end": "2026-05-02T00:00:00"},  # no offset
        {**window, "bucket": "soon"},
    ):
        refused = client.get(url, params=bad, headers=auth(token))
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == "application/problem+json"
    described = client.patch(
        f"/api/v1/channels/{ch['id']}",
        json={"asset_kind": "cold_room", "asset_name": "冷库 1", "quantity": "temperature"},
        headers=auth(token),
    )
    assert described.status_code == 403  # regulators read; they do not describe channels
    described = client.patch(
        f"/api/v1/channels/{ch['id']}",
        json={"asset_kind": "cold_room", "asset_name": "冷库 1"},
        headers=auth(admin),
    )
    assert described.json()["asset_name"] == "冷库 1" and described.json()["unit"] == "Cel"
    assert (
        client.patch(
            f"/api/v1/channels/{ch['id']}", json={"asset_kind": "boat"}, headers=auth(admin)
        ).status_code
        == 422
    )


def test_a_taken_gateway_id_is_a_conflict_and_an_unknown_one_is_not_found(
    database: str, client: TestClient, created: list[str]
) -> None:
    with db.connect(database, autocommit=True) as conn:
        admin = tokens.create(conn, role="admin")
    gw = f"gw-{secrets.token_hex(4)}"
    body = {"cooperative": "coop", "gateway_id": gw}
    assert client.post("/api/v1/gateways", json=body, headers=auth(admin)).status_code == 201
    created.append(gw)
    again = client.post("/api/v1/gateways", json=body, headers=auth(admin))
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    bad = client.post("/api/v1/gateways", json={**body, "gateway_id": "Bad Id"}, headers=auth(admin))
    assert bad.status_code == 422
    missing = client.get("/api/v1/gateways/gw-nobody/latest", headers=auth(admin))
    assert missing.status_code == 404 and missing.json()["type"].endswith("/gateway-not-found")
    assert client.get("/api/v1/gateways").status_code == 401


def test_an_id_left_over_in_the_broker_is_refused_until_an_operator_removes_the_orphan(
    database: str, client: TestClient, created: list[str]
) -> None:
    # A broker client without a gateway row: a registration rolled back after the broker step, or a
    # database restored from an older backup. Nobody can prove it is theirs, so registering the id
    # is refused (409) and the client left as it is, until an operator removes it.
    gw = f"gw-left-{secrets.token_hex(4)}"
    created.append(gw)
    old_password = broker.new_password()
    with broker.admin_session() as dynsec:
        broker.provision_gateway(dynsec, gw, old_password)
    with db.connect(database, autocommit=True) as conn:
        admin = tokens.create(conn, role="admin")
    body = {"cooperative": "茶园合作社", "gateway_id": gw}
    refused = client.post("/api/v1/gateways", json=body, headers=auth(admin))
    assert refused.status_code == 409, refused.text
    assert can_connect(gw, old_password)
    subprocess.run(
        [AGRITRACE, "broker", "remove-orphan", gw],
        env=dict(os.environ, AGRITRACE_DATABASE_URL=database),
        check=True,
        capture_output=True,
        timeout=60,
    )
    made = client.post("/api/v1/gateways", json=body, headers=auth(admin))
    assert made.status_code == 201, made.text
    assert not can_connect(gw, old_password)
    assert can_connect(gw, made.json()["mqtt"]["password"])
    again = client.post("/api/v1/gateways", json=body, headers=auth(admin))
    assert again.status_code == 409


def test_a_cooperative_pages_through_its_gateways(database: str, client: TestClient) -> None:
    name = f"coop-{secrets.token_hex(4)}"
    with db.connect(database, autocommit=True) as conn:
        coop = conn.execute("INSERT INTO cooperatives (name) VALUES (%s) RETURNING id", (name,)).fetchone()
        assert coop is not None
        ids = sorted(f"gw-page-{secrets.token_hex(4)}" for _ in range(3))
        for gw in ids:
            conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gw, coop["id"]))
        token = tokens.create(conn, role="cooperative", cooperative=name)
    first = client.get("/api/v1/gateways", params={"limit": 2}, headers=auth(token)).json()
    assert [g["gateway_id"] for g in first["items"]] == ids[:2] and first["next_cursor"]
    rest = client.get(
        "/api/v1/gateways", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(token)
    ).json()
    assert [g["gateway_id"] for g in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    bad = client.get("/api/v1/gateways", params={"cursor": "not-ours"}, headers=auth(token))
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
