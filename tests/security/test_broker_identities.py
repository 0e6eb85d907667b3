"""Broker identities, tried as an attacker would: no tenant can create, reset or impersonate a service
account, and no gateway can connect as a worker or as another gateway (issue 12, items 1 and 2)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from test_ingest import Stack, count, publish_packs, wait_for

from agritrace import db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.devices import broker
from agritrace.mqtt import connect_blocking, connect_properties, new_client
from agritrace.settings import get_settings

AGRITRACE = str(Path(sys.executable).parent / "agritrace")
NOT_AUTHORIZED = 0x87  # MQTT 5 reason code, in CONNACK and PUBACK


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def bearer(conn: db.Conn, role: str, cooperative: str | None = None) -> dict[str, str]:
    if cooperative is not None:
        conn.execute("INSERT INTO cooperatives (name) VALUES (%s) ON CONFLICT DO NOTHING", (cooperative,))
    return {"Authorization": "Bearer " + tokens.create(conn, role=role, cooperative=cooperative)}


def connack(client_id: str, username: str, password: str, *, clean_start: bool = True) -> Any:
    """Tries to connect; returns the CONNACK reason code (the client is disconnected again)."""
    c = new_client(client_id, username=username, password=password)
    try:
        connect_blocking(
            c, get_settings(), clean_start=clean_start, properties=connect_properties(session_expiry=3600)
        )
    except ConnectionError as exc:
        return str(exc)
    c.disconnect()
    c.loop_stop()
    return "Success"


@pytest.mark.parametrize(
    "name",
    ["agritrace-ingest", "agritrace-ingest-1", "agritrace-admin", "agritrace-alerts", "agritrace", "alerts"],
)
def test_no_token_can_create_a_gateway_named_after_a_service_account(
    client: TestClient, conn: db.Conn, name: str
) -> None:
    for body, headers in (
        ({"gateway_id": name}, bearer(conn, "cooperative", "芒果合作社")),
        ({"gateway_id": name, "cooperative": "芒果合作社"}, bearer(conn, "admin")),
    ):
        r = client.post("/api/v1/gateways", json=body, headers=headers)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "password" not in r.json() and "mqtt" not in r.json()
    # Nor past the API: the database refuses the row, whoever writes it.
    coop = conn.execute("SELECT id FROM cooperatives WHERE name = '芒果合作社'").fetchone()
    assert coop is not None
    if name != "alerts":
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (name, coop["id"]))


def test_the_cli_refuses_a_service_account_name_and_changes_nothing(database: str) -> None:
    out = subprocess.run(
        [
            AGRITRACE,
            "gateways",
            "create",
            "--cooperative",
            "芒果合作社",
            "--id",
            "agritrace-ingest-1",
            "--json",
        ],
        env=dict(os.environ, AGRITRACE_DATABASE_URL=database),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "reserved" in (out.stdout + out.stderr)
    assert "password" not in out.stdout


def test_a_running_worker_keeps_its_account_when_a_tenant_asks_for_its_name(
    stack: Stack, client: TestClient, conn: db.Conn
) -> None:
    gw, password = stack.gateway()
    stack.start_worker(1)
    stack.wait_subscribed(gw, password)
    worker_account = broker.ingest_username(stack.worker_settings, 1)
    r = client.post(
        "/api/v1/gateways",
        json={"gateway_id": worker_account},
        headers=bearer(conn, "cooperative", "芒果合作社"),
    )
    assert r.status_code == 422
    # The worker still holds its session and stores what gateways send.
    publish_packs(gw, password, [[{"n": "temp", "u": "Cel", "v": 11.0, "t": time.time() - 5}]])
    wait_for(lambda: count(stack.database, "SELECT count(*) FROM readings") >= 2, timeout=30)


def test_provisioning_refuses_a_leftover_broker_client_instead_of_adopting_it(
    client: TestClient, conn: db.Conn
) -> None:
    # A broker client nobody registered (a registration rolled back after the broker step, an
    # account made by hand): the old code reset its password and handed it to the caller.
    orphan, old_password = f"gw-orphan-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with broker.admin_session() as dynsec:
        dynsec.run(
            {"command": "createClient", "username": orphan, "password": old_password, "clientid": orphan}
        )
    try:
        r = client.post(
            "/api/v1/gateways", json={"gateway_id": orphan}, headers=bearer(conn, "cooperative", "芒果合作社")
        )
        assert r.status_code == 409, r.text
        assert "password" not in r.text
        assert connack(orphan, orphan, old_password) == "Success"  # untouched
        assert conn.execute("SELECT 1 FROM gateways WHERE id = %s", (orphan,)).fetchone() is None
    finally:
        with broker.admin_session() as dynsec:
            broker.remove_gateway(dynsec, orphan)


def test_removing_an_orphan_never_touches_a_service_account(database: str) -> None:
    out = subprocess.run(
        [AGRITRACE, "broker", "remove-orphan", get_settings().mqtt_alerts_username],
        env=dict(os.environ, AGRITRACE_DATABASE_URL=database),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "reserved" in (out.stdout + out.stderr)


def test_a_gateway_cannot_connect_with_a_workers_client_id_and_nothing_is_lost(stack: Stack) -> None:
    attacker, attacker_pw = stack.gateway()
    victim, victim_pw = stack.gateway()
    stack.start_worker(1)
    stack.wait_subscribed(victim, victim_pw)
    worker_client_id = broker.ingest_username(stack.worker_settings, 1)
    # The old attack: the worker's client id with clean start off resumed its persistent session,
    # received every tenant's messages and auto-acked them away.
    assert "Not authorized" in connack(worker_client_id, attacker, attacker_pw, clean_start=False)
    t0 = time.time() - 3600
    packs = [[{"n": "coldroom/temp", "u": "Cel", "v": 10 + i / 100, "t": t0 + i}] for i in range(49)]
    publish_packs(victim, victim_pw, packs)
    query = "SELECT count(*) FROM readings r JOIN channels c ON c.id = r.channel_id WHERE c.name = 'coldroom/temp'"
    wait_for(lambda: count(stack.database, query) == 49, timeout=30)
    assert count(stack.database, "SELECT count(*) FROM dead_letters WHERE gateway_id = %s", (victim,)) == 0


def test_a_gateway_cannot_use_another_gateways_client_id_to_kick_it_off(stack: Stack) -> None:
    victim, victim_pw = stack.gateway()
    attacker, attacker_pw = stack.gateway()
    dropped = threading.Event()
    online = new_client(victim, username=victim, password=victim_pw)
    online.on_disconnect = lambda *_a: dropped.set()
    connect_blocking(online, get_settings())
    try:
        assert "Not authorized" in connack(victim, attacker, attacker_pw)
        # A takeover would have disconnected the victim at once (session taken over, 0x8E).
        assert not dropped.wait(2.0)
        assert online.is_connected()
    finally:
        online.disconnect()
        online.loop_stop()


def test_a_gateway_may_publish_only_on_its_own_pack_and_status_topics(stack: Stack) -> None:
    gw, pw = stack.gateway()
    assert _puback(gw, pw, f"agritrace/v1/{gw}/senml") < 0x80
    assert _puback(gw, pw, f"agritrace/v1/{gw}/senml/17") < 0x80
    for topic in (
        f"agritrace/v1/{gw}/SenML",
        f"agritrace/v1/{gw}/data",
        f"agritrace/v1/{gw}/senml/17/x",
        f"agritrace/v1/{gw}/receipts",
        f"agritrace/v1/alerts/{gw}/1",
    ):
        assert _puback(gw, pw, topic) == NOT_AUTHORIZED, topic


def test_workers_cannot_publish_alerts_and_the_alert_publisher_cannot_read_readings(
    stack: Stack, alerts_env: dict[str, str]
) -> None:
    settings = get_settings()
    gw, _pw = stack.gateway()
    # A worker's account, used by someone who read its password: forged alerts are refused.
    with broker.admin_session() as dynsec:
        broker.ensure_ingest_account(dynsec, stack.worker_settings, 9)
    worker = broker.ingest_username(stack.worker_settings, 9)
    try:
        ingest_pw = settings.mqtt_ingest_password.get_secret_value()
        assert _puback_as(worker, worker, ingest_pw, f"agritrace/v1/alerts/{gw}/1") == NOT_AUTHORIZED
    finally:
        with broker.admin_session() as dynsec:
            dynsec.run({"command": "deleteClient", "username": worker})
    # The alert publisher may publish alerts and read nothing.
    publisher = alerts_env["AGRITRACE_MQTT_ALERTS_USERNAME"]
    c = new_client(publisher, username=publisher, password=settings.mqtt_alerts_password.get_secret_value())
    granted: list[bool] = []
    done = threading.Event()

    def on_subscribe(_c: mqtt.Client, _u: Any, _m: int, codes: list[Any], _p: Any) -> None:
        granted.extend(not x.is_failure for x in codes)
        done.set()

    c.on_subscribe = on_subscribe
    connect_blocking(c, settings)
    try:
        c.subscribe([(f"agritrace/v1/{gw}/senml", 1), ("agritrace/v1/#", 1)])
        assert done.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    assert granted == [False, False]


def _puback_as(client_id: str, username: str, password: str, topic: str) -> int:
    c = new_client(client_id, username=username, password=password)
    codes: list[int] = []
    done = threading.Event()

    def on_publish(_c: mqtt.Client, _u: Any, _m: int, reason: Any, _p: Any) -> None:
        codes.append(int(reason.value))
        done.set()

    c.on_publish = on_publish
    connect_blocking(c, get_settings())
    try:
        c.publish(topic, b"{}", qos=1)
        assert done.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    return codes[0]


def _puback(gateway: str, password: str, topic: str) -> int:
    return _puback_as(gateway, gateway, password, topic)
