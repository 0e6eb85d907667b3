"""The `agritrace alerts run` process: evaluate, then publish alert changes on MQTT; webhooks in a thread."""

from __future__ import annotations

import logging
import signal
import threading
import time

import httpx
import paho.mqtt.client as mqtt
import psycopg

from agritrace import audit
from agritrace.coldchain import evaluator, notify, profiles
from agritrace.db import Conn, connect
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import Settings

log = logging.getLogger(__name__)
# One evaluator per database at a time: a second one waits on this lock (a warm standby).
LOCK_KEY = 0x41677243  # "AgrC"
SILENCE_CHECK_EVERY = 5.0  # seconds
# Notified by every commit that advances channels.last_ingested_at (migration 0011...ingest-notify).
INGEST_CHANNEL = "coldchain_ingest"
# Passes start at most this often, however often readings are committed: a burst of ingest batches
# is evaluated together instead of one pass per batch.
MIN_PASS_GAP = 0.1  # seconds


def run(settings: Settings, *, interval: float = 0.5, stop: threading.Event | None = None) -> None:
    """Runs until `stop` is set (or SIGTERM/SIGINT when called from the main thread). A pass starts
    when readings are committed (LISTEN), and at the latest `interval` seconds after the previous one."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    hooks = threading.Thread(target=_webhooks, args=(settings, interval, stop), name="webhooks", daemon=True)
    hooks.start()
    try:
        while not stop.is_set():
            try:
                with connect(settings.database_url, autocommit=True) as conn:
                    _hold_lock(conn, stop)
                    if stop.is_set():
                        break
                    # Only the lock holder connects: the account's one client id is pinned at the
                    # broker, so a warm standby must not hold a session with it too.
                    client = _publisher(settings)
                    try:
                        _evaluate(conn, client, stop, interval=interval)
                    finally:
                        client.disconnect()
                        client.loop_stop()
            except (psycopg.OperationalError, ConnectionError) as exc:
                log.warning("alerts: %s; retrying in 2 s", exc)
                stop.wait(2)
    finally:
        hooks.join(timeout=10)


def _publisher(settings: Settings) -> mqtt.Client:
    """The alert publisher's broker session (its own account, which may publish alert topics only)."""
    client = new_client(
        settings.mqtt_alerts_username,
        username=settings.mqtt_alerts_username,
        password=settings.mqtt_alerts_password.get_secret_value(),
    )
    connect_blocking(client, settings)  # then paho's loop reconnects by itself
    return client


def _evaluate(conn: Conn, client: mqtt.Client, stop: threading.Event, *, interval: float) -> None:
    """Evaluates and publishes until `stop` (or a lost database connection)."""
    # Before the first pass: readings committed during it wake the next one.
    conn.execute(f"LISTEN {INGEST_CHANNEL}")
    with conn.transaction():
        audit.set_actor(conn, evaluator.ACTOR)
        profiles.ensure_defaults(conn)
    last_silence_check = 0.0
    while not stop.is_set():
        began = time.monotonic()
        # Silence is measured in tens of minutes: checking it every few seconds is plenty, while
        # new readings are looked at as soon as they are committed.
        silence = began - last_silence_check >= SILENCE_CHECK_EVERY
        evaluator.run_once(conn, silence=silence)
        if silence:
            last_silence_check = began
        notify.publish_pending(conn, client)
        _wait_for_readings(conn, stop, began=began, interval=interval)


def _wait_for_readings(conn: Conn, stop: threading.Event, *, began: float, interval: float) -> None:
    """Returns when readings were committed since the last wait (an ingest notification, or one
    already queued during the pass), but not before `MIN_PASS_GAP` after the pass `began`; or when
    `interval` has passed since then without any (polling as the fallback)."""
    deadline = began + interval
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        # Drains every notification queued so far (always, or a slow evaluator would pile them up),
        # else waits for the first one to arrive; a second at a time, so a stop is not kept waiting.
        woken = sum(1 for _ in conn.notifies(timeout=min(remaining, 1.0), stop_after=1))
        if woken or remaining <= 1.0 or stop.is_set():
            break
    gap = MIN_PASS_GAP - (time.monotonic() - began)
    if gap > 0:
        stop.wait(gap)


def _hold_lock(conn: Conn, stop: threading.Event) -> None:
    while not stop.is_set():
        row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (LOCK_KEY,)).fetchone()
        if row and row["ok"]:
            return
        stop.wait(2)


def _webhooks(settings: Settings, interval: float, stop: threading.Event) -> None:
    """Delivers alert changes to webhooks; a slow receiver delays only the webhooks, never the alerts."""
    with httpx.Client(timeout=5.0) as http:
        while not stop.is_set():
            try:
                with connect(settings.database_url, autocommit=True) as conn:
                    while not stop.is_set():
                        if notify.deliver_pending(conn, http) == 0:
                            stop.wait(interval)
            except psycopg.OperationalError as exc:
                log.warning("webhooks: %s; retrying in 2 s", exc)
                stop.wait(2)
