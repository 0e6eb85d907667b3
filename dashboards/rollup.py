"""The 15-minute readings rollup the dashboards read: re-aggregates the buckets that changed.

Each run claims the channels whose `rollup_from` is set (written by the ingest worker with the
oldest reading time of every batch, so late readings are re-rolled too), clears it, and in the same
transaction replaces the channel's buckets from the one holding the reading just before
`rollup_from` (that reading's duration ends at the first new one) up to the newest. A channel
written again while a run is in progress keeps (or gets back) its mark: the worker's row update
waits for the run's lock on the channel, then lowers `rollup_from` again.
"""

from __future__ import annotations

import logging
import time

from agritrace.db import Conn

log = logging.getLogger(__name__)

# Bands come from the reporting views so the rollup and the raw-reading panels agree on a
# channel's product (its profile first, then its name).
_ROLL = """
WITH rows AS (
    SELECT r.channel_id, r.time, r.value,
           -- A reading stands until the next one, at most the channel's expected interval times its
           -- tolerance (coldchain_max_stand, migration 0018); the newest (no next one) stands 0 here.
           least(coalesce(date_part('epoch', lead(r.time) OVER (PARTITION BY r.channel_id ORDER BY r.time))
                          - date_part('epoch', r.time), 0),
                 date_part('epoch', s.max_stand)) AS dur
      FROM readings r JOIN rollup_starts s ON s.channel_id = r.channel_id AND r.time >= s.b0
)
INSERT INTO readings_15m (channel_id, bucket, n, total, min_value, max_value, mk, mk_seconds, seconds, seconds_out,
                          max_above, max_below)
SELECT x.channel_id, time_bucket('15 minutes', x.time), count(*), sum(x.value), min(x.value), max(x.value),
       -- Time-weighted MKT terms: a panel's MKT is mkt_celsius(sum(mk), sum(mk_seconds)).
       sum(x.dur * mkt_arrhenius(x.value)), sum(x.dur) FILTER (WHERE mkt_arrhenius(x.value) IS NOT NULL),
       sum(x.dur),
       coalesce(sum(x.dur) FILTER (WHERE x.value > b.temp_max OR x.value < b.temp_min), 0),
       max(x.value - b.temp_max), max(b.temp_min - x.value)
  FROM rows x
  JOIN reporting.channels c ON c.channel_id = x.channel_id
  LEFT JOIN reporting.product_bands b ON b.product = c.product
 GROUP BY 1, 2
"""

# Custody still open is never stored (the page summarises it live), so only ended custody counts.
# b0 reaches back to the reading before the new ones: its duration ends at the first new reading.
_LATE_FOR_TRACE_PAGES = """
SELECT trace_coldchain_invalidate(ARRAY(
    SELECT DISTINCT k.batch_id FROM batch_custody k JOIN rollup_starts s ON s.channel_id = k.channel_id
     WHERE k.ended_at > s.b0))
"""


def run_once(conn: Conn) -> int:
    """Re-rolls every channel marked since the last run; returns how many channels were rolled."""
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS rollup_starts (channel_id int PRIMARY KEY, b0 timestamptz,"
            " max_stand interval)"
        )
        conn.execute("TRUNCATE rollup_starts")
        # Claim and clear the marks; each channel is re-rolled from the bucket of the reading before
        # its mark ('-infinity', or no earlier reading: its whole history). All in SQL: '-infinity'
        # has no Python datetime.
        claimed = conn.execute(
            """WITH c AS (SELECT id, rollup_from FROM channels WHERE rollup_from IS NOT NULL
                           ORDER BY id FOR UPDATE),
                    u AS (UPDATE channels ch SET rollup_from = NULL FROM c WHERE ch.id = c.id
                          RETURNING c.id, c.rollup_from AS f)
               INSERT INTO rollup_starts (channel_id, b0, max_stand)
               SELECT u.id, CASE WHEN u.f = '-infinity' THEN '-infinity'
                                 ELSE time_bucket('15 minutes', coalesce(
                                      (SELECT max(r.time) FROM readings r WHERE r.channel_id = u.id AND r.time < u.f),
                                      u.f)) END,
                      coldchain_max_stand(u.id, m.profile_id)
                 FROM u LEFT JOIN coldchain_monitored_channels m ON m.channel_id = u.id"""
        ).rowcount
        if not claimed:
            return 0
        # A temp table has no statistics: without them the planner scans every reading instead of
        # the few recent ones per claimed channel.
        conn.execute("ANALYZE rollup_starts")
        conn.execute(
            """DELETE FROM readings_15m m USING rollup_starts s
                WHERE m.channel_id = s.channel_id AND m.bucket >= s.b0"""
        )
        conn.execute(_ROLL)
        # The consumer pages' stored cold-chain summaries (trace_coldchain_pages, migration 0011)
        # of lots whose ended custody these readings fall into are stale now: late readings.
        conn.execute(_LATE_FOR_TRACE_PAGES)
    return claimed


def run(conn: Conn, *, every: float, once: bool = False) -> None:
    """Rolls up every `every` seconds until interrupted (or once)."""
    while True:
        started = time.perf_counter()
        rolled = run_once(conn)
        if rolled:
            log.info("rolled up %d channel(s) in %.2f s", rolled, time.perf_counter() - started)
        if once:
            return
        time.sleep(max(0.0, every - (time.perf_counter() - started)))
