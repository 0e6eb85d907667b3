"""Fault injection: gateways publish at a steady rate while the ingest path is broken in every way
we can think of; afterwards every reading the broker acknowledged to a gateway (QoS 1 PUBACK) must
be stored exactly once, and every worker must be alive and ingesting.

Runs on private instances (tests/faults/stack.py). Figures go to test-artifacts/faults.json and,
by hand, to docs/reliability.md. AGRITRACE_FAULT_REFUSE_SECONDS shortens the 60 s outage for a
quick local run.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from faults.stack import FaultStack, wait_until

pytestmark = pytest.mark.slow

GATEWAYS = 8
READINGS_PER_PACK = 10
PACK_INTERVAL = 0.04  # per gateway: 8 gateways x 25 packs/s x 10 = 2,000 readings/s
REFUSE_SECONDS = float(os.environ.get("AGRITRACE_FAULT_REFUSE_SECONDS", "60"))
RECOVERY_TIMEOUT = 180.0
T0 = float(int(time.time()) - 86400)  # whole seconds: compared exactly with stored timestamps


@dataclass
class Gateway:
    """One simulated gateway: publishes numbered packs and remembers each publish's PUBACK state."""

    gateway_id: str
    password: str
    port: int
    sent: list[tuple[int, int]] = field(default_factory=list)  # (seq, mid); fewer than 65,536 per run
    acked_mids: set[int] = field(default_factory=set)
    client: mqtt.Client | None = None

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        # A PUBACK with a success reason code: the broker has taken responsibility for the message.
        if not reason.is_failure:
            self.acked_mids.add(mid)

    def connect(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.gateway_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(self.gateway_id, self.password)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600  # unacked publishes survive a broker restart
        client.connect_async("127.0.0.1", self.port, keepalive=10, clean_start=False, properties=props)
        client.loop_start()
        self.client = client

    def publish(self, seq: int) -> None:
        assert self.client is not None
        pack: list[dict[str, Any]] = [{"bn": "fault/", "bt": T0 + seq, "bu": "Cel"}]
        pack += [{"n": f"c{j}", "v": 4 + j / 10 + (seq % 7) / 100} for j in range(READINGS_PER_PACK)]
        # Queued by paho while the broker is away and (re)sent once it is back.
        info = self.client.publish(f"agritrace/v1/{self.gateway_id}/senml", json.dumps(pack), qos=1)
        self.sent.append((seq, info.mid))

    def acknowledged(self) -> list[int]:
        return [seq for seq, mid in self.sent if mid in self.acked_mids]

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


class Traffic:
    """Every gateway publishing a pack every PACK_INTERVAL, on its own thread, until stopped."""

    def __init__(self, gateways: list[Gateway]) -> None:
        self.gateways = gateways
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(g,), daemon=True) for g in gateways]

    def _run(self, gateway: Gateway) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            gateway.publish(seq)
            seq += 1
            next_at += PACK_INTERVAL
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def published_readings(self) -> int:
        return sum(len(g.sent) for g in self.gateways) * READINGS_PER_PACK

    def acknowledged(self) -> list[tuple[str, str, float]]:
        """(gateway, channel name, time) of every reading whose pack the broker acknowledged."""
        return [
            (g.gateway_id, f"fault/c{j}", T0 + seq)
            for g in self.gateways
            for seq in g.acknowledged()
            for j in range(READINGS_PER_PACK)
        ]


def missing(stack: FaultStack, expected: list[tuple[str, str, float]]) -> int:
    """How many of the expected readings are not stored (an exact anti-join, not a count)."""
    buf = io.StringIO("".join(f"{g}\t{n}\t{t}\n" for g, n, t in expected))
    with psycopg.connect(stack.url) as conn:
        conn.execute("CREATE TEMP TABLE expected (gateway_id text, name text, t float8) ON COMMIT DROP")
        with conn.cursor().copy("COPY expected FROM STDIN") as copy:
            copy.write(buf.read())
        row = conn.execute(
            """SELECT count(*) FROM expected e
                WHERE NOT EXISTS (
                      SELECT 1 FROM channels c JOIN readings r ON r.channel_id = c.id
                       WHERE c.gateway_id = e.gateway_id AND c.name = e.name
                         AND r.time = to_timestamp(e.t))"""
        ).fetchone()
    assert row is not None
    return int(row[0])


def probe_stored(stack: FaultStack, gateway: Gateway) -> bool:
    """Publishes a probe reading (always the same one) and says whether a worker stored it."""
    assert gateway.client is not None
    probe = [{"n": "probe", "u": "Cel", "v": 0, "t": T0 - 3600}]
    gateway.client.publish(f"agritrace/v1/{gateway.gateway_id}/senml", json.dumps(probe), qos=1)
    time.sleep(0.5)
    return bool(stack.sql("SELECT count(*) AS n FROM channels WHERE name = 'probe'")[0]["n"])


def stored(stack: FaultStack) -> int:
    return int(stack.sql("SELECT count(*) AS n FROM readings")[0]["n"])


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    s = FaultStack()
    try:
        s.setup()
        yield s
    finally:
        s.close()


def test_no_acknowledged_reading_is_lost_or_doubled_through_every_fault(
    stack: FaultStack, artifacts: Path
) -> None:
    gateways = []
    for i in range(GATEWAYS):
        gw, password = stack.create_gateway(f"故障测试合作社-{i % 2}")
        gateways.append(Gateway(gw, password, stack.mqtt_port))
    stack.start_worker(1)
    stack.start_worker(2)
    for g in gateways:
        g.connect()
    # The broker drops what is published before any ingest session has subscribed (there is no
    # queue yet to put it in); once the workers' persistent sessions exist, it queues for them.
    probe = gateways[0]
    wait_until(lambda: probe_stored(stack, probe), timeout=60, what="an ingest worker subscribed")
    traffic = Traffic(gateways)
    traffic.start()
    report: list[dict[str, Any]] = []

    def settle(fault: str, injected_for: float) -> None:
        """After a fault: wait until everything acknowledged so far is stored; record the figures."""
        expected = traffic.acknowledged()
        recovery = wait_until(
            lambda: missing(stack, expected) == 0, timeout=RECOVERY_TIMEOUT, what=f"recovery after {fault}"
        )
        assert stack.workers_alive(), f"a worker died during {fault}; see {stack.log}"
        # Still ingesting: readings keep arriving after the recovery.
        before = stored(stack)
        wait_until(lambda: stored(stack) > before, timeout=60, what=f"ingest going on after {fault}")
        report.append(
            {
                "fault": fault,
                "injected_seconds": round(injected_for, 1),
                "acknowledged_readings_checked": len(expected),
                "recovery_seconds": round(recovery, 1),
            }
        )

    try:
        wait_until(lambda: stored(stack) > 0, timeout=60, what="first readings stored")

        started = time.monotonic()
        for i in range(10):
            time.sleep(1.5)
            worker = 1 + i % 2
            stack.kill_worker(worker)
            stack.start_worker(worker)
        settle("SIGKILL an ingest worker, 10 times", time.monotonic() - started)

        started = time.monotonic()
        stack.crash_restart_database()
        settle("PostgreSQL crash (immediate stop) and restart", time.monotonic() - started)

        started = time.monotonic()
        stack.restart_broker()
        settle("broker restart (persistence on)", time.monotonic() - started)

        started = time.monotonic()
        stack.refuse_connections(True)
        time.sleep(REFUSE_SECONDS)
        stack.refuse_connections(False)
        settle(f"database refuses connections for {REFUSE_SECONDS:.0f} s", time.monotonic() - started)

        # A slow database: the readings table is locked, so commits wait while batches fill up.
        started = time.monotonic()
        with psycopg.connect(stack.url) as blocker:
            blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            time.sleep(15)
            blocker.rollback()
        settle("slow database (readings locked for 15 s)", time.monotonic() - started)
    finally:
        traffic.finish()

    # Every publish that will ever be acknowledged has been by now (or never will: counted as not acked).
    wait_until(
        lambda: all(mid in g.acked_mids for g in gateways for _s, mid in g.sent[-50:]),
        timeout=60,
        what="the last publishes acknowledged",
    )
    for g in gateways:
        g.close()
    acknowledged = traffic.acknowledged()
    wait_until(lambda: missing(stack, acknowledged) == 0, timeout=RECOVERY_TIMEOUT, what="final catch-up")
    totals = stack.sql(
        """SELECT count(*) AS stored, count(DISTINCT (r.channel_id, r.time)) AS distinct_readings
             FROM readings r JOIN channels c ON c.id = r.channel_id
            WHERE c.name LIKE 'fault/%'"""  # the probe reading is not traffic
    )[0]
    figures = {
        "published_readings": traffic.published_readings(),
        "acknowledged_readings": len(acknowledged),
        "stored_readings": totals["stored"],
        "duplicates": totals["stored"] - totals["distinct_readings"],
        "lost": missing(stack, acknowledged),
        "dead_letters": stack.sql("SELECT count(*) AS n FROM dead_letters")[0]["n"],
        "faults": report,
    }
    (artifacts / "faults.json").write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0
    assert figures["dead_letters"] == 0
    # Nothing was stored that no gateway published.
    assert figures["stored_readings"] <= figures["published_readings"]
    assert figures["stored_readings"] >= figures["acknowledged_readings"]
