"""What a consumer page needs of a lot's cold chain: the summary (`agritrace.coldchain.summary`, the
one implementation) as the page's JSON with its chart, cached while custody goes on, stored once it
has ended (trace_coldchain_pages), and recorded as evidence before retention drops the readings."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from agritrace import audit
from agritrace.coldchain import summary as coldchain_summary
from agritrace.db import Conn

CHART_POINTS = 96
# The summary is the costly part of a page view (a pass over the readings). Once every custody
# interval of a lot has ended it is stored in the database (trace_coldchain_pages, invalidated by
# changes, see migration 0011); while the lot is still in custody each process keeps it this long.
# Readings arriving late and edited profiles show up within this delay; recalls, certificates and
# events are always read fresh.
CACHE_SECONDS = 60.0
CACHE_MAX_ENTRIES = 20_000
_cache: dict[tuple[str, tuple[int, ...]], tuple[float, dict[str, Any], str]] = {}
_cache_lock = threading.Lock()
# Chart axis labels are read by consumers in China.
DISPLAY_TZ = ZoneInfo("Asia/Shanghai")


def page_summary(conn: Conn, *, product: str, batch_ids: list[int]) -> coldchain_summary.Summary:
    """The lot's summary (its custody and its sources'), in about CHART_POINTS chart buckets."""
    return coldchain_summary.summarize_lot(conn, product=product, batch_ids=batch_ids, points=CHART_POINTS)


# A stored summary (written before retention dropped the readings) stands for the live one while it
# still covers every custody interval of the batch and its sources.
_STORED = """
SELECT s.summary, s.chart_svg
  FROM batch_coldchain_summaries s,
       (SELECT min(started_at) AS first, max(coalesce(ended_at, 'infinity')) AS last
          FROM batch_custody WHERE batch_id = ANY(%(history)s)) k
 WHERE s.batch_id = %(batch)s AND s.covers_from <= k.first AND s.covers_to >= k.last
"""


def summarize_stored_or_live(
    conn: Conn, *, product: str, batch_ids: list[int], batch_id: int | None = None
) -> tuple[dict[str, Any], str]:
    """The summary as JSON and its chart as SVG, computed now from the readings.

    `batch_id` (the lot whose history `batch_ids` is) lets a stored retention summary
    (batch_coldchain_summaries) stand in for readings that retention has dropped."""
    stored = (
        conn.execute(_STORED, {"batch": batch_id, "history": batch_ids}).fetchone()
        if batch_id is not None
        else None
    )
    if stored is not None:
        return _current_names(stored["summary"]), stored["chart_svg"]
    cold = page_summary(conn, product=product, batch_ids=batch_ids)
    return cold.as_json(), chart_svg(cold)


def _current_names(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary recorded before migration 0018 under the page's old names, in today's (the figures
    are as they were recorded)."""
    if "minutes_outside_band" not in summary:
        return summary
    return {
        **summary,
        "band": summary.get("band_celsius"),
        "mkt": summary.get("mean_kinetic_temperature"),
        "minutes_out_of_band": summary["minutes_outside_band"],
        "buckets": [
            {"time": p["time"], "min": p["min"], "max": p["max"], "mean": p["avg"]}
            for p in summary.get("series", [])
        ],
    }


def summarize_cached(
    conn: Conn, *, product: str, batch_ids: list[int], batch_id: int | None = None
) -> tuple[dict[str, Any], str]:
    """`summarize_stored_or_live`, reusing a result younger than CACHE_SECONDS in this process.

    For lots still in custody (their summary changes with every reading); ended custody is stored
    in the database instead (`store_page_summary`)."""
    key = (product, tuple(batch_ids))
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    summary, chart = summarize_stored_or_live(conn, product=product, batch_ids=batch_ids, batch_id=batch_id)
    with _cache_lock:
        if len(_cache) >= CACHE_MAX_ENTRIES:
            _cache.clear()
        _cache[key] = (now + CACHE_SECONDS, summary, chart)
    return summary, chart


# The page's stored summary (migration 0011): written only while `gen` is still what the page read
# before computing (custody reopened, late readings, a band edit since then all bump it).
_STORE_PAGE = """
INSERT INTO trace_coldchain_pages AS p (batch_id, gen, summary, series, chart_svg, computed_at)
VALUES (%(batch)s, %(gen)s, %(summary)s, %(series)s, %(chart)s, now())
ON CONFLICT (batch_id) DO UPDATE
   SET summary = EXCLUDED.summary, series = EXCLUDED.series, chart_svg = EXCLUDED.chart_svg,
       computed_at = EXCLUDED.computed_at
 WHERE p.gen = EXCLUDED.gen
"""


def store_page_summary(conn: Conn, *, batch_id: int, gen: int, summary: dict[str, Any], chart: str) -> None:
    """Stores a lot's page summary computed after reading `gen` (skipped if invalidated since)."""
    figures = {k: v for k, v in summary.items() if k != "buckets"}
    conn.execute(
        _STORE_PAGE,
        {
            "batch": batch_id,
            "gen": gen,
            "summary": Jsonb(figures),
            "series": Jsonb(summary.get("buckets", [])),
            "chart": chart,
        },
    )


# Batches whose page depends on custody readings and that have no stored summary covering that
# custody, with the window of it (the batch's own custody and its sources').
_UNSUMMARISED = """
WITH RECURSIVE hist(batch_id, id) AS (
    SELECT b.id, b.id FROM batches b
    UNION
    SELECT h.batch_id, l.parent_id FROM hist h JOIN batch_lineage l ON l.child_id = h.id
), windows AS (
    -- covers_to is NULL while any of the custody is still open.
    SELECT h.batch_id, min(k.started_at) AS covers_from,
           CASE WHEN bool_or(k.ended_at IS NULL) THEN NULL ELSE max(k.ended_at) END AS covers_to,
           array_agg(DISTINCT h.id ORDER BY h.id) AS history_ids
      FROM hist h JOIN batch_custody k ON k.batch_id = h.id
     GROUP BY h.batch_id
)
SELECT w.*, b.product
  FROM windows w JOIN batches b ON b.id = w.batch_id
 WHERE NOT EXISTS (SELECT 1 FROM batch_coldchain_summaries s
                    WHERE s.batch_id = w.batch_id AND s.covers_from <= w.covers_from AND s.covers_to >= w.covers_to)
 ORDER BY w.batch_id
"""
_STORE = """
INSERT INTO batch_coldchain_summaries (batch_id, covers_from, covers_to, summary, chart_svg,
                                       readings_count, readings_sha256)
SELECT %(batch_id)s, %(covers_from)s, %(covers_to)s, %(summary)s, %(chart)s, d.n, d.sha256
  FROM custody_readings_digest(%(history)s) d
ON CONFLICT (batch_id) DO UPDATE SET summarised_at = now(), covers_from = EXCLUDED.covers_from,
    covers_to = EXCLUDED.covers_to, summary = EXCLUDED.summary, chart_svg = EXCLUDED.chart_svg,
    readings_count = EXCLUDED.readings_count, readings_sha256 = EXCLUDED.readings_sha256
"""


def store_summary(conn: Conn, *, batch: dict[str, Any]) -> None:
    """Stores a batch's summary (a row of _UNSUMMARISED) with the count and digest of the readings it
    was computed from: an audited record, so its readings may go and edits to them show."""
    history = list(batch["history_ids"])
    cold = page_summary(conn, product=batch["product"], batch_ids=history)
    conn.execute(
        _STORE,
        {
            "batch_id": batch["batch_id"],
            "covers_from": batch["covers_from"],
            "covers_to": batch["covers_to"],
            "summary": Jsonb(cold.as_json()),
            "chart": chart_svg(cold),
            "history": history,
        },
    )


EVIDENCE_ACTOR = "trace:custody-evidence"
# Summaries whose readings gained late arrivals since they were recorded.
_LATE = """
SELECT s.batch_id, s.covers_from, s.covers_to, b.product, batch_history(s.batch_id) AS history_ids
  FROM batch_coldchain_summaries s JOIN batches b ON b.id = s.batch_id
 WHERE s.batch_id IN (SELECT row_key::bigint FROM audit_evidence_drift()
                       WHERE table_name = 'batch_coldchain_summaries' AND late)
"""


def record_evidence(conn: Conn) -> int:
    """Enters into the audit chain the cold-chain summary of every lot whose custody has all ended
    (and again where late readings arrived since); returns how many were recorded. `agritrace audit
    checkpoint` runs it before it signs the chain's head."""
    recorded = 0
    with conn.transaction():
        audit.set_actor(conn, EVIDENCE_ACTOR)
        due = [b for b in conn.execute(_UNSUMMARISED).fetchall() if b["covers_to"] is not None]
        due += conn.execute(_LATE).fetchall()
        for batch in due:
            store_summary(conn, batch=batch)
            recorded += 1
    return recorded


def retention_guard(conn: Conn, cutoff: datetime) -> datetime:
    """Raw-readings retention guard (in `agritrace.ingest.cli.RETENTION_GUARDS`).

    Batches whose custody has all ended and reaches back before the cut-off are summarised now (late
    readings had the whole retention period to arrive); the cut-off then moves back to the earliest
    custody start of any batch still unsummarised (custody still open), so no reading a page needs
    goes before its summary exists."""
    limit = cutoff
    with conn.transaction():  # the actor setting lasts one transaction, autocommit or not
        audit.set_actor(conn, "retention:cold-chain-summaries")
        for batch in conn.execute(_UNSUMMARISED).fetchall():
            if batch["covers_from"] >= cutoff:
                continue  # nothing of it would be dropped yet
            if batch["covers_to"] is not None and batch["covers_to"] <= cutoff:
                store_summary(conn, batch=batch)
            else:
                limit = min(limit, batch["covers_from"])
    return limit


def clear_cache() -> None:
    """Forgets cached summaries (tests, and after bulk corrections)."""
    with _cache_lock:
        _cache.clear()


def chart_svg(cc: coldchain_summary.Summary, *, width: int = 340, height: int = 140) -> str:
    """A small inline SVG: the product band shaded, the min-max envelope, the mean line."""
    points = cc.buckets
    if not points:
        return ""
    pad_l, pad_r, pad_t, pad_b = 30, 6, 6, 18
    values = [p.min for p in points] + [p.max for p in points]
    values += [b for b in cc.band if b is not None]
    vmin, vmax = float(min(values)) - 1, float(max(values)) + 1
    t0: float = points[0].time.timestamp()
    t1: float = max(points[-1].time.timestamp(), t0 + 1)
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t: datetime) -> float:
        return round(pad_l + (t.timestamp() - t0) / (t1 - t0) * w, 1)

    def y(v: float) -> float:
        return round(pad_t + (vmax - v) / (vmax - vmin) * h, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="chart" role="img" '
        f'aria-label="temperature chart">'
    ]
    lo = cc.band[0] if cc.band[0] is not None else vmin
    hi = cc.band[1] if cc.band[1] is not None else vmax
    parts.append(
        f'<rect x="{pad_l}" y="{y(hi)}" width="{w}" height="{round(y(lo) - y(hi), 1)}" fill="#d9f2e3"/>'
    )
    env = [f"{x(p.time)},{y(p.max)}" for p in points] + [f"{x(p.time)},{y(p.min)}" for p in reversed(points)]
    parts.append(f'<polygon points="{" ".join(env)}" fill="#9cc3e6" opacity="0.6"/>')
    line = " ".join(f"{x(p.time)},{y(p.mean)}" for p in points)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#1f5f99" stroke-width="1.5"/>')
    for v in (vmin + 1, vmax - 1, *[b for b in cc.band if b is not None]):
        parts.append(f'<text x="2" y="{y(v) + 3}" font-size="9" fill="#555">{v:.0f}°C</text>')
    parts.append(
        f'<text x="{pad_l}" y="{height - 4}" font-size="9" fill="#555">{points[0].time.astimezone(DISPLAY_TZ):%m-%d %H:%M}</text>'
    )
    parts.append(
        f'<text x="{width - pad_r}" y="{height - 4}" font-size="9" fill="#555" text-anchor="end">'
        f"{points[-1].time.astimezone(DISPLAY_TZ):%m-%d %H:%M}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
