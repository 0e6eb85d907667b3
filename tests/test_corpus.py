"""Hostile input from gateways and API clients is refused with its reason, and nothing else changes.

Every file under tests/corpus/ is one case (see docs/reliability.md for the format): MQTT payloads
are published by a real gateway to the shared broker and judged by a real ingest worker of this
module's own group; HTTP requests go to the real app with a real token of the case's role.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from test_ingest import Stack, wait_for

from agritrace import db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.api.problems import PROBLEM_BASE
from agritrace.mqtt import new_client
from agritrace.settings import get_settings
from agritrace.trace import service as trace_service

CORPUS = Path(__file__).parent / "corpus"
MQTT_CASES = sorted((CORPUS / "mqtt").glob("*.json"))
HTTP_CASES = sorted((CORPUS / "http").glob("*.json"))
# PUBACK reason codes (MQTT 5, section 3.4.2.1).
NO_MATCHING_SUBSCRIBERS = 0x10
NOT_AUTHORIZED = 0x87


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def payload_of(case: dict[str, Any], prefix: str) -> bytes | None:
    """The case's raw bytes: text, base64, or a pattern (so a 10 MB case is a small file)."""
    if f"{prefix}_base64" in case:
        return base64.b64decode(str(case[f"{prefix}_base64"]))
    if f"{prefix}_pattern" in case:
        p = case[f"{prefix}_pattern"]
        text = str(p["prefix"]) + str(p["repeat"]) * int(p["times"]) + str(p["suffix"])
        return text.encode("utf-8", "surrogatepass")
    if prefix in case:
        return str(case[prefix]).encode("utf-8", "surrogatepass")
    return None


def row_counts(database: str) -> dict[str, int]:
    """Rows in every table of ours: the before/after picture of 'nothing else changed'."""
    with db.connect(database, autocommit=True) as conn:
        tables = [
            str(r["tablename"])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'"
            ).fetchall()
        ]
        counts = {}
        for t in sorted(tables):
            query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(t))
            if t == "dead_letters":
                # Other test runs' gateways publish on the shared broker, and every ingest group gets
                # their messages: unknown to this database, they are dead-lettered here. Not ours.
                query += sql.SQL(" WHERE reason NOT IN ('unknown-gateway', 'unknown-topic')")
            row = conn.execute(query).fetchone()
            assert row is not None
            counts[t] = int(row["n"])
    return counts


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}


@pytest.fixture(autouse=True)
def clean_database() -> None:
    """Overrides the per-test truncation: the cases share one world, emptied once at the end."""


@dataclass
class World:
    database: str
    tag: str
    cooperative: str
    batch_id: int
    headers: dict[str | None, dict[str, str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(database: str) -> Iterator[World]:
    tag = secrets.token_hex(3)
    with db.connect(database, autocommit=True) as conn:
        name = f"corpus-coop-{tag}"
        coop = trace_service.ensure_cooperative(conn, name=name)
        batch = trace_service.create_batch(
            conn, product="mango", cooperative_id=coop, variety="台农一号", harvest_date=date(2026, 7, 10)
        )
        w = World(database, tag, name, int(batch["id"]))
        w.headers[None] = {}
        for role in ("admin", "regulator", "cooperative"):
            token = tokens.create(conn, role=role, cooperative=name if role == "cooperative" else None)
            w.headers[role] = {"Authorization": f"Bearer {token}"}
    yield w
    with db.connect(db.owner_url(database), autocommit=True) as conn:
        tables = [
            str(r["tablename"])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'"
            ).fetchall()
        ]
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            )
        )


# --- MQTT ---------------------------------------------------------------------------------------


@dataclass
class Ingest:
    stack: Stack
    gateway: str
    password: str
    control_delta: dict[str, int]


@dataclass
class Sent:
    """What the broker said about one publish: its PUBACK reason, or that it dropped us."""

    puback: int | None = None
    disconnected: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def publish(gateway: str, password: str, topic: str, payload: bytes) -> Sent:
    """Publishes one QoS 1 message as the gateway and waits for the PUBACK or the disconnect."""
    sent = Sent()
    client = new_client(gateway, username=gateway, password=password)  # client id pinned to the gateway id

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        sent.puback = int(reason.value)
        sent.done.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        sent.disconnected = True
        sent.done.set()

    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    settings = get_settings()
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        assert connected.wait(10), "the gateway could not connect"
        client.publish(topic, payload, qos=1)
        sent.done.wait(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def control(ingest: Ingest, name: str) -> None:
    """A good reading on the gateway's own topic: it must be stored whatever came before it."""
    sent = publish(
        ingest.gateway,
        ingest.password,
        f"agritrace/v1/{ingest.gateway}/senml",
        json.dumps([{"n": name, "v": 1.5, "u": "Cel"}]).encode(),
    )
    assert sent.puback == 0


def channel_stored(database: str, gateway: str, name: str) -> bool:
    with db.connect(database, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) AS n FROM readings r JOIN channels c ON c.id = r.channel_id
                WHERE c.gateway_id = %s AND c.name = %s""",
            (gateway, name),
        ).fetchone()
    return row is not None and int(row["n"]) == 1


@pytest.fixture(scope="module")
def ingest(world: World) -> Iterator[Ingest]:
    stack = Stack(world.database)
    try:
        stack.start_worker(1)
        gateway, password = stack.gateway(cooperative=world.cooperative)
        stack.wait_subscribed(gateway, password)
        probe = Ingest(stack, gateway, password, {})
        # What two good messages change (readings, channels, their audit rows...): each case adds
        # exactly this, and its dead letter, and nothing else.
        before = row_counts(world.database)
        for suffix in ("a", "b"):
            control(probe, f"calibrate/{suffix}")
        wait_for(lambda: channel_stored(world.database, gateway, "calibrate/b"), timeout=30)
        time.sleep(0.3)
        probe.control_delta = delta(before, row_counts(world.database))
        yield probe
    finally:
        stack.close()


@pytest.mark.parametrize("path", MQTT_CASES, ids=[p.stem for p in MQTT_CASES])
def test_hostile_mqtt_payload_is_dead_lettered_or_refused_and_nothing_else_changes(
    path: Path, world: World, ingest: Ingest
) -> None:
    case = load(path)
    payload = payload_of(case, "payload")
    assert payload is not None
    expect = case["expect"]
    gw = ingest.gateway
    topic = case.get("topic_absolute") or f"agritrace/v1/{gw}/{case['topic']}"
    marker = path.stem.replace("-", "_")[:150]
    before = row_counts(world.database)

    control(ingest, f"ctl/{marker}/before")
    sent = publish(gw, ingest.password, topic, payload)
    control(ingest, f"ctl/{marker}/after")
    wait_for(lambda: channel_stored(world.database, gw, f"ctl/{marker}/after"), timeout=30)

    expected = dict(ingest.control_delta)
    if "dead_letter" in expect:
        assert sent.puback == 0, f"the broker refused it ({sent})"
        expected["dead_letters"] = expected.get("dead_letters", 0) + 1
        wait_for(
            lambda: row_counts(world.database).get("dead_letters", 0) > before.get("dead_letters", 0),
            timeout=30,
        )
        with db.connect(world.database, autocommit=True) as conn:
            letter = conn.execute(
                """SELECT topic, gateway_id, reason, payload FROM dead_letters
                    WHERE gateway_id = %s ORDER BY id DESC LIMIT 1""",
                (gw,),
            ).fetchone()
        assert letter is not None
        assert letter["reason"] == expect["dead_letter"]
        assert (letter["topic"], letter["gateway_id"]) == (topic, gw)
        assert bytes(letter["payload"]) == payload  # kept as it came, for the gateway's owner to see
    elif expect.get("dropped") == "no-matching-subscribers":
        assert sent.puback == NO_MATCHING_SUBSCRIBERS
    elif expect["refused"] == "not-authorized":
        assert sent.puback == NOT_AUTHORIZED
    else:
        assert expect["refused"] == "disconnected"
        assert sent.disconnected and sent.puback is None
    time.sleep(0.2)  # a wrong extra row would come with the marker's batch, not after it
    assert delta(before, row_counts(world.database)) == expected


# --- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app()
    app.state.public_rate_limiter.burst = 1_000_000  # the rate limit has tests of its own
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def fill(value: Any, world: World) -> Any:
    """Puts the world's ids in place of {batch} and {coop} in a case's strings."""
    if isinstance(value, str):
        return value.replace("{batch}", str(world.batch_id)).replace("{coop}", world.cooperative)
    if isinstance(value, list):
        return [fill(v, world) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize("path", HTTP_CASES, ids=[p.stem for p in HTTP_CASES])
def test_hostile_http_request_is_refused_with_a_problem_and_nothing_changes(
    path: Path, world: World, client: TestClient
) -> None:
    case = load(path)
    headers = {**world.headers[case["role"]], **case.get("headers", {})}
    if "json" in case:
        body: bytes | None = json.dumps(fill(case["json"], world)).encode()
        headers.setdefault("content-type", "application/json")
    else:
        raw = payload_of(case, "body")
        body = (
            fill(raw.decode("utf-8", "surrogateescape"), world).encode("utf-8", "surrogateescape")
            if raw
            else None
        )
    before = row_counts(world.database)
    response = client.request(case["method"], fill(case["path"], world), content=body, headers=headers)
    expect = case["expect"]
    assert response.status_code == expect["status"], response.text[:500]
    assert response.headers["content-type"].startswith(expect.get("content_type", "application/problem+json"))
    if "type" in expect:
        assert response.json()["type"] == PROBLEM_BASE + expect["type"]
    # A refusal changes nothing; an accepted hostile value (SQL in a free-text field is just text)
    # changes exactly the rows it names and is stored byte for byte.
    assert delta(before, row_counts(world.database)) == expect.get("changes", {})
    with db.connect(world.database, autocommit=True) as conn:
        for stored in expect.get("stored", []):
            query = sql.SQL("SELECT count(*) AS n FROM {} WHERE {} = %s").format(
                sql.Identifier(stored["table"]), sql.Identifier(stored["column"])
            )
            row = conn.execute(query, (stored["value"],)).fetchone()
            assert row is not None and row["n"] == 1, stored
