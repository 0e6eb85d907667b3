"""The MQTT ingest worker: SenML packs and gateway status in, COPY batches out, ack after commit.

Delivery guarantee: a message is acknowledged to the broker (PUBACK) only after the database
transaction holding its readings (or its dead letter) has committed. A crash before that means the
broker redelivers it to the same persistent session once the worker reconnects with the same client
id; the readings primary key makes the redelivered copy a no-op.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from prometheus_client import start_http_server
from psycopg import errors as pg_errors

from agritrace import db
from agritrace.ingest import metrics, retention
from agritrace.ingest.senml import Limits, SenMLError, parse_pack
from agritrace.mqtt import connect_properties, new_client
from agritrace.settings import Settings

log = logging.getLogger(__name__)

COPY_READINGS = "COPY readings (time, channel_id, value) FROM STDIN (FORMAT BINARY)"
COPY_STAGING = "COPY readings_staging (time, channel_id, value) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = ("timestamptz", "int4", "float8")


@dataclass(slots=True)
class Incoming:
    """A message as received, before it is committed and acked."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    arrived: float


@dataclass
class Batch:
    """What one transaction writes, and the messages it will ack."""

    messages: list[Incoming] = field(default_factory=list)
    rows: list[tuple[str, str, str | None, datetime, float]] = field(
        default_factory=list
    )  # gw, name, unit, t, v
    statuses: list[tuple[str, bool, datetime]] = field(default_factory=list)
    dead: list[tuple[str, str | None, str, str, bytes]] = field(default_factory=list)
    gateways: set[str] = field(default_factory=set)


def parse_status(payload: bytes) -> bool:
    """A birth/will payload: "online"/"offline", or JSON {"online": bool} / {"status": "online"}."""
    text = payload.decode("utf-8", errors="replace").strip()
    lowered = text.strip('"').lower()
    if lowered in ("online", "offline"):
        return lowered == "online"
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("online"), bool):
            return bool(doc["online"])
        if str(doc.get("status", "")).lower() in ("online", "offline"):
            return str(doc["status"]).lower() == "online"
    raise SenMLError("bad-status", "status payload must be 'online' or 'offline'")


class Worker:
    """One ingest worker process: a persistent MQTT session and one database connection."""

    def __init__(self, settings: Settings, *, worker_id: int) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.client_id = f"{settings.ingest_client_prefix}-{worker_id}"
        self.limits = Limits(max_age=settings.ingest_max_age_days * 86400.0)
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self.stop = threading.Event()
        self._known_gateways: set[str] = set()
        self._channels: dict[tuple[str, str], int] = {}
        self._conn: db.Conn | None = None
        self.client = new_client(
            self.client_id,
            username=settings.mqtt_ingest_username,
            password=settings.mqtt_ingest_password.get_secret_value(),
            manual_ack=True,
            # Mosquitto 2.0 does not restore shared subscriptions from its persistence file: after a
            # broker restart, what gateways publish before a worker has subscribed again is dropped.
            # Retrying every 0.1-0.5 s puts the workers back well before gateways with the usual >= 1 s
            # back-off (docs/reliability.md).
            reconnect_delay=(0.1, 0.5),
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- MQTT (network thread) -------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        metrics.CONNECTED.set(1)
        group = self.settings.ingest_group
        # Subscribing again on a resumed session is harmless and covers a session the broker lost.
        client.subscribe(
            [(f"$share/{group}/agritrace/v1/+/senml", 1), (f"$share/{group}/agritrace/v1/+/status", 1)]
        )
        log.info("connected as %s (session present: %s)", self.client_id, flags.session_present)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        metrics.CONNECTED.set(0)
        if not self.stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time()))

    # --- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Connects and ingests until `stop` is set; finishes the batch in hand, then disconnects."""
        s = self.settings
        props = connect_properties(
            session_expiry=s.ingest_session_expiry, receive_maximum=s.ingest_receive_maximum
        )
        self._connect_db()
        self.client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()
        try:
            while not self.stop.is_set():
                batch = self._collect()
                if batch.messages:
                    self._commit(batch)
        finally:
            # Messages still in the inbox are not acked: the broker redelivers them next time.
            self.client.disconnect()
            self.client.loop_stop()
            if self._conn is not None:
                self._conn.close()

    def _collect(self) -> Batch:
        """Gathers messages until the batch is full (readings or the in-flight window) or old enough."""
        s = self.settings
        batch = Batch()
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return batch
        deadline = first.arrived + s.ingest_flush_interval
        self._add(batch, first)
        while len(batch.rows) < s.ingest_batch_readings and len(batch.messages) < s.ingest_receive_maximum:
            # Whatever already waits joins the batch even when the deadline has passed (messages
            # that arrived during the previous commit); only waiting for more is bounded by it.
            wait = deadline - time.time()
            try:
                msg = self.inbox.get_nowait() if wait <= 0 else self.inbox.get(timeout=wait)
            except queue.Empty:
                break
            self._add(batch, msg)
        metrics.QUEUE.set(self.inbox.qsize() + len(batch.messages))
        return batch

    def _add(self, batch: Batch, msg: Incoming, *, count: bool = True) -> None:
        """Parses one message into the batch (readings, a status change, or a dead letter)."""
        batch.messages.append(msg)
        parts = msg.topic.split("/")
        gateway = parts[2] if len(parts) == 4 else None
        kind = parts[3] if len(parts) == 4 else "unknown"
        if count:
            metrics.MESSAGES.labels(kind).inc()
        try:
            if gateway is None or kind not in ("senml", "status"):
                raise SenMLError("unknown-topic", "expected agritrace/v1/{gateway_id}/senml or /status")
            if not self._gateway_known(gateway):
                raise SenMLError("unknown-gateway", f"no registered gateway {gateway[:64]!r}")
            batch.gateways.add(gateway)
            if kind == "status":
                batch.statuses.append(
                    (gateway, parse_status(msg.payload), datetime.fromtimestamp(msg.arrived, UTC))
                )
                return
            readings, skipped = parse_pack(msg.payload, now=msg.arrived, limits=self.limits)
            if skipped:
                metrics.SKIPPED.inc(skipped)
            batch.rows.extend(
                (gateway, r.name, r.unit, datetime.fromtimestamp(r.time, UTC), r.value) for r in readings
            )
        except SenMLError as exc:
            batch.dead.append((msg.topic, gateway, exc.reason, exc.detail, msg.payload))

    # --- database --------------------------------------------------------------------------
    def _connect_db(self) -> None:
        while not self.stop.is_set():
            try:
                conn = db.connect(self.settings.database_url)
                conn.execute(
                    """CREATE TEMP TABLE IF NOT EXISTS readings_staging
                       (time timestamptz, channel_id integer, value double precision) ON COMMIT DELETE ROWS"""
                )
                conn.commit()
                self._conn = conn
                return
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); retrying", exc)
                time.sleep(1)

    def _gateway_known(self, gateway: str) -> bool:
        if gateway in self._known_gateways:
            return True
        assert self._conn is not None
        try:
            row = self._conn.execute("SELECT 1 FROM gateways WHERE id = %s", (gateway,)).fetchone()
            self._conn.commit()
        except psycopg.OperationalError:
            self._conn.close()
            self._connect_db()
            return self._gateway_known(gateway)
        if row is not None:
            self._known_gateways.add(gateway)
        return row is not None

    def _commit(self, batch: Batch) -> None:
        """Writes the batch in one transaction, retrying on lost connections, then acks its messages."""
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            assert self._conn is not None
            try:
                inserted = self._write(self._conn, batch)
                break
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                self._conn.rollback()
            except psycopg.OperationalError as exc:
                # Nothing is acked while the database is away: the messages wait, in flight.
                log.warning("database error (%s); reconnecting and retrying the batch", exc)
                self._conn.close()
                time.sleep(min(5, 0.2 * attempt))
                self._connect_db()
                if self.stop.is_set():
                    return
            except psycopg.Error as exc:
                # The database refuses something in this batch for good (a poison message): find it
                # by committing message by message, and dead-letter only the one it refuses.
                self._conn.rollback()
                self._isolate(batch, exc)
                return
        now = time.time()
        for msg in batch.messages:
            if msg.qos:
                self.client.ack(msg.mid, msg.qos)
            metrics.COMMIT_LAG.observe(now - msg.arrived)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_READINGS.observe(len(batch.rows))
        metrics.READINGS.inc(inserted)
        metrics.DUPLICATES.inc(len(batch.rows) - inserted)
        for _topic, _gw, reason, _detail, _payload in batch.dead:
            metrics.DEAD_LETTERS.labels(reason).inc()
        if batch.rows:
            metrics.READING_AGE.set(now - max(r[3] for r in batch.rows).timestamp())

    def _isolate(self, batch: Batch, exc: psycopg.Error) -> None:
        if len(batch.messages) > 1:
            for msg in batch.messages:
                single = Batch()
                self._add(single, msg, count=False)
                self._commit(single)
            return
        (msg,) = batch.messages
        if any(d[2] == "storage-error" for d in batch.dead):
            # Even its dead letter is refused: log it with its bytes and ack, or it would loop forever.
            log.critical("cannot store message on %s (%s); dropped: %r", msg.topic, exc, msg.payload[:2000])
            self.client.ack(msg.mid, msg.qos)
            return
        log.error("database refused a message on %s: %s", msg.topic, exc)
        parts = msg.topic.split("/")
        gateway = parts[2] if len(parts) == 4 else None
        self._commit(
            Batch(messages=[msg], dead=[(msg.topic, gateway, "storage-error", str(exc)[:500], msg.payload)])
        )

    def _channel_ids(self, conn: db.Conn, batch: Batch) -> list[int]:
        """Channel ids for the batch's rows, registering channels on first sight (own transaction)."""
        missing = sorted(
            {
                (gw, name): unit for gw, name, unit, _t, _v in batch.rows if (gw, name) not in self._channels
            }.items()
        )
        if missing:
            # Committed on its own, before the readings: a cached id must never point at a rolled-back row.
            conn.execute(
                """INSERT INTO channels (gateway_id, name, unit)
                   SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING""",
                ([k[0] for k, _ in missing], [k[1] for k, _ in missing], [u for _, u in missing]),
            )
            rows = conn.execute(
                """SELECT c.id, c.gateway_id, c.name FROM channels c
                   JOIN unnest(%s::text[], %s::text[]) AS m(gateway_id, name) USING (gateway_id, name)""",
                ([k[0] for k, _ in missing], [k[1] for k, _ in missing]),
            ).fetchall()
            conn.commit()
            for r in rows:
                self._channels[(r["gateway_id"], r["name"])] = r["id"]
        return [self._channels[(gw, name)] for gw, name, _u, _t, _v in batch.rows]

    def _write(self, conn: db.Conn, batch: Batch) -> int:
        """One transaction: readings (deduplicated), latest values, statuses, dead letters."""
        ids = self._channel_ids(conn, batch) if batch.rows else []
        inserted = 0
        with conn.transaction():
            if batch.rows:
                rows = [(r[3], cid, r[4]) for r, cid in zip(batch.rows, ids, strict=True)]
                inserted = self._copy_readings(conn, rows)
                self._update_latest(conn, rows)
            if batch.gateways:
                conn.execute(
                    "UPDATE gateways SET last_seen = now() WHERE id = ANY(%s)", (sorted(batch.gateways),)
                )
            for gateway, online, at in batch.statuses:
                conn.execute(
                    """UPDATE gateways SET online = %s, status_at = %s
                        WHERE id = %s AND (status_at IS NULL OR status_at <= %s)""",
                    (online, at, gateway, at),
                )
            if batch.dead:
                with conn.cursor().copy(
                    "COPY dead_letters (topic, gateway_id, reason, detail, payload) FROM STDIN"
                ) as copy:
                    for row in batch.dead:
                        copy.write_row(row)
        return inserted

    @staticmethod
    def _copy_readings(conn: db.Conn, rows: list[tuple[datetime, int, float]]) -> int:
        """Binary COPY straight into readings; on a duplicate, through a staging table instead."""
        try:
            # Fast path: most batches hold no duplicate. The savepoint keeps the transaction usable.
            with conn.transaction(), conn.cursor().copy(COPY_READINGS) as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            return len(rows)
        except pg_errors.UniqueViolation:
            pass
        with conn.cursor() as cur:
            with cur.copy(COPY_STAGING) as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                """INSERT INTO readings (time, channel_id, value)
                   SELECT DISTINCT ON (channel_id, time) time, channel_id, value FROM readings_staging
                    ORDER BY channel_id, time ON CONFLICT DO NOTHING"""
            )
            inserted = cur.rowcount
            cur.execute("TRUNCATE readings_staging")
        return inserted

    @staticmethod
    def _update_latest(conn: db.Conn, rows: list[tuple[datetime, int, float]]) -> None:
        """Keeps each channel's latest value by timestamp (not arrival), and when it was last written."""
        newest: dict[int, tuple[datetime, float]] = {}
        oldest: dict[int, datetime] = {}
        for t, cid, v in rows:
            seen = newest.get(cid)
            if seen is None or t > seen[0]:
                newest[cid] = (t, v)
            if cid not in oldest or t < oldest[cid]:
                oldest[cid] = t
        ordered = sorted(newest.items())  # a fixed lock order keeps two workers from deadlocking
        # last_ingested_at tells the alert evaluator to look again, so it must grow with every commit:
        # now() is when the transaction began, and a transaction begun before another's can commit
        # after the evaluator has seen that one's (later) time, and would then never be looked at.
        # clock_timestamp() is read as the row is written (again after waiting for another worker's
        # update of it), so it is later than any value already committed.
        # rollup_from: the oldest time written since the dashboards' rollup job last ran (late
        # readings included), so it re-aggregates exactly the buckets that changed.
        conn.execute(
            """UPDATE channels c SET
                   last_value = CASE WHEN c.last_time IS NULL OR u.time > c.last_time THEN u.value ELSE c.last_value END,
                   last_time = greatest(c.last_time, u.time),
                   last_ingested_at = greatest(c.last_ingested_at, clock_timestamp()),
                   rollup_from = least(c.rollup_from, u.oldest)
                 FROM unnest(%s::int[], %s::timestamptz[], %s::float8[], %s::timestamptz[])
                      AS u(id, time, value, oldest)
                WHERE c.id = u.id""",
            (
                [cid for cid, _ in ordered],
                [tv[0] for _, tv in ordered],
                [tv[1] for _, tv in ordered],
                [oldest[cid] for cid, _ in ordered],
            ),
        )


def _retention_loop(settings: Settings, stop: threading.Event) -> None:
    """Enforces retention every `ingest_retention_interval` seconds (worker 1 only)."""
    while not stop.wait(settings.ingest_retention_interval):
        try:
            with db.connect(settings.database_url, autocommit=True) as conn:
                retention.enforce(conn, days=settings.ingest_retention_days)
                retention.purge_dead_letters(conn, days=settings.ingest_dead_letter_days)
        except psycopg.Error as exc:
            log.warning("retention run failed (%s); will retry", exc)


def run_worker(settings: Settings, *, worker_id: int) -> None:
    """Runs one worker until SIGTERM/SIGINT, with its metrics endpoint and (worker 1) retention."""
    worker = Worker(settings, worker_id=worker_id)

    def _stop(_signum: int, _frame: object) -> None:
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if settings.ingest_metrics_port:
        start_http_server(settings.ingest_metrics_port + worker_id - 1, addr="127.0.0.1")
    if worker_id == 1 and settings.ingest_retention_interval:
        threading.Thread(target=_retention_loop, args=(settings, worker.stop), daemon=True).start()
    worker.run()
