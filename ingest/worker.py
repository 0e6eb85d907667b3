"""The MQTT ingest worker: SenML packs and gateway status in, COPY batches out, ack after commit.

Delivery guarantee: a message is acknowledged to the broker (PUBACK) only after the database
transaction holding its readings (or its dead letter) has committed. A crash before that means the
broker redelivers it to the same persistent session once the worker reconnects with the same client
id; the readings primary key makes the redelivered copy a no-op.

This file holds the MQTT session, the batching and the acks; what a message is (topics, status
payloads, dead letters) is in `messages.py`, SenML in `senml.py`, the gateway and channel lookups in
`lookups.py`, and the database writes (binary COPY) in `store.py`.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from prometheus_client import start_http_server
from psycopg import errors as pg_errors

from agritrace import db, outage
from agritrace.devices import broker
from agritrace.ingest import messages, metrics, retention, store
from agritrace.ingest.lookups import Lookups, Stopping
from agritrace.ingest.messages import DeadLetter, Incoming, Rejected
from agritrace.ingest.senml import Limits, parse_pack
from agritrace.ingest.store import Batch
from agritrace.mqtt import connect_properties, new_client
from agritrace.settings import Settings

log = logging.getLogger(__name__)


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
        self._conn: db.Conn | None = None  # the writer thread's
        # The parsing thread's (autocommit): is a gateway registered, which channel id is a name?
        self.lookups = Lookups(lambda: self._open(autocommit=True))
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
        client.subscribe(messages.subscriptions(group))
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
                except Stopping:  # the batch in hand is not acked: the broker redelivers it
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
            if self._conn is not None:
                self._conn.close()
            self.lookups.close()
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
            except Stopping:  # (isolating a poison message) not acked: the broker redelivers
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
        topic = messages.parse_topic(msg.topic)
        gateway = topic.gateway_id
        if count:
            metrics.MESSAGES.labels(topic.kind).inc()
        try:
            if gateway is None or not topic.valid:
                raise Rejected("unknown-topic", "expected agritrace/v1/{gateway_id}/senml or /status")
            if not self.lookups.gateway_known(gateway):
                raise Rejected("unknown-gateway", f"no registered gateway {gateway[:64]!r}")
            batch.gateways.add(gateway)
            if topic.kind == "status":
                batch.statuses.append(
                    (gateway, messages.parse_status(msg.payload), datetime.fromtimestamp(msg.arrived, UTC))
                )
                return
            readings, skipped = parse_pack(msg.payload, now=msg.arrived, limits=self.limits)
            if skipped:
                metrics.SKIPPED.inc(skipped)
            if readings:
                batch.packs.append((gateway, readings))
                batch.readings += len(readings)
        except Rejected as exc:
            batch.dead.append(DeadLetter(msg.topic, gateway, exc.reason, exc.detail, msg.payload))

    # --- database --------------------------------------------------------------------------
    def _open(self, *, staging: bool = False, autocommit: bool = False) -> db.Conn | None:
        """A database connection, waited for as `agritrace.outage` says; None once the worker stops."""

        def open_() -> db.Conn:
            conn = db.connect(self.settings.database_url, autocommit=autocommit)
            if staging:
                store.prepare_writer(conn)
            return conn

        return outage.when_up(open_, stop=self.stop, what=f"ingest worker {self.worker_id}")

    def _prepare(self, batch: Batch) -> None:
        """Registers the batch's new channels and encodes its readings (parsing thread)."""
        if not batch.packs:
            return
        self.lookups.register_channels(batch)
        batch.stream, batch.newest, batch.oldest = store.encode_readings(
            batch.packs, self.lookups.channels, self.lookups.units
        )

    def _commit(self, batch: Batch) -> None:
        """Writes the batch in one transaction, retrying on lost connections, then acks its messages."""
        started = time.perf_counter()
        while True:
            assert self._conn is not None
            try:
                inserted, newest = store.write(self._conn, batch)
                break
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                self._conn.rollback()
            except psycopg.OperationalError as exc:
                # Nothing is acked while the database is away: the messages wait, in flight.
                log.warning("database error (%s); reconnecting and retrying the batch", exc)
                self._conn.close()
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
        for dead in batch.dead:
            metrics.DEAD_LETTERS.labels(dead.reason).inc()
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
        if any(d.reason == "storage-error" for d in batch.dead):
            # Even its dead letter is refused: log it with its bytes and ack, or it would loop forever.
            log.critical("cannot store message on %s (%s); dropped: %r", msg.topic, exc, msg.payload[:2000])
            self.client.ack(msg.mid, msg.qos)
            return
        log.error("database refused a message on %s: %s", msg.topic, exc)
        gateway = messages.parse_topic(msg.topic).gateway_id
        dead = DeadLetter(msg.topic, gateway, "storage-error", str(exc)[:500], msg.payload)
        self._commit(Batch(messages=[msg], dead=[dead]))


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
