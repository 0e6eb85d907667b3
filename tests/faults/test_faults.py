"""Fault injection: gateways publish at a steady rate while the ingest path is broken in every way
we can think of; afterwards every reading the broker acknowledged to a gateway (QoS 1 PUBACK) must
be stored exactly once, every worker must be alive and ingesting, and the cold-chain alerts must be
correct: some gateways' channels are mango cold rooms whose temperature follows a fixed schedule of
excursions, watched by the alert evaluator (`agritrace alerts run`) all along.

Runs on private instances (tests/faults/stack.py). Figures go to test-artifacts/faults.json and,
by hand, to docs/reliability.md. AGRITRACE_FAULT_REFUSE_SECONDS shortens the 60 s outage for a
quick local run.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agritrace import audit
from agritrace.coldchain import evaluator, profiles, rules
from agritrace.db import connect
from agritrace.devices import service as devices
from faults.stack import FaultStack, wait_until

pytestmark = pytest.mark.slow

GATEWAYS = 8
READINGS_PER_PACK = 10
PACK_INTERVAL = 0.04  # per gateway: 8 gateways x 25 packs/s x 10 = 2,000 readings/s
REFUSE_SECONDS = float(os.environ.get("AGRITRACE_FAULT_REFUSE_SECONDS", "60"))
RECOVERY_TIMEOUT = 180.0
T0 = float(int(time.time()) - 86400)  # whole seconds: compared exactly with stored timestamps

# Cold rooms: on the first COLD_ROOMS gateways, channel fault/c0 is a mango cold room, watched with
# the mango profile's own rules. Their clocks advance STEP seconds per pack (the profile's delays
# are in hours; this makes them pass in seconds), and the room follows a fixed schedule: in band
# (11.5-11.7 °C), except EXCURSION packs out of every PERIOD, too warm (14.0-14.9 °C) for 75 min of
# gateway time, longer than the "warm" rule's delay (above 13 °C for 1 h). Each gateway starts its
# first excursion at its own pack, so at any moment the rooms are at different points of one.
COLD_ROOMS = 3
COLD_ROOM = "fault/c0"
STEP = 30
T0_COLD = float(int(time.time()) - 7 * 86400)  # 2,000+ packs x 30 s stay in the past
PERIOD = 250  # packs: 10 s of wall time, 125 min of gateway time
EXCURSION = 150  # packs: 6 s of wall time, 75 min of gateway time
FIRST_EXCURSION = (50, 130, 210)  # pack of each cold room's first excursion
CLEARING = 20  # packs back in band before the rule calls an excursion over (10 min)
WARM_RULE = "warm"


@dataclass
class Gateway:
    """One simulated gateway: publishes numbered packs and remembers each publish's PUBACK state."""

    gateway_id: str
    password: str
    port: int
    sent: list[tuple[int, int]] = field(default_factory=list)  # (seq, mid); fewer than 65,536 per run
    acked_mids: set[int] = field(default_factory=set)
    client: mqtt.Client | None = None
    t0: float = T0
    step: int = 1  # seconds of gateway clock per pack
    first_excursion: int | None = None  # a cold room's schedule (None: not a cold room)

    def time_of(self, seq: int) -> float:
        return self.t0 + seq * self.step

    def cold_room(self, seq: int) -> float:
        """The cold room's temperature in pack `seq`: the schedule."""
        assert self.first_excursion is not None
        phase = seq - self.first_excursion
        if phase >= 0 and phase % PERIOD < EXCURSION:
            return 14.0 + (phase % PERIOD % 10) / 10
        return 11.5 + (seq % 3) / 10

    def excursions(self, upto: int) -> range:
        """The first pack of every excursion the schedule has begun before pack `upto`."""
        assert self.first_excursion is not None
        return range(self.first_excursion, max(upto, self.first_excursion), PERIOD)

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
        pack: list[dict[str, Any]] = [{"bn": "fault/", "bt": self.time_of(seq), "bu": "Cel"}]
        values = [4 + j / 10 + (seq % 7) / 100 for j in range(READINGS_PER_PACK)]
        if self.first_excursion is not None:
            values[0] = self.cold_room(seq)  # fault/c0
        pack += [{"n": f"c{j}", "v": v} for j, v in enumerate(values)]
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
            (g.gateway_id, f"fault/c{j}", g.time_of(seq))
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


# An alert as compared: (gateway, rule, started, ended, status, worst value, minutes out). Minutes
# out grow with every reading while an alert is open, so they are compared only once it is over, or
# (at the end, traffic stopped) for every alert.
AlertKey = tuple[str, str, datetime, datetime | None, str, float | None, float | None]


@dataclass
class AlertCheck:
    """The alerts in the database against a fresh evaluation of the stored readings and against the
    schedule, all as of one snapshot."""

    found: list[AlertKey]  # in the database, withdrawn ones left out (they are hidden history)
    fresh: set[AlertKey]  # the rule engine run from scratch over every stored reading
    expected: set[AlertKey]  # what the schedule implies for the packs stored
    withdrawn: int
    live_per_rule: int  # the most live alerts of one channel and rule
    gaps: list[str]  # cold rooms whose stored packs are not yet 0..n-1 (readings in flight)

    def ok(self) -> bool:
        return (
            not self.gaps
            and len(self.found) == len(set(self.found))
            and set(self.found) == self.fresh == self.expected
            and self.live_per_rule <= 1
        )

    def figures(self) -> dict[str, int]:
        found = set(self.found)
        return {
            "alerts_expected": len(self.expected),
            "alerts_found": len(self.found),
            "alerts_missing": len(self.expected - found),
            "alerts_spurious": len(found - self.expected),
            "alerts_duplicated": len(self.found) - len(found),
            "alerts_unlike_fresh_evaluation": len(found ^ self.fresh),
            "alerts_withdrawn": self.withdrawn,
        }

    def explain(self) -> str:
        found = set(self.found)
        return (
            f"{self.figures()}; cold rooms with readings in flight: {self.gaps}; live per rule: "
            f"{self.live_per_rule}\nmissing: {sorted(self.expected - found, key=str)[:5]}"
            f"\nspurious: {sorted(found - self.expected, key=str)[:5]}"
            f"\nfresh evaluation, not in the database: {sorted(self.fresh - found, key=str)[:5]}"
            f"\nin the database, not in a fresh evaluation: {sorted(found - self.fresh, key=str)[:5]}"
        )


def _key(gateway: str, rule: str, start: datetime, end: datetime | None, status: str,
         worst: float | None, minutes: float, exact: bool) -> AlertKey:  # fmt: skip
    return (gateway, rule, start, end, status, worst, minutes if exact or end is not None else None)


def check_alerts(stack: FaultStack, cold_rooms: list[Gateway], *, exact: bool = False) -> AlertCheck:
    by_id = {g.gateway_id: g for g in cold_rooms}
    with connect(stack.url) as conn:
        # One snapshot: the readings and the alerts as they were at the same instant.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        found = [
            _key(a["gateway_id"], a["rule"], a["started_at"], a["ended_at"], a["status"], a["worst_value"],
                 a["minutes_out"], exact)
            for a in conn.execute(
                """SELECT a.*, c.gateway_id, r.name AS rule FROM alerts a JOIN channels c ON c.id = a.channel_id
                     JOIN coldchain_rules r ON r.id = a.rule_id WHERE a.status <> 'withdrawn'"""
            ).fetchall()
        ]  # fmt: skip
        withdrawn = conn.execute("SELECT count(*) AS n FROM alerts WHERE status = 'withdrawn'").fetchone()
        live = conn.execute(
            """SELECT coalesce(max(n), 0) AS n FROM (SELECT count(*) AS n FROM alerts
                WHERE status IN ('open', 'acknowledged') GROUP BY channel_id, rule_id) x"""
        ).fetchone()
        monitored = conn.execute(
            """SELECT c.id, c.gateway_id, c.name FROM coldchain_monitored_channels m
                 JOIN channels c ON c.id = m.channel_id"""
        ).fetchall()
        assert {(m["gateway_id"], m["name"]) for m in monitored} == {(g, COLD_ROOM) for g in by_id}
        fresh: set[AlertKey] = set()
        expected: set[AlertKey] = set()
        gaps = []
        for channel in monitored:
            gateway = by_id[channel["gateway_id"]]
            points = [
                (r["time"], r["value"])
                for r in conn.execute(
                    "SELECT time, value FROM readings WHERE channel_id = %s ORDER BY time", (channel["id"],)
                ).fetchall()
            ]
            # A fresh evaluation: every threshold rule of the channel, over all its stored readings.
            asset = conn.execute("SELECT asset_kind FROM channels WHERE id = %s", (channel["id"],)).fetchone()
            custody = evaluator.CUSTODY_OF_ASSET.get((asset or {}).get("asset_kind") or "", "other")
            for row in conn.execute(evaluator.RULES_OF_CHANNEL, (channel["id"], custody)).fetchall():
                if row["metric"] == "no_data":
                    continue
                for e in rules.evaluate(profiles.rule_from_row(row), points):
                    worst = None if math.isnan(e.worst) else e.worst
                    status = "open" if e.end is None else "resolved"
                    fresh.add(_key(gateway.gateway_id, row["name"], e.start, e.end, status, worst,
                                   e.minutes_out, exact))  # fmt: skip
                if row["name"] == WARM_RULE:
                    warm = row
            # The schedule: each excursion is one "warm" alert, open once the room has been out of
            # band for the rule's delay, over (ended when the room came back) after its clear delay.
            seqs = [round((t.timestamp() - gateway.t0) / gateway.step) for t, _v in points]
            stored = len(seqs)
            if seqs != list(range(stored)):
                gaps.append(gateway.gateway_id)
                continue
            assert all(gateway.cold_room(s) > warm["threshold"] for s in gateway.excursions(stored))
            opens_after = math.ceil(warm["delay_s"] / STEP)
            over_after = EXCURSION + math.ceil(warm["clear_delay_s"] / STEP)
            assert opens_after < EXCURSION and over_after < PERIOD, "the schedule does not fit the rule"
            for first in gateway.excursions(stored):
                last = stored - 1
                if last < first + opens_after:
                    continue
                over = last >= first + over_after
                out = range(first, min(first + EXCURSION, stored))
                expected.add(
                    _key(
                        gateway.gateway_id,
                        WARM_RULE,
                        _at(gateway.time_of(first)),
                        _at(gateway.time_of(first + EXCURSION)) if over else None,
                        "resolved" if over else "open",
                        max(gateway.cold_room(s) for s in out),
                        # each reading out stands until the next; the newest one for nothing yet
                        round((len(out) - (last < first + EXCURSION)) * STEP / 60, 3),
                        exact,
                    )
                )
    assert withdrawn is not None and live is not None
    return AlertCheck(found, fresh, expected, withdrawn["n"], live["n"], gaps)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def settle_alerts(stack: FaultStack, cold_rooms: list[Gateway], what: str, *, exact: bool = False
                  ) -> tuple[float, AlertCheck]:  # fmt: skip
    """Waits until the alerts are correct (the evaluator lags the readings by a poll or two);
    returns how long that took and the check that passed."""
    started = time.monotonic()
    while True:
        check = check_alerts(stack, cold_rooms, exact=exact)
        if check.ok():
            return time.monotonic() - started, check
        if time.monotonic() - started > RECOVERY_TIMEOUT:
            raise AssertionError(
                f"alerts after {what} not correct within {RECOVERY_TIMEOUT:.0f} s: {check.explain()}"
            )
        time.sleep(0.2)


def evaluated(stack: FaultStack) -> datetime | None:
    """The latest ingest the alert evaluator has looked at."""
    return stack.sql("SELECT max(evaluated_ingest) AS t FROM coldchain_eval_state")[0]["t"]  # type: ignore[no-any-return]


def at_phase(gateway: Gateway, low: int, high: int) -> bool:
    """Is the cold room between packs `low` and `high` of an excursion (in the pack being sent)?"""
    assert gateway.first_excursion is not None
    phase = len(gateway.sent) - gateway.first_excursion
    return phase >= 0 and low <= phase % PERIOD < high


def make_cold_rooms(stack: FaultStack, gateways: list[Gateway]) -> None:
    """Channel fault/c0 of the first gateways: a mango cold room (冷库), watched by the mango profile."""
    for i, g in enumerate(gateways[:COLD_ROOMS]):
        g.t0, g.step, g.first_excursion = T0_COLD, STEP, FIRST_EXCURSION[i]
        # What an operator does: register the channel with its profile, then say where it is.
        watched = json.loads(
            stack.cli("channels", "profile", "--gateway", g.gateway_id, "--channel", COLD_ROOM,
                      "--profile", "mango", "--unit", "Cel", "--json")
        )  # fmt: skip
        with connect(stack.url) as conn:
            audit.set_actor(conn, "cli:faults-suite")
            devices.describe_channel(
                conn,
                channel_id=watched["channel_id"],
                changes={
                    "asset_kind": "cold_room",
                    "asset_name": f"芒果冷库 {i + 1}",
                    "quantity": "temperature",
                },
            )


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    s = FaultStack()
    try:
        s.setup()
        yield s
    finally:
        s.close()


def test_no_acknowledged_reading_is_lost_or_doubled_and_alerts_are_correct_through_every_fault(
    stack: FaultStack, artifacts: Path
) -> None:
    gateways = []
    for i in range(GATEWAYS):
        gw, password = stack.create_gateway(f"故障测试合作社-{i % 2}")
        gateways.append(Gateway(gw, password, stack.mqtt_port))
    make_cold_rooms(stack, gateways)
    cold_rooms = gateways[:COLD_ROOMS]
    stack.start_worker(1)
    stack.start_worker(2)
    stack.start_alerts()
    assert stack.alerts is not None
    evaluator_pid = stack.alerts.pid
    for g in gateways:
        g.connect()
    # The broker drops what is published before any ingest session has subscribed (there is no
    # queue yet to put it in); once the workers' persistent sessions exist, it queues for them.
    probe = gateways[0]
    wait_until(lambda: probe_stored(stack, probe), timeout=60, what="an ingest worker subscribed")
    traffic = Traffic(gateways)
    traffic.start()
    report: list[dict[str, Any]] = []
    injected_at: list[int] = []  # the pack cold room 0 was sending when the fault began

    def inject() -> float:
        injected_at[:] = [len(g.sent) for g in cold_rooms]
        return time.monotonic()

    def settle(fault: str, started: float) -> None:
        """After a fault: wait until everything acknowledged so far is stored and the alerts are
        correct; record the figures."""
        injected_for = time.monotonic() - started
        # Excursions of any cold room that were going on (out of band or clearing) during the fault.
        spanned = sum(
            1
            for g, begun in zip(cold_rooms, injected_at, strict=True)
            for first in g.excursions(len(g.sent))
            if first <= len(g.sent) and first + EXCURSION + CLEARING >= begun
        )
        expected = traffic.acknowledged()
        recovery = wait_until(
            lambda: missing(stack, expected) == 0, timeout=RECOVERY_TIMEOUT, what=f"recovery after {fault}"
        )
        assert stack.workers_alive(), f"a worker died during {fault}; see {stack.log}"
        # Still ingesting: readings keep arriving after the recovery.
        before = stored(stack)
        wait_until(lambda: stored(stack) > before, timeout=60, what=f"ingest going on after {fault}")
        # The evaluator survived by itself (the same process) and its alerts are right again.
        assert stack.alerts_alive(), f"the alert evaluator died during {fault}; see {stack.alerts_log}"
        alerts_recovery, check = settle_alerts(stack, cold_rooms, fault)
        seen = evaluated(stack)
        wait_until(
            lambda: evaluated(stack) != seen, timeout=60, what=f"alert evaluation going on after {fault}"
        )
        report.append(
            {
                "fault": fault,
                "injected_seconds": round(injected_for, 1),
                "acknowledged_readings_checked": len(expected),
                "recovery_seconds": round(recovery, 1),
                "excursions_spanning_fault": spanned,
                **check.figures(),
                "alerts_recovery_seconds": round(alerts_recovery, 1),
            }
        )

    try:
        wait_until(lambda: stored(stack) > 0, timeout=60, what="first readings stored")

        started = inject()
        for i in range(10):
            time.sleep(1.5)
            worker = 1 + i % 2
            stack.kill_worker(worker)
            stack.start_worker(worker)
        settle("SIGKILL an ingest worker, 10 times", started)

        # The short faults strike while cold room 1 has an alert open and is about to come back in
        # band (0.2-1 s later), so its excursion ends, and the alert must be resolved, during the
        # fault or the recovery from it.
        wait_until(lambda: at_phase(cold_rooms[0], EXCURSION - 25, EXCURSION - 5), timeout=60, what="phase")
        started = inject()
        stack.crash_restart_database()
        settle("PostgreSQL crash (immediate stop) and restart", started)

        wait_until(lambda: at_phase(cold_rooms[0], EXCURSION - 25, EXCURSION - 5), timeout=60, what="phase")
        started = inject()
        stack.restart_broker()
        settle("broker restart (persistence on)", started)

        started = inject()
        stack.refuse_connections(True)
        time.sleep(REFUSE_SECONDS)
        stack.refuse_connections(False)
        settle(f"database refuses connections for {REFUSE_SECONDS:.0f} s", started)

        # A slow database: the readings table is locked, so commits wait while batches fill up.
        started = inject()
        with psycopg.connect(stack.url) as blocker:
            blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            time.sleep(15)
            blocker.rollback()
        settle("slow database (readings locked for 15 s)", started)
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
    # Traffic has stopped: the alerts must now match to the minute out of range, open ones included.
    _, final = settle_alerts(stack, cold_rooms, "the last reading", exact=True)
    assert stack.alerts_alive() and stack.alerts is not None and stack.alerts.pid == evaluator_pid
    # Every alert change went out on MQTT (the notifier's outbox cursor caught up with the history).
    wait_until(
        lambda: stack.sql(
            """SELECT (SELECT last_event_id FROM coldchain_outbox_cursor WHERE name = 'mqtt')
                      = (SELECT max(id) FROM alert_events) AS done"""
        )[0]["done"],
        timeout=60,
        what="every alert change published",
    )
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
        "cold_rooms": COLD_ROOMS,
        "excursions_injected": sum(len(g.excursions(len(g.sent))) for g in cold_rooms),
        **final.figures(),
        "alert_events_all_published": stack.sql("SELECT count(*) AS n FROM alert_events")[0]["n"],
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
    # One alert per excursion the schedule began (an excursion is only an alert once out for the delay).
    assert final.ok()
    assert figures["alerts_expected"] >= figures["excursions_injected"] - COLD_ROOMS
