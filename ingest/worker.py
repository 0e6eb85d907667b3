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
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import floor
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import psycopg
from prometheus_client import start_http_server
from psycopg import errors as pg_errors

from agritrace import db
from agritrace.devices import broker
from agritrace.ingest import metrics, retention
from agritrace.ingest.senml import Limits, Reading, SenMLError, parse_pack
from agritrace.mqtt import connect_properties, new_client
from agritrace.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

COPY_READINGS = "COPY readings (time, channel_id, value) FROM STDIN (FORMAT BINARY)"
COPY_STAGING = "COPY readings_staging (time, channel_id, value) FROM STDIN (FORMAT BINARY)"
# PostgreSQL's binary COPY format, written directly rather than row by row through psycopg's
# dumpers (the worker's hottest loop): a signature, flags and header-extension length, then per row
# the field count and each field as length + big-endian value (timestamptz: int64 microseconds since
# 2000-01-01 UTC; int4; float8), then a -1 field count as trailer.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
COPY_ROW = struct.Struct("!hiqiiid")
PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z in Unix seconds
PG_EPOCH_DT = datetime(2000, 1, 1, tzinfo=UTC)


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
    packs: list[tuple[str, list[Reading]]] = field(default_factory=list)  # (gateway, its readings)
    readings: int = 0
    statuses: list[tuple[str, bool, datetime]] = field(default_factory=list)
    dead: list[tuple[str, str | None, str, str, bytes]] = field(default_factory=list)
    gateways: set[str] = field(default_factory=set)
    # Prepared by the parsing thread (`Worker._prepare`), so the writer thread only talks to the
    # database: the readings as a binary COPY stream, each channel's newest (time, value) and oldest time.
    stream: bytes = b""
    newest: dict[int, tuple[int, float]] = field(default_factory=dict)
    oldest: dict[int, int] = field(default_factory=dict)


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


# A temperature sent in another SenML unit than the channel's is stored in the channel's unit
# (issue 14: 281.15 K on a `Cel` channel is 8.0 °C, not 281.15 °C).
CONVERSIONS = {("K", "Cel"): -273.15, ("Cel", "K"): 273.15}


def encode_readings(
    packs: list[tuple[str, list[Reading]]],
    channel_ids: dict[str, dict[str, int]],
    units: dict[int, str | None] | None = None,
) -> tuple[bytes, dict[int, tuple[int, float]], dict[int, int]]:
    """Readings as one binary COPY stream, with each channel's newest (time, value) and oldest time,
    in microseconds since 2000-01-01 UTC (the stream's own time unit). `packs` holds (gateway,
    readings) pairs; `channel_ids` maps gateway -> resolved name -> channel id; `units` channel id ->
    the channel's unit (temperatures in the other unit are converted to it)."""
    out = bytearray(COPY_HEADER)
    pack_row = COPY_ROW.pack
    newest: dict[int, tuple[int, float]] = {}
    oldest: dict[int, int] = {}
    for gateway, readings in packs:
        ids = channel_ids[gateway]
        for name, t, value, unit in readings:
            cid = ids[name]
            if unit is not None and units is not None:
                shift = CONVERSIONS.get((unit, units.get(cid) or unit))
                if shift is not None:
                    value = value + shift
            # Whole seconds, then the fraction rounded half-even to microseconds, as
            # datetime.fromtimestamp() does (one rounding, so no drift for times like 1.7e9 + 0.1).
            seconds = floor(t)
            micros = (seconds - PG_EPOCH) * 1_000_000 + round((t - seconds) * 1e6)
            out += pack_row(3, 8, micros, 4, cid, 8, value)
            seen = newest.get(cid)
            if seen is None:
                newest[cid] = (micros, value)
                oldest[cid] = micros
            elif micros > seen[0]:
                newest[cid] = (micros, value)
            elif micros < oldest[cid]:
                oldest[cid] = micros
    out += COPY_TRAILER
    return bytes(out), newest, oldest


class _Stopping(Exception):
    """The worker was told to stop while waiting for the database."""


class Worker:
    """One ingest worker process: a persistent MQTT session, a parsing thread and a writing thread.

    Three threads, so that PostgreSQL never waits for Python: paho's network thread puts messages
    in the inbox; the main thread parses them into batches, registers new channels and encodes the
    batch as a binary COPY stream; the writer thread only writes: COPY, latest values, commit, then
    the acks. While it waits for PostgreSQL, the next batch is being prepared. The hand-over queue
    is first in, first out, so acks stay in the order the messages arrived (MQTT 5 section 4.6).
    """

    def __init__(self, settings: Settings, *, worker_id: int) -> None:
        self.settings = settings
        self.worker_id = worker_id
        # Its own broker account, whose one client id is pinned by the broker (`broker setup`).
        self.client_id = broker.ingest_username(settings, worker_id)
        self.limits = Limits(max_age=settings.ingest_max_age_days * 86400.0)
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self.stop = threading.Event()
        self._known_gateways: set[str] = set()
        self._channels: dict[str, dict[str, int]] = {}  # gateway -> resolved name -> channel id
        self._units: dict[int, str | None] = {}  # channel id -> its unit
        self._conn: db.Conn | None = None  # the writer thread's
        self._lookup: db.Conn | None = None  # the main thread's (autocommit): is a gateway registered?
        self._to_writer: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._writer_error: Exception | None = None
        self.client = new_client(
            self.client_id,
            username=self.client_id,
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
            log.error(
                "broker refused %s: %s (is the account provisioned? `agritrace broker setup --workers %d`)",
                self.client_id,
                reason,
                self.worker_id,
            )
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
        self._conn = self._open(staging=True)
        writer = threading.Thread(target=self._write_batches, name="ingest-writer")
        writer.start()
        self.client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()
        try:
            while not self.stop.is_set():
                try:
                    batch = self._collect()
                    self._prepare(batch)
                except _Stopping:  # the batch in hand is not acked: the broker redelivers it
                    break
                if batch.messages:
                    self._to_writer.put(batch)
        finally:
            # The writer finishes the batches in hand; messages still in the inbox are not acked:
            # the broker redelivers them next time.
            self._to_writer.put(None)
            writer.join()
            self.client.disconnect()
            self.client.loop_stop()
            for conn in (self._conn, self._lookup):
                if conn is not None:
                    conn.close()
        if self._writer_error is not None:
            raise RuntimeError("the ingest writer thread failed") from self._writer_error

    def _write_batches(self) -> None:
        """The writer thread: commits batches in the order they were collected, acks after each.

        An unexpected error stops the whole worker (nothing more is acked; the process exits with
        an error for its supervisor to restart it) rather than leaving it alive but stuck."""
        while (batch := self._to_writer.get()) is not None:
            if self._conn is None or self._writer_error is not None:
                continue  # stopping (or failed): nothing more is acked, the broker redelivers
            try:
                self._commit(batch)
            except _Stopping:  # (isolating a poison message) not acked: the broker redelivers
                continue
            except Exception as exc:
                log.exception("the writer thread failed; stopping the worker")
                self._writer_error = exc
                self.stop.set()

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
        # At most a quarter of the in-flight window per batch (one being written, two queued, one
        # being parsed): the broker keeps sending while batches wait for their commit.
        max_messages = max(1, s.ingest_receive_maximum // 4)
        while batch.readings < s.ingest_batch_readings and len(batch.messages) < max_messages:
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
            if readings:
                batch.packs.append((gateway, readings))
                batch.readings += len(readings)
        except SenMLError as exc:
            batch.dead.append((msg.topic, gateway, exc.reason, exc.detail, msg.payload))

    # --- database --------------------------------------------------------------------------
    def _open(self, *, staging: bool = False, autocommit: bool = False) -> db.Conn | None:
        """A database connection, retried every second until it opens or the worker stops (None)."""
        while not self.stop.is_set():
            try:
                conn = db.connect(self.settings.database_url, autocommit=autocommit)
                if staging:
                    conn.execute(
                        """CREATE TEMP TABLE IF NOT EXISTS readings_staging
                           (time timestamptz, channel_id integer, value double precision) ON COMMIT DELETE ROWS"""
                    )
                    conn.commit()
                return conn
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); retrying", exc)
                time.sleep(1)
        return None

    def _lookup_conn(self) -> db.Conn:
        """The parsing thread's autocommit connection (registered gateways, new channels)."""
        if self._lookup is None or self._lookup.closed:
            self._lookup = self._open(autocommit=True)
            if self._lookup is None:
                raise _Stopping
        return self._lookup

    def _on_lookup(self, work: Callable[[db.Conn], T]) -> T:
        """Runs `work` on the lookup connection, reopening it after a lost connection."""
        while True:
            conn = self._lookup_conn()
            try:
                return work(conn)
            except psycopg.OperationalError:
                conn.close()

    def _gateway_known(self, gateway: str) -> bool:
        if gateway in self._known_gateways:
            return True
        row = self._on_lookup(
            lambda conn: conn.execute("SELECT 1 FROM gateways WHERE id = %s", (gateway,)).fetchone()
        )
        if row is not None:
            self._known_gateways.add(gateway)
        return row is not None

    def _prepare(self, batch: Batch) -> None:
        """Registers the batch's new channels and encodes its readings (parsing thread)."""
        if not batch.packs:
            return
        self._on_lookup(lambda conn: self._register_channels(conn, batch))
        batch.stream, batch.newest, batch.oldest = encode_readings(batch.packs, self._channels, self._units)

    def _commit(self, batch: Batch) -> None:
        """Writes the batch in one transaction, retrying on lost connections, then acks its messages."""
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            assert self._conn is not None
            try:
                inserted, newest = self._write(self._conn, batch)
                break
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                self._conn.rollback()
            except psycopg.OperationalError as exc:
                # Nothing is acked while the database is away: the messages wait, in flight.
                log.warning("database error (%s); reconnecting and retrying the batch", exc)
                self._conn.close()
                time.sleep(min(5, 0.2 * attempt))
                self._conn = self._open(staging=True)
                if self._conn is None:  # stopping: nothing acked, the broker redelivers
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
        metrics.BATCH_READINGS.observe(batch.readings)
        metrics.READINGS.inc(inserted)
        metrics.DUPLICATES.inc(batch.readings - inserted)
        for _topic, _gw, reason, _detail, _payload in batch.dead:
            metrics.DEAD_LETTERS.labels(reason).inc()
        if newest is not None:
            metrics.READING_AGE.set(now - newest)

    def _isolate(self, batch: Batch, exc: psycopg.Error) -> None:
        if len(batch.messages) > 1:
            for msg in batch.messages:
                single = Batch()
                self._add(single, msg, count=False)
                self._prepare(single)
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

    def _register_channels(self, conn: db.Conn, batch: Batch) -> None:
        """Registers the batch's channels seen for the first time and caches their ids. On the
        parsing thread's autocommit connection: committed before the readings are written, so a
        cached id never points at a rolled-back row."""
        missing: dict[tuple[str, str], str | None] = {}
        for gateway, readings in batch.packs:
            known = self._channels.get(gateway, {})
            for r in readings:
                if r.name not in known:
                    missing.setdefault((gateway, r.name), r.unit)
        if not missing:
            return
        keys = sorted(missing)
        conn.execute(
            """INSERT INTO channels (gateway_id, name, unit)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING""",
            ([k[0] for k in keys], [k[1] for k in keys], [missing[k] for k in keys]),
        )
        rows = conn.execute(
            """SELECT c.id, c.gateway_id, c.name, c.unit FROM channels c
               JOIN unnest(%s::text[], %s::text[]) AS m(gateway_id, name) USING (gateway_id, name)""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
        for row in rows:
            self._channels.setdefault(row["gateway_id"], {})[row["name"]] = row["id"]
            self._units[row["id"]] = row["unit"]

    def _write(self, conn: db.Conn, batch: Batch) -> tuple[int, float | None]:
        """One transaction: readings (deduplicated), latest values, statuses, dead letters.

        Returns how many readings were new, and the newest reading's time (Unix seconds), if any."""
        inserted, newest_time = 0, None
        with conn.transaction():
            if batch.packs:
                inserted = self._copy_readings(conn, batch.stream, batch.readings)
                self._update_latest(conn, batch.newest, batch.oldest)
                newest_time = PG_EPOCH + max(m for m, _v in batch.newest.values()) / 1e6
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
        return inserted, newest_time

    @staticmethod
    def _copy_readings(conn: db.Conn, stream: bytes, rows: int) -> int:
        """Binary COPY of `rows` readings straight into readings; on a duplicate, through a staging
        table instead. Returns how many were new."""
        try:
            # Fast path: most batches hold no duplicate. The savepoint keeps the transaction usable.
            with conn.transaction(), conn.cursor().copy(COPY_READINGS) as copy:
                copy.write(stream)
            return rows
        except pg_errors.UniqueViolation:
            pass
        with conn.cursor() as cur:
            with cur.copy(COPY_STAGING) as copy:
                copy.write(stream)
            cur.execute(
                """INSERT INTO readings (time, channel_id, value)
                   SELECT DISTINCT ON (channel_id, time) time, channel_id, value FROM readings_staging
                    ORDER BY channel_id, time ON CONFLICT DO NOTHING"""
            )
            inserted = cur.rowcount
            cur.execute("TRUNCATE readings_staging")
        return inserted

    @staticmethod
    def _update_latest(conn: db.Conn, newest: dict[int, tuple[int, float]], oldest: dict[int, int]) -> None:
        """Keeps each channel's latest value by timestamp (not arrival), and when it was last written."""
        ordered = sorted(newest)  # a fixed lock order keeps two workers from deadlocking
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
                ordered,
                [PG_EPOCH_DT + timedelta(microseconds=newest[cid][0]) for cid in ordered],
                [newest[cid][1] for cid in ordered],
                [PG_EPOCH_DT + timedelta(microseconds=oldest[cid]) for cid in ordered],
            ),
        )


def _retention_loop(
    settings: Settings, stop: threading.Event, guards: Sequence[retention.RetentionGuard]
) -> None:
    """Enforces retention every `ingest_retention_interval` seconds (worker 1 only)."""
    while not stop.wait(settings.ingest_retention_interval):
        try:
            with db.connect(settings.database_url, autocommit=True) as conn:
                retention.enforce(conn, days=settings.ingest_retention_days, guards=guards)
                retention.purge_dead_letters(conn, days=settings.ingest_dead_letter_days)
        except psycopg.Error as exc:
            log.warning("retention run failed (%s); will retry", exc)


def run_worker(
    settings: Settings, *, worker_id: int, retention_guards: Sequence[retention.RetentionGuard]
) -> None:
    """Runs one worker until SIGTERM/SIGINT, with its metrics endpoint and (worker 1) retention, which
    keeps what `retention_guards` still need."""
    worker = Worker(settings, worker_id=worker_id)

    def _stop(_signum: int, _frame: object) -> None:
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if settings.ingest_metrics_port:
        start_http_server(settings.ingest_metrics_port + worker_id - 1, addr="127.0.0.1")
    if worker_id == 1 and settings.ingest_retention_interval:
        threading.Thread(
            target=_retention_loop, args=(settings, worker.stop, retention_guards), daemon=True
        ).start()
    worker.run()
