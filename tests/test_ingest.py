"""Gateways publish over MQTT; the ingest worker stores every reading once, even when it is killed."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from agritrace import db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.devices import broker, service
from agritrace.ingest import retention
from agritrace.ingest import simulate as sim
from agritrace.mqtt import connect_blocking, connect_properties, new_client
from agritrace.settings import get_settings

AGRITRACE = str(Path(sys.executable).parent / "agritrace")


class Stack:
    """Gateways provisioned on the shared broker and ingest workers of this test's own group."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.tag = secrets.token_hex(4)
        # The workers' own broker accounts, in the reserved namespace (made by start_worker).
        self.prefix = f"agritrace-ingest-t{self.tag}"
        self.worker_settings = get_settings().model_copy(update={"ingest_client_prefix": self.prefix})
        self.started = time.time()
        self.gateways: list[str] = []
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"agritrace-test-ingest-{self.tag}.log"
        self.env = dict(
            os.environ,
            AGRITRACE_DATABASE_URL=database,
            AGRITRACE_INGEST_GROUP=f"test-{self.tag}",
            AGRITRACE_INGEST_CLIENT_PREFIX=self.prefix,
            AGRITRACE_INGEST_SESSION_EXPIRY="120",
            AGRITRACE_INGEST_METRICS_PORT="0",
            AGRITRACE_INGEST_FLUSH_INTERVAL="0.05",
        )

    def gateway(self, cooperative: str = "芒果合作社") -> tuple[str, str]:
        """Creates a gateway through the service (as the CLI does); returns (id, password)."""
        with db.connect(self.database) as conn, broker.admin_session() as dynsec:
            coop = service.get_or_create_cooperative(conn, name=cooperative)
            gw, password = service.create_gateway(
                conn, dynsec=dynsec, cooperative_id=coop, gateway_id=f"gw-{secrets.token_hex(5)}"
            )
            conn.commit()
        self.gateways.append(gw)
        return gw, password

    def start_worker(self, worker_id: int, **env: str) -> subprocess.Popen[bytes]:
        with broker.admin_session() as dynsec:
            broker.ensure_ingest_account(dynsec, self.worker_settings, worker_id)
        proc = subprocess.Popen(
            [AGRITRACE, "ingest", "run", "--worker-id", str(worker_id)],
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the child holds it
        )
        self.workers[worker_id] = proc
        return proc

    def wait_subscribed(self, gateway: str, password: str) -> None:
        """Waits until a worker stores a probe reading (its subscription is live)."""
        # Published again until stored: a message sent before the subscription exists is not queued.
        # Always the same time, so the probe is one reading however often it is sent.
        probe = [{"n": "probe", "v": 0, "u": "/", "t": self.started}]
        query = "SELECT count(*) FROM channels WHERE name = 'probe' AND gateway_id = %s"
        for _ in range(60):
            publish_packs(gateway, password, [probe])
            try:
                wait_for(lambda: count(self.database, query, (gateway,)) >= 1, timeout=1)
                return
            except AssertionError:
                continue
        raise AssertionError(f"no worker stored the probe; see {self.log}")

    def close(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        settings = get_settings()
        # Drop the workers' persistent sessions, so the shared broker stops queueing for them.
        for worker_id in self.workers:
            username = broker.ingest_username(self.worker_settings, worker_id)
            client = new_client(
                username, username=username, password=settings.mqtt_ingest_password.get_secret_value()
            )
            try:
                connect_blocking(client, settings, clean_start=True, properties=connect_properties())
            except ConnectionError:
                continue
            client.disconnect()
            client.loop_stop()
        with broker.admin_session() as dynsec:
            for gw in self.gateways:
                broker.remove_gateway(dynsec, gw)
            for worker_id in self.workers:
                username = broker.ingest_username(self.worker_settings, worker_id)
                dynsec.run({"command": "deleteClient", "username": username}, tolerate=("not found",))


@pytest.fixture
def stack(database: str) -> Iterator[Stack]:
    s = Stack(database)
    try:
        yield s
    finally:
        s.close()


def count(database: str, query: str, params: tuple[Any, ...] = ()) -> int:
    with db.connect(database, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def gateway_client(gateway: str, password: str, **kwargs: Any) -> mqtt.Client:
    client = new_client(gateway, username=gateway, password=password, **kwargs)
    connect_blocking(client, get_settings())
    return client


def publish_packs(gateway: str, password: str, packs: list[Any], *, topic: str | None = None) -> list[Any]:
    """Publishes packs at QoS 1 as the gateway; returns each PUBACK's reason code."""
    client = gateway_client(gateway, password)
    infos = [
        client.publish(
            topic or f"agritrace/v1/{gateway}/senml", p if isinstance(p, bytes) else json.dumps(p), qos=1
        )
        for p in packs
    ]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    return infos


def stream(
    gateway: str,
    password: str,
    *,
    packs: int,
    per_pack: int,
    start: float,
    stop: threading.Event | None = None,
) -> int:
    """Publishes `packs` packs of distinct readings (one per second per pack); returns how many were sent."""
    client = gateway_client(gateway, password)
    sent = 0
    for i in range(packs):
        pack: list[dict[str, Any]] = [{"bn": "room/", "bt": start + i, "bu": "Cel"}]
        pack += [{"n": f"t{j}", "v": 10 + j / 10} for j in range(per_pack)]
        client.publish(f"agritrace/v1/{gateway}/senml", json.dumps(pack), qos=1).wait_for_publish(10)
        sent += per_pack
    client.disconnect()
    client.loop_stop()
    return sent


def test_gateway_publishes_with_mosquitto_pub_and_readings_come_back_from_the_api(
    stack: Stack, database: str
) -> None:
    stack.start_worker(1)
    gw, password = stack.gateway(cooperative="百色芒果合作社")
    stack.wait_subscribed(gw, password)
    settings = get_settings()
    now = time.time()
    pack = [
        {"bn": "coldroom1/", "bt": now, "bu": "Cel", "n": "temp", "v": 11.8},
        {"n": "rh", "u": "%RH", "v": 91},
        {"n": "temp", "v": 11.6, "t": -60},
    ]
    result = subprocess.run(
        ["mosquitto_pub", "-h", settings.mqtt_host, "-p", str(settings.mqtt_port), "-V", "mqttv5", "-q", "1",
         "-i", f"{gw}", "-u", gw, "-P", password, "-t", f"agritrace/v1/{gw}/senml", "-m", json.dumps(pack)],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_for(lambda: count(database, "SELECT count(*) FROM readings") == 4)
    with db.connect(database, autocommit=True) as conn:
        token = tokens.create(conn, role="admin")
    with TestClient(create_app()) as client:
        latest = client.get(f"/api/v1/gateways/{gw}/latest", headers={"Authorization": f"Bearer {token}"})
        assert latest.status_code == 200
        body = latest.json()
        assert [(r["name"], r["value"], r["unit"]) for r in body] == [
            ("coldroom1/rh", 91, "%RH"),
            ("coldroom1/temp", 11.8, "Cel"),
            ("probe", 0, "/"),
        ]
        assert set(body[0]) == {"name", "time", "value", "unit"}
        channels = client.get(
            f"/api/v1/gateways/{gw}/channels", headers={"Authorization": f"Bearer {token}"}
        ).json()
        temp = next(c for c in channels["items"] if c["name"] == "coldroom1/temp")
        readings = client.get(
            f"/api/v1/channels/{temp['id']}/readings",
            params={"start": "2026-01-01T00:00:00Z", "end": "2028-01-01T00:00:00Z", "bucket": "P366D"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert readings.status_code == 200, readings.text
        assert readings.json()["items"][0]["count"] == 2


def test_publishing_under_another_gateways_topic_is_refused_and_nothing_stored(
    stack: Stack, database: str
) -> None:
    stack.start_worker(1)
    gw_a, pw_a = stack.gateway()
    gw_b, _pw_b = stack.gateway()
    stack.wait_subscribed(gw_a, pw_a)
    pack = [{"n": "temp", "v": 30, "u": "Cel"}]
    (info,) = publish_packs(gw_a, pw_a, [pack], topic=f"agritrace/v1/{gw_b}/senml")
    assert info.rc == mqtt.MQTT_ERR_SUCCESS  # the publish went out; the broker drops it (0x87 in PUBACK)
    publish_packs(gw_a, pw_a, [[{"n": "after", "v": 1, "u": "/"}]])  # a marker behind it, on its own topic
    wait_for(lambda: count(database, "SELECT count(*) FROM channels WHERE name = 'after'") == 1)
    assert count(database, "SELECT count(*) FROM channels WHERE gateway_id = %s", (gw_b,)) == 0
    # (Other test runs on the shared broker may leave unknown-gateway dead letters: look at ours only.)
    assert (
        count(database, "SELECT count(*) FROM dead_letters WHERE gateway_id IN (%s, %s)", (gw_a, gw_b)) == 0
    )


def test_wrong_password_is_refused_by_the_broker(stack: Stack) -> None:
    gw, _password = stack.gateway()
    with pytest.raises(ConnectionError):
        gateway_client(gw, "not-" + secrets.token_hex(8))


def test_duplicates_are_stored_once_and_latest_is_by_timestamp_not_arrival(
    stack: Stack, database: str
) -> None:
    stack.start_worker(1)
    gw, password = stack.gateway()
    stack.wait_subscribed(gw, password)
    now = time.time()
    newest = [{"n": "truck/temp", "v": 12.0, "t": now, "u": "Cel"}]
    older = [{"n": "truck/temp", "v": 9.0, "t": now - 600, "u": "Cel"}]
    publish_packs(gw, password, [newest, older, newest, older + newest])  # store-and-forward resends
    wait_for(lambda: count(database, "SELECT count(*) FROM channels WHERE name = 'truck/temp'") == 1)
    time.sleep(0.5)
    assert count(database, "SELECT count(*) FROM readings") == 2 + 1  # and the probe
    assert (
        count(
            database, "SELECT count(*) FROM channels WHERE last_value = 12.0 AND last_ingested_at IS NOT NULL"
        )
        == 1
    )
    # The dashboards' rollup is told to re-aggregate from the older, late reading.
    late = f"SELECT count(*) FROM channels WHERE name = 'truck/temp' AND rollup_from < to_timestamp({now - 300:.0f})"
    assert count(database, late) == 1


def test_reading_times_are_stored_to_the_microsecond_as_sent(stack: Stack, database: str) -> None:
    # The worker writes PostgreSQL's binary COPY format itself: its time encoding must agree with
    # datetime.fromtimestamp() for whole, fractional and half-microsecond times.
    stack.start_worker(1)
    gw, password = stack.gateway()
    stack.wait_subscribed(gw, password)
    base = float(int(time.time()) - 3600)
    offsets = [0, 0.1, 0.1234565, 0.9999995, 2.0000005, 59.999999, 120.5]
    pack: list[dict[str, Any]] = [{"bn": "room/", "bt": base, "bu": "Cel"}]
    pack += [{"n": "temp", "t": dt, "v": float(i)} for i, dt in enumerate(offsets)]
    publish_packs(gw, password, [pack])
    wait_for(lambda: count(database, "SELECT count(*) FROM channels WHERE name = 'room/temp'") == 1)
    wait_for(
        lambda: (
            count(
                database,
                "SELECT count(*) FROM readings r JOIN channels c ON c.id = r.channel_id WHERE c.name = 'room/temp'",
            )
            == len(offsets)
        )
    )
    with db.connect(database) as conn:
        stored = conn.execute(
            """SELECT r.time, r.value, c.last_time, c.last_value FROM readings r
                 JOIN channels c ON c.id = r.channel_id WHERE c.name = 'room/temp' ORDER BY r.value"""
        ).fetchall()
    assert [r["time"] for r in stored] == [datetime.fromtimestamp(base + dt, UTC) for dt in offsets]
    assert stored[0]["last_time"] == datetime.fromtimestamp(base + offsets[-1], UTC)
    assert stored[0]["last_value"] == len(offsets) - 1


def test_each_kind_of_bad_message_is_dead_lettered_with_its_reason_and_good_ones_around_it_are_stored(
    stack: Stack, database: str
) -> None:
    stack.start_worker(1)
    gw, password = stack.gateway()
    stack.wait_subscribed(gw, password)
    now = time.time()

    def good(i: int) -> list[dict[str, Any]]:
        return [{"n": f"good{i}", "v": i, "u": "Cel", "t": now}]

    bad = {
        "not-json": b"{not json",
        "not-senml": b'{"n": "temp", "v": 1}',
        "wrong-type": b'[{"n": "temp", "v": "12.5"}]',
        "not-finite": b'[{"n": "temp", "v": NaN}]',
        "time-out-of-window": json.dumps([{"n": "temp", "v": 1, "t": now + 86400 * 365}]).encode(),
        "unknown-unit": b'[{"n": "temp", "v": 1, "u": "fahrenheit"}]',
        # 326 kB and 12,000 records: over the worker's limits, under the broker's 512 KiB packets.
        "oversize": json.dumps([{"n": f"x{i}", "v": i} for i in range(12000)]).encode(),
        "bad-name": b'[{"n": "temp in room", "v": 1}]',
    }
    packs: list[Any] = []
    for i, payload in enumerate(bad.values()):
        packs += [good(i), payload]
    packs.append(good(len(bad)))
    publish_packs(gw, password, packs)
    publish_packs(gw, password, [b"maybe"], topic=f"agritrace/v1/{gw}/status")
    ours = "SELECT count(*) FROM dead_letters WHERE gateway_id = %s"
    wait_for(lambda: count(database, ours, (gw,)) == len(bad) + 1)
    wait_for(lambda: count(database, "SELECT count(*) FROM readings") == len(bad) + 1 + 1)  # and the probe
    with db.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT topic, gateway_id, reason, payload FROM dead_letters WHERE gateway_id = %s", (gw,)
        ).fetchall()
    assert sorted(r["reason"] for r in rows) == sorted([*bad, "bad-status"])
    by_reason = {r["reason"]: r for r in rows}
    assert by_reason["not-json"]["payload"] == b"{not json"
    assert by_reason["not-json"]["topic"] == f"agritrace/v1/{gw}/senml"
    assert all(r["topic"].startswith(f"agritrace/v1/{gw}/") for r in rows)


def test_gateway_online_state_follows_birth_and_will(stack: Stack, database: str) -> None:
    stack.start_worker(1)
    gw, password = stack.gateway()
    stack.wait_subscribed(gw, password)
    client = new_client(gw, username=gw, password=password)
    client.will_set(f"agritrace/v1/{gw}/status", "offline", qos=1)
    connect_blocking(client, get_settings())
    client.publish(f"agritrace/v1/{gw}/status", "online", qos=1).wait_for_publish(10)
    online = "SELECT count(*) FROM gateways WHERE id = %s AND online AND last_seen IS NOT NULL"
    wait_for(lambda: count(database, online, (gw,)) == 1)
    client._sock_close()  # an ungraceful drop: the broker publishes the will  # type: ignore[attr-defined]
    client.loop_stop()
    wait_for(
        lambda: count(database, "SELECT count(*) FROM gateways WHERE id = %s AND NOT online", (gw,)) == 1
    )


@pytest.mark.slow
def test_worker_killed_mid_stream_is_restarted_and_every_reading_is_stored_exactly_once(
    stack: Stack, database: str
) -> None:
    worker = stack.start_worker(1)
    gw, password = stack.gateway()
    stack.wait_subscribed(gw, password)
    start = time.time() - 3600
    sent: list[int] = []
    publisher = threading.Thread(
        target=lambda: sent.append(stream(gw, password, packs=2000, per_pack=20, start=start))
    )
    publisher.start()
    wait_for(lambda: count(database, "SELECT count(*) FROM readings") > 2000, timeout=60)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    time.sleep(1)
    stack.start_worker(1)  # the same client id: the broker redelivers what the killed session held
    publisher.join(120)
    expected = sent[0] + 1  # and the probe
    wait_for(lambda: count(database, "SELECT count(*) FROM readings") >= expected, timeout=120)
    time.sleep(1)
    assert count(database, "SELECT count(*) FROM readings") == expected


@pytest.mark.slow
def test_two_workers_share_the_load_and_killing_one_loses_nothing_and_doubles_nothing(
    stack: Stack, database: str
) -> None:
    stack.start_worker(1)
    victim = stack.start_worker(2)
    gateways = [stack.gateway() for _ in range(2)]
    for gw, password in gateways:
        stack.wait_subscribed(gw, password)
    start = time.time() - 3600
    sent: list[int] = []
    publishers = [
        threading.Thread(
            target=lambda g=g, p=p: sent.append(stream(g, p, packs=1500, per_pack=20, start=start))
        )
        for g, p in gateways
    ]
    for t in publishers:
        t.start()
    wait_for(lambda: count(database, "SELECT count(*) FROM readings") > 3000, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    for t in publishers:
        t.join(120)
    # Messages in flight to (or queued for) the killed session stay with it until that client id
    # reconnects: restart worker 2 with the same id.
    stack.start_worker(2)
    expected = sum(sent) + len(gateways)
    wait_for(lambda: count(database, "SELECT count(*) FROM readings") >= expected, timeout=120)
    time.sleep(1)
    assert count(database, "SELECT count(*) FROM readings") == expected


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A demo of our own on the shared broker (unique ids), removed afterwards."""
    prefix = f"t{secrets.token_hex(3)}"
    yield prefix, tmp_path / "simulator-gateways.json"
    with broker.admin_session() as dynsec:
        for demo_id, _coop, _kind in sim.DEMO:
            broker.remove_gateway(dynsec, demo_id.replace("demo", prefix, 1))


def test_demo_provisions_once_keeps_credentials_private_and_its_readings_are_ingested(
    database: str, demo: tuple[str, Path]
) -> None:
    prefix, path = demo
    settings = get_settings()
    first = sim.demo_gateways(settings, path, prefix=prefix)
    again = sim.demo_gateways(settings, path, prefix=prefix)
    assert [(g.gateway_id, g.password) for g in first] == [(g.gateway_id, g.password) for g in again]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stack = Stack(database)
    try:
        stack.start_worker(1)
        stack.wait_subscribed(first[0].gateway_id, first[0].password)
        # The first gateway is offline for the first rounds and then forwards what it stored.
        first[0].offline_until = time.time() + 0.5
        sent = sim.run(
            first, settings, interval=0.2, rounds=5, excursions=[], dropout=0, seed=1, stop=threading.Event()
        )
        assert sent == 5 * len(first)
        expected = sum(len(sim.KINDS[g.kind][1]) for g in first) * 5 + 1  # and the probe
        wait_for(lambda: count(database, "SELECT count(*) FROM readings") == expected)
        online = count(
            database, "SELECT count(*) FROM gateways WHERE online AND id LIKE %s", (prefix + "-%",)
        )
        assert online == len(sim.DEMO)
    finally:
        stack.close()


def test_retention_drops_chunks_older_than_the_period_unless_a_guard_holds_them(database: str) -> None:
    with db.connect(database, autocommit=True) as conn:
        coop = service.get_or_create_cooperative(conn, name="c")
        conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES ('gw-retention', %s)", (coop,))
        ch = conn.execute(
            "INSERT INTO channels (gateway_id, name) VALUES ('gw-retention', 't') RETURNING id"
        ).fetchone()
        assert ch is not None
        conn.execute(
            """INSERT INTO readings (time, channel_id, value)
               VALUES (now() - interval '4 years', %s, 1), (now() - interval '1 day', %s, 2)""",
            (ch["id"], ch["id"]),
        )

        # A guard (the cold-chain summaries' hook) that is not ready yet keeps everything.
        def not_ready(_conn: db.Conn, cutoff: datetime) -> datetime:
            return cutoff - timedelta(days=3650)

        assert retention.enforce(conn, days=365, guards=[not_ready]) == []
        assert len(retention.enforce(conn, days=365, guards=[], dry_run=True)) == 1
        assert count(database, "SELECT count(*) FROM readings") == 2
        conn.execute(
            """INSERT INTO dead_letters (received_at, topic, reason, payload)
               VALUES (now() - interval '100 days', 'agritrace/v1/x/senml', 'not-json', 'x'), (now(), 't', 'r', 'y')"""
        )
    out = subprocess.run(
        [AGRITRACE, "ingest", "retention", "--days", "365"],
        env=dict(os.environ, AGRITRACE_DATABASE_URL=database),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.startswith("dropped 1 chunk")
    assert "deleted 1 dead letter(s)" in out
    assert count(database, "SELECT count(*) FROM dead_letters") == 1
    assert count(database, "SELECT count(*) FROM readings") == 1


def test_worker_serves_prometheus_metrics(stack: Stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stack.start_worker(1, AGRITRACE_INGEST_METRICS_PORT=str(port))
    gw, password = stack.gateway()
    stack.wait_subscribed(gw, password)
    publish_packs(gw, password, [b"[]"])
    text = ""
    for _ in range(50):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        if 'agritrace_ingest_dead_letters_total{reason="not-senml"} 1.0' in text:
            break
        time.sleep(0.1)
    assert 'agritrace_ingest_dead_letters_total{reason="not-senml"} 1.0' in text
    assert "agritrace_ingest_readings_total 1.0" in text
    assert "agritrace_ingest_batch_commit_seconds_bucket" in text
    assert "agritrace_ingest_commit_lag_seconds_count" in text


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_is_stored(
    stack: Stack, database: str
) -> None:
    with db.connect(db.owner_url(database), autocommit=True) as conn:
        # Stands in for any permanent refusal (a constraint added later, a gateway deleted meanwhile).
        conn.execute("ALTER TABLE readings ADD CONSTRAINT test_no_666 CHECK (value <> 666)")
    try:
        stack.start_worker(1, AGRITRACE_INGEST_FLUSH_INTERVAL="1")  # so all packs share one batch
        gw, password = stack.gateway()
        stack.wait_subscribed(gw, password)
        now = time.time()
        packs = [[{"n": f"c{i}", "v": 666 if i == 2 else i, "t": now, "u": "Cel"}] for i in range(5)]
        publish_packs(gw, password, packs)
        wait_for(
            lambda: count(database, "SELECT count(*) FROM dead_letters WHERE gateway_id = %s", (gw,)) == 1
        )
        wait_for(lambda: count(database, "SELECT count(*) FROM readings") == 4 + 1)  # and the probe
        assert count(database, "SELECT count(*) FROM dead_letters WHERE reason = 'storage-error'") == 1
        assert stack.workers[1].poll() is None  # still running
    finally:
        with db.connect(db.owner_url(database), autocommit=True) as conn:
            conn.execute("ALTER TABLE readings DROP CONSTRAINT test_no_666")
