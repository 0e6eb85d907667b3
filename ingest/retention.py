"""Retention of raw readings with `drop_chunks` (the Apache build of TimescaleDB has no retention policy).

Before raw readings go, anything that depends on them must have been summarised. Whoever runs
retention passes those checks explicitly as `guards` (there is no registry to forget to fill): each
may move the cut-off earlier until its summaries are written. The one guard today is the trace
domain's (a batch page's stored cold-chain history, `trace/coldchain_page.py: retention_guard`);
`ingest/cli.py: RETENTION_GUARDS` is the list every entry point hands over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from agritrace.db import Conn
from agritrace.ingest import metrics

log = logging.getLogger(__name__)

# A guard gets the proposed cut-off and returns the cut-off it can live with (the same or earlier).
RetentionGuard = Callable[[Conn, datetime], datetime]


def cutoff(conn: Conn, *, days: int, guards: Sequence[RetentionGuard]) -> datetime:
    """The time before which raw readings may be dropped, after every guard had its say."""
    row = conn.execute("SELECT now() - %s AS cutoff", (timedelta(days=days),)).fetchone()
    assert row is not None
    limit: datetime = row["cutoff"]
    for guard in guards:
        limit = min(limit, guard(conn, limit))
    return limit


def enforce(conn: Conn, *, days: int, guards: Sequence[RetentionGuard], dry_run: bool = False) -> list[str]:
    """Drops whole chunks of readings older than the cut-off; returns the chunks (dropped or not)."""
    limit = cutoff(conn, days=days, guards=guards)
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
