"""Alert feeds per audience (issue 14), with the real broker and real clients (mosquitto_sub,
mosquitto_pub): a cooperative's feed reads its own gateways' alerts only (a gateway added later
included), a regulator's reads every alert and can publish nothing."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import factories
import pytest
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.coldchain import feeds
from agritrace.db import Conn
from agritrace.devices import broker, service
from agritrace.settings import get_settings

AGRITRACE = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "agritrace"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def bearer(conn: Conn, role: str, cooperative: str | None = None) -> dict[str, str]:
    return {"Authorization": "Bearer " + tokens.create(conn, role=role, cooperative=cooperative)}


def gateway(conn: Conn, cooperative_id: int) -> str:
    """A gateway provisioned as the API and CLI do (its broker client, its cooperative's feed ACLs)."""
    with broker.admin_session() as dynsec:
        gw, _ = service.create_gateway(conn, dynsec=dynsec, cooperative_id=cooperative_id)
    return gw


def _mqtt(*args: str) -> list[str]:
    s = get_settings()
    return ["-h", s.mqtt_host, "-p", str(s.mqtt_port), "-V", "mqttv5", *args]


def read(feed: dict[str, Any], *topics: str) -> set[str]:
    """What a feed account receives within 3 s (retained messages) on these subscriptions."""
    subs = [x for t in topics for x in ("-t", t)]
    args = ["-i", feed["client_id"], "-u", feed["username"], "-P", feed["password"], "-v", "-W", "3", *subs]
    out = subprocess.run(["mosquitto_sub", *_mqtt(*args)], capture_output=True, text=True, timeout=20)
    return {line.split(" ", 1)[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture
def publisher() -> Iterator[dict[str, str]]:
    """A test run's own alert publisher account (as `agritrace alerts run` uses)."""
    s = get_settings()
    username = f"agritrace-alerts-t{secrets.token_hex(4)}"
    with broker.admin_session() as dynsec:
        broker.ensure_alerts_account(dynsec, s.model_copy(update={"mqtt_alerts_username": username}))
    yield {"username": username, "password": s.mqtt_alerts_password.get_secret_value()}
    with broker.admin_session() as dynsec:
        dynsec.run({"command": "deleteClient", "username": username}, tolerate=("not found",))


def publish(account: dict[str, str], topic: str, payload: str) -> None:
    args = ["-i", account["username"], "-u", account["username"], "-P", account["password"]]
    subprocess.run(
        ["mosquitto_pub", *_mqtt(*args, "-t", topic, "-m", payload, "-r", "-q", "1")], check=True, timeout=20
    )


def test_a_cooperatives_feed_reads_only_its_gateways_alerts_and_a_regulators_reads_all_and_publishes_nothing(
    conn: Conn, client: TestClient, publisher: dict[str, str], database: str
) -> None:
    a, b = factories.cooperative(conn), factories.cooperative(conn)
    gw_a, gw_b = gateway(conn, a["id"]), gateway(conn, b["id"])
    made: list[str] = []
    try:
        # The cooperative makes its own feed; another cooperative cannot, nor can a regulator.
        r = client.post(
            "/api/v1/coldchain/alert-feeds",
            json={"cooperative": a["name"]},
            headers=bearer(conn, "regulator"),
        )
        assert r.status_code == 403
        theirs = bearer(conn, "cooperative", b["name"])
        r = client.post("/api/v1/coldchain/alert-feeds", json={"cooperative": a["name"]}, headers=theirs)
        assert r.status_code == 404
        r = client.post(
            "/api/v1/coldchain/alert-feeds",
            json={"cooperative": a["name"]},
            headers=bearer(conn, "cooperative", a["name"]),
        )
        assert r.status_code == 201, r.text
        feed_a = r.json()
        made.append(feed_a["username"])
        assert feed_a["username"].startswith("agritrace-") and feed_a["client_id"] == feed_a["username"]
        r = client.post(
            "/api/v1/coldchain/alert-feeds", json={"cooperative": a["name"]}, headers=bearer(conn, "admin")
        )
        assert r.status_code == 409
        # A regulator's feed from the CLI.
        name = f"bureau-{secrets.token_hex(3)}"
        env = {**os.environ, "AGRITRACE_DATABASE_URL": database}
        out = subprocess.run(
            [str(AGRITRACE), "broker", "alert-feed", "--regulator", name],
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        regulator = json.loads(out.stdout)
        made.append(regulator["username"])
        again = subprocess.run(
            [str(AGRITRACE), "broker", "alert-feed", "--regulator", name],
            env=env,
            capture_output=True,
            text=True,
        )
        assert again.returncode != 0 and "already has a client" in again.stderr

        gw_a2 = gateway(conn, a["id"])  # added after the feed was made
        topics = {gw: f"agritrace/v1/alerts/{gw}/{n}" for n, gw in enumerate((gw_a, gw_a2, gw_b), start=1)}
        for gw, topic in topics.items():
            publish(publisher, topic, json.dumps({"gateway_id": gw}))

        assert read(feed_a, f"agritrace/v1/alerts/{gw_a}/#", f"agritrace/v1/alerts/{gw_a2}/#") == {
            topics[gw_a],
            topics[gw_a2],
        }
        # Not by asking for everything, nor for the other cooperative's gateway by name.
        assert read(feed_a, "agritrace/v1/alerts/#") <= {topics[gw_a], topics[gw_a2]}
        assert read(feed_a, f"agritrace/v1/alerts/{gw_b}/#", "#") <= {topics[gw_a], topics[gw_a2]}
        assert topics[gw_b] not in read(feed_a, "agritrace/v1/alerts/+/+", f"agritrace/v1/alerts/{gw_b}/3")
        # Nor readings, nor anything but alerts.
        assert read(feed_a, f"agritrace/v1/{gw_a}/senml") == set()

        # The regulator reads all; what it publishes goes nowhere.
        assert set(topics.values()) <= read(regulator, "agritrace/v1/alerts/#")
        forged = f"agritrace/v1/alerts/{gw_a}/999999"
        publish(regulator, forged, '{"status": "resolved"}')
        publish(feed_a, forged, '{"status": "resolved"}')
        assert forged not in read(regulator, "agritrace/v1/alerts/#")
    finally:
        with broker.admin_session() as dynsec:
            for username in made:
                dynsec.run({"command": "deleteClient", "username": username}, tolerate=("not found",))
            for c in (a, b):
                dynsec.run(
                    {"command": "deleteRole", "rolename": feeds.cooperative_role(c["id"])},
                    tolerate=("not found",),
                )
        for gw in locals().get("topics", {}):
            publish(publisher, topics[gw], "")  # clear the retained messages
