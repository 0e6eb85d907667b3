"""Retention of raw readings with `drop_chunks` (the Apache build of TimescaleDB has no retention policy).

Before raw readings go, anything that depends on them must have been summarised. The cold-chain
domain owns those summaries (a batch's cold-chain history, certificate figures such as mean kinetic
temperature): it registers a guard with `register_guard`, which may move the cut-off earlier
until its summaries are written. Without guards, only the configured period counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from agritrace.db import Conn
from agritrace.ingest import metrics

log = logging.getLogger(__name__)

# A guard gets the proposed cut-off and returns the cut-off it can live with (the same or earlier).
RetentionGuard = Callable[[Conn, datetime], datetime]
_guards: list[RetentionGuard] = []


def register_guard(guard: RetentionGuard) -> None:
    """Registers a check that runs before raw readings are dropped (cold-chain summaries hook in here)."""
    if guard not in _guards:
        _guards.append(guard)


def cutoff(conn: Conn, *, days: int) -> datetime:
    """The time before which raw readings may be dropped, after every guard had its say."""
    row = conn.execute("SELECT now() - %s AS cutoff", (timedelta(days=days),)).fetchone()
    assert row is not None
    limit: datetime = row["cutoff"]
    for guard in _guards:
        limit = min(limit, guard(conn, limit))
    return limit


def enforce(conn: Conn, *, days: int, dry_run: bool = False) -> list[str]:
    """Drops whole chunks of readings older than the cut-off; returns the chunks (dropped or not)."""
    limit = cutoff(conn, days=days)
    # The application role does not own the hypertable: this function (owner's rights) drops
    # chunks, never any newer than the ingest window (migration 0013).
    rows = conn.execute("SELECT readings_drop_chunks(%s, %s) AS chunk", (limit, dry_run)).fetchall()
    if not dry_run:
        metrics.RETENTION_DROPPED.inc(len(rows))
        if rows:
            log.info("retention: dropped %d chunk(s) of readings older than %s", len(rows), limit)
    return [str(r["chunk"]) for r in rows]


def purge_dead_letters(conn: Conn, *, days: int) -> int:
    """Deletes dead letters older than `days` (they are for diagnosis, not records); returns how many."""
    cur = conn.execute("DELETE FROM dead_letters WHERE received_at < now() - %s", (timedelta(days=days),))
    return cur.rowcount
