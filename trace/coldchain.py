"""A batch's cold chain: readings of the channels that held it, over the intervals they held it."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from agritrace import audit
from agritrace.coldchain import profiles as coldchain_profiles
from agritrace.coldchain import summary as coldchain_summary
from agritrace.db import Conn

# Time outside the band tolerated before the verdict becomes an excursion (short door openings).
TOLERANCE_MINUTES = 30.0
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

_CUSTODY = """
SELECT k.channel_id, k.started_at, least(coalesce(k.ended_at, now()), now()) AS ended_at
  FROM batch_custody k JOIN channels ch ON ch.id = k.channel_id
 WHERE k.batch_id = ANY(%s) AND ch.unit = 'Cel' AND k.started_at < now()
 ORDER BY k.started_at
"""
# The product's band is its cold-chain profile (editable: `PATCH /api/v1/coldchain/profiles/{name}`), the same
# one the alert rules of a channel holding it use.
_BAND = "SELECT temp_low, temp_high FROM coldchain_profiles WHERE name = %s"


@dataclass(frozen=True)
class ColdChain:
    """Figures and verdict for a batch's cold chain, plus a downsampled series for the chart."""

    product: str
    band: tuple[float | None, float | None]
    readings: int
    minimum: float | None
    maximum: float | None
    mean: float | None
    mkt: float | None
    minutes_inside: float
    minutes_outside: float
    excursions: int
    first: datetime | None
    last: datetime | None
    verdict: str  # "ok" | "excursion" | "no_data"
    series: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "band_celsius": {"low": self.band[0], "high": self.band[1]},
            "readings": self.readings,
            "min": round(self.minimum, 1) if self.minimum is not None else None,
            "max": round(self.maximum, 1) if self.maximum is not None else None,
            "mean": self.mean,
            "mean_kinetic_temperature": self.mkt,
            "minutes_in_band": round(self.minutes_inside, 1),
            "minutes_outside_band": round(self.minutes_outside, 1),
            "excursions": self.excursions,
            "from": self.first.isoformat() if self.first else None,
            "to": self.last.isoformat() if self.last else None,
            "verdict": self.verdict,
            "series": [
                {"time": p["t"].isoformat(), "min": p["lo"], "max": p["hi"], "avg": p["v"]}
                for p in self.series
            ],
        }


def product_band(conn: Conn, *, product: str) -> tuple[float | None, float | None]:
    """The product's temperature band (°C) from its cold-chain profile; unbounded without one."""
    row = conn.execute(_BAND, (product,)).fetchone()
    if row is not None:
        return row["temp_low"], row["temp_high"]
    # The cold-chain worker writes the default profiles when it first starts; until then (and a
    # public page never writes them) the defaults are what that write would hold.
    for name, _, temp_low, temp_high, _, _ in coldchain_profiles.DEFAULT_PROFILES:
        if name == product:
            return temp_low, temp_high
    return None, None


def summarize(conn: Conn, *, product: str, batch_ids: list[int]) -> ColdChain:
    """Summarises the temperature readings over the custody intervals of these batches (a lot and its sources).

    The figures are `agritrace.coldchain.summary.summarize_custody` against the product's profile band
    (the cold-chain domain's one implementation), in about CHART_POINTS buckets over the whole span.
    """
    band = product_band(conn, product=product)
    custody = conn.execute(_CUSTODY, (batch_ids,)).fetchall()
    empty = ColdChain(product, band, 0, None, None, None, None, 0.0, 0.0, 0, None, None, "no_data", [])
    if not custody:
        return empty
    span = (max(k["ended_at"] for k in custody) - min(k["started_at"] for k in custody)).total_seconds()
    s = coldchain_summary.summarize_custody(
        conn,
        intervals=[(k["channel_id"], k["started_at"], k["ended_at"]) for k in custody],
        # An unbounded side is infinite, not None: None would fall back to the channel's own profile.
        low=band[0] if band[0] is not None else -math.inf,
        high=band[1] if band[1] is not None else math.inf,
        bucket=timedelta(seconds=max(60, int(span / CHART_POINTS) + 1)),
    )
    if not s["readings"]:
        return empty
    temp = s["temperature"]
    series = [
        {"t": datetime.fromisoformat(b["start"]), "lo": b["min"], "hi": b["max"], "v": b["mean"]}
        for b in s["buckets"]
    ]
    return ColdChain(
        product=product,
        band=band,
        readings=int(s["readings"]),
        minimum=temp["min"],
        maximum=temp["max"],
        mean=round(temp["mean"], 2),
        mkt=round(temp["mkt"], 2) if temp["mkt"] is not None else None,
        minutes_inside=s["minutes_in_band"],
        minutes_outside=s["minutes_out_of_band"],
        excursions=int(s["excursions"]),
        first=s["first"],
        last=s["last"],
        verdict="excursion" if s["minutes_out_of_band"] > TOLERANCE_MINUTES else "ok",
        series=series,
    )


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
        return stored["summary"], stored["chart_svg"]
    cold = summarize(conn, product=product, batch_ids=batch_ids)
    return cold.as_json(), chart_svg(cold)


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
    figures = {k: v for k, v in summary.items() if k != "series"}
    conn.execute(
        _STORE_PAGE,
        {
            "batch": batch_id,
            "gen": gen,
            "summary": Jsonb(figures),
            "series": Jsonb(summary.get("series", [])),
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
    cold = summarize(conn, product=batch["product"], batch_ids=history)
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
    """Raw-readings retention guard (`agritrace.ingest.retention.register_guard`).

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


def chart_svg(cc: ColdChain, *, width: int = 340, height: int = 140) -> str:
    """A small inline SVG: the product band shaded, the min-max envelope, the average line."""
    if not cc.series:
        return ""
    pad_l, pad_r, pad_t, pad_b = 30, 6, 6, 18
    values = [p["lo"] for p in cc.series] + [p["hi"] for p in cc.series]
    values += [b for b in cc.band if b is not None]
    vmin, vmax = float(min(values)) - 1, float(max(values)) + 1
    t0: float = cc.series[0]["t"].timestamp()
    t1: float = max(cc.series[-1]["t"].timestamp(), t0 + 1)
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
    env = [f"{x(p['t'])},{y(p['hi'])}" for p in cc.series] + [
        f"{x(p['t'])},{y(p['lo'])}" for p in reversed(cc.series)
    ]
    parts.append(f'<polygon points="{" ".join(env)}" fill="#9cc3e6" opacity="0.6"/>')
    line = " ".join(f"{x(p['t'])},{y(p['v'])}" for p in cc.series)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#1f5f99" stroke-width="1.5"/>')
    for v in (vmin + 1, vmax - 1, *[b for b in cc.band if b is not None]):
        parts.append(f'<text x="2" y="{y(v) + 3}" font-size="9" fill="#555">{v:.0f}°C</text>')
    parts.append(
        f'<text x="{pad_l}" y="{height - 4}" font-size="9" fill="#555">{cc.series[0]["t"].astimezone(DISPLAY_TZ):%m-%d %H:%M}</text>'
    )
    parts.append(
        f'<text x="{width - pad_r}" y="{height - 4}" font-size="9" fill="#555" text-anchor="end">'
        f"{cc.series[-1]['t'].astimezone(DISPLAY_TZ):%m-%d %H:%M}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
