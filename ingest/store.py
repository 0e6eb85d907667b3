"""Where an ingest batch goes into PostgreSQL: one transaction of binary COPY (readings), the
channels' latest values, gateway statuses and dead letters. Plain functions on a connection; the
worker (`worker.py`) decides when to call them and acks after the commit."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import floor

from psycopg import errors as pg_errors

from agritrace import db
from agritrace.ingest.messages import DeadLetter, Incoming
from agritrace.ingest.senml import Reading

STAGING_TABLE = """CREATE TEMP TABLE IF NOT EXISTS readings_staging
                   (time timestamptz, channel_id integer, value double precision) ON COMMIT DELETE ROWS"""
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


@dataclass
class Batch:
    """What one transaction writes, and the messages it will ack."""

    messages: list[Incoming] = field(default_factory=list)
    packs: list[tuple[str, list[Reading]]] = field(default_factory=list)  # (gateway, its readings)
    readings: int = 0
    statuses: list[tuple[str, bool, datetime]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    gateways: set[str] = field(default_factory=set)
    # Prepared by the parsing thread (`encode_readings`), so the writer thread only talks to the
    # database: the readings as a binary COPY stream, each channel's newest (time, value) and oldest time.
    stream: bytes = b""
    newest: dict[int, tuple[int, float]] = field(default_factory=dict)
    oldest: dict[int, int] = field(default_factory=dict)


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


def prepare_writer(conn: db.Conn) -> None:
    """Makes a fresh connection ready for `write` (its session's staging table for duplicates)."""
    conn.execute(STAGING_TABLE)
    conn.commit()


def write(conn: db.Conn, batch: Batch) -> tuple[int, float | None]:
    """One transaction: readings (deduplicated), latest values, statuses, dead letters.

    Returns how many readings were new, and the newest reading's time (Unix seconds), if any."""
    inserted, newest_time = 0, None
    with conn.transaction():
        if batch.packs:
            inserted = copy_readings(conn, batch.stream, batch.readings)
            update_latest(conn, batch.newest, batch.oldest)
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


def copy_readings(conn: db.Conn, stream: bytes, rows: int) -> int:
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


def update_latest(conn: db.Conn, newest: dict[int, tuple[int, float]], oldest: dict[int, int]) -> None:
    """Keeps each channel's latest value by timestamp (not arrival), and when it was last written."""
    ordered = sorted(newest)  # a fixed lock order keeps two workers from deadlocking
    # last_ingested_at tells the alert evaluator to look again, so it must grow with every commit:
    # now() is when the transaction began, and a transaction begun before another's can commit
    # after the evaluator has seen that one's (later) time, and would then never be looked at.
    # clock_timestamp() is read as the row is written (again after waiting for another worker's
    # update of it), so it is later than any value already committed.
    # rollup_from: the oldest time written since the dashboards' rollup job last ran (late
    # readings included), so it re-aggregates exactly the buckets that changed; coldchain_from
    # likewise for the alert evaluator (it evaluates from the oldest reading that arrived).
    conn.execute(
        """UPDATE channels c SET
               last_value = CASE WHEN c.last_time IS NULL OR u.time > c.last_time THEN u.value ELSE c.last_value END,
               last_time = greatest(c.last_time, u.time),
               last_ingested_at = greatest(c.last_ingested_at, clock_timestamp()),
               rollup_from = least(c.rollup_from, u.oldest),
               coldchain_from = least(c.coldchain_from, u.oldest)
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
