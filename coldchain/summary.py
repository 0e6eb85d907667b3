"""Cold-chain summary of one channel over a time range, in SQL: min, max, mean, time in and out of
band, excursion count, mean kinetic temperature, and the same per time bucket."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from agritrace.db import Conn
from agritrace.errors import InvalidInput, NotFound

# MKT activation energy over the gas constant, ΔH/R ≈ 83.144 kJ/mol / 8.3144 J/(mol·K) = 10,000 K.
DELTA_H_OVER_R = 10000.0

# Each reading stands for the time until the next one, capped at max_gap (a silent logger is not
# evidence of being in or out of band). Excursions are entries into out-of-band.
SUMMARY = """
WITH r AS (
    SELECT time, value,
           (value >= coalesce(%(low)s::float8, '-infinity') AND value <= coalesce(%(high)s::float8, 'infinity')) AS ok,
           LEAST(coalesce(EXTRACT(EPOCH FROM lead(time) OVER w - time), 0), %(max_gap)s) AS dwell,
           lag(value) OVER w AS prev
      FROM readings
     WHERE channel_id = %(channel_id)s AND time >= %(start)s AND time < %(end)s
    WINDOW w AS (ORDER BY time)
), flagged AS (
    SELECT *, NOT ok AND (prev IS NULL OR (prev >= coalesce(%(low)s::float8, '-infinity')
                                           AND prev <= coalesce(%(high)s::float8, 'infinity'))) AS entered
      FROM r
), buckets AS (
    SELECT time_bucket(%(bucket)s::interval, time) AS bucket,
           count(*) AS n, min(value) AS min, max(value) AS max, avg(value) AS mean,
           coalesce(sum(dwell) FILTER (WHERE ok), 0) AS in_s,
           coalesce(sum(dwell) FILTER (WHERE NOT ok), 0) AS out_s,
           count(*) FILTER (WHERE entered) AS excursions,
           sum(exp(-%(dhr)s / (value + 273.15))) AS arrhenius,
           min(time) AS first, max(time) AS last
      FROM flagged GROUP BY 1
)
SELECT sum(n)::bigint AS readings, min(min) AS min, max(max) AS max, sum(mean * n) / nullif(sum(n), 0) AS mean,
       sum(in_s) AS seconds_in_band, sum(out_s) AS seconds_out_of_band, coalesce(sum(excursions), 0)::bigint AS excursions,
       sum(arrhenius) / nullif(sum(n), 0) AS arrhenius_mean, min(first) AS first, max(last) AS last,
       coalesce(jsonb_agg(jsonb_build_object(
           'start', bucket, 'readings', n, 'min', min, 'max', max, 'mean', mean,
           'minutes_in_band', in_s / 60, 'minutes_out_of_band', out_s / 60, 'excursions', excursions)
           ORDER BY bucket) FILTER (WHERE bucket IS NOT NULL), '[]') AS buckets
  FROM buckets
"""

CHANNEL = """
SELECT c.id, c.gateway_id, c.name, c.unit, g.cooperative_id, p.name AS profile,
       CASE c.unit WHEN 'Cel' THEN p.temp_low WHEN '%%RH' THEN p.rh_low END AS low,
       CASE c.unit WHEN 'Cel' THEN p.temp_high WHEN '%%RH' THEN p.rh_high END AS high
  FROM channels c JOIN gateways g ON g.id = c.gateway_id
  LEFT JOIN coldchain_monitored_channels m ON m.channel_id = c.id
  LEFT JOIN coldchain_profiles p ON p.id = m.profile_id
 WHERE c.id = %s AND (%s::bigint IS NULL OR g.cooperative_id = %s)
"""


def summarize(
    conn: Conn,
    *,
    channel_id: int,
    start: datetime,
    end: datetime,
    low: float | None = None,
    high: float | None = None,
    bucket: timedelta = timedelta(hours=1),
    max_gap: timedelta = timedelta(minutes=15),
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Summarises one channel over [start, end); the band defaults to the channel's profile."""
    # A time without a zone is taken as UTC rather than the database session's zone.
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if end <= start:
        raise InvalidInput("end must be after start")
    if bucket < timedelta(minutes=1) or (end - start) / bucket > 10000:
        raise InvalidInput("bucket must be at least a minute and give at most 10,000 buckets")
    channel = conn.execute(CHANNEL, (channel_id, cooperative_id, cooperative_id)).fetchone()
    if channel is None:
        raise NotFound(f"no channel {channel_id}")
    band_low = low if low is not None else channel["low"]
    band_high = high if high is not None else channel["high"]
    row = conn.execute(
        SUMMARY,
        {
            "channel_id": channel_id,
            "start": start,
            "end": end,
            "low": band_low,
            "high": band_high,
            "bucket": bucket,
            "max_gap": max_gap.total_seconds(),
            "dhr": DELTA_H_OVER_R,
        },
    ).fetchone()
    assert row is not None
    arrhenius = row["arrhenius_mean"]
    # MKT only means something for temperatures (Cel).
    mkt = _mkt(arrhenius) if arrhenius and channel["unit"] == "Cel" else None
    return {
        "channel_id": channel_id,
        "gateway_id": channel["gateway_id"],
        "channel": channel["name"],
        "unit": channel["unit"],
        "profile": channel["profile"],
        "start": start,
        "end": end,
        "band": {"low": band_low, "high": band_high},
        "readings": row["readings"] or 0,
        "min": row["min"],
        "max": row["max"],
        "mean": row["mean"],
        "minutes_in_band": float(row["seconds_in_band"] or 0) / 60,
        "minutes_out_of_band": float(row["seconds_out_of_band"] or 0) / 60,
        "excursions": row["excursions"],
        "mkt": mkt,
        "buckets": row["buckets"],
        "arrhenius_mean": arrhenius,
        "first": row["first"],
        "last": row["last"],
    }


def _mkt(arrhenius_mean: float) -> float:
    """Mean kinetic temperature in °C from the mean of exp(-ΔH/RT) over the readings."""
    return DELTA_H_OVER_R / -math.log(arrhenius_mean) - 273.15


def summarize_custody(
    conn: Conn,
    *,
    intervals: list[tuple[int, datetime, datetime]],
    cooperative_id: int | None = None,
    low: float | None = None,
    high: float | None = None,
    bucket: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    """A batch's cold chain: the summaries of the (channel, start, end) intervals it spent in custody,
    each against its own channel's band unless `low`/`high` give the batch's (its product profile),
    combined (MKT over all temperature readings together; buckets of the same start merged)."""
    parts = [
        summarize(
            conn,
            channel_id=ch,
            start=start,
            end=end,
            cooperative_id=cooperative_id,
            low=low,
            high=high,
            bucket=bucket,
        )
        for ch, start, end in intervals
    ]
    temps = [p for p in parts if p["unit"] == "Cel" and p["readings"]]
    n_temp = sum(p["readings"] for p in temps)
    arrhenius = sum(p["arrhenius_mean"] * p["readings"] for p in temps) / n_temp if n_temp else None
    with_data = [p for p in parts if p["readings"]]
    n = sum(p["readings"] for p in with_data)
    hidden = ("buckets", "arrhenius_mean", "first", "last")
    return {
        "intervals": [{k: v for k, v in p.items() if k not in hidden} for p in parts],
        "temperature": {
            "readings": n_temp,
            "min": min((p["min"] for p in temps), default=None),
            "max": max((p["max"] for p in temps), default=None),
            "mean": sum(p["mean"] * p["readings"] for p in temps) / n_temp if n_temp else None,
            "mkt": _mkt(arrhenius) if arrhenius else None,
        },
        "readings": n,
        "minutes_in_band": sum(p["minutes_in_band"] for p in parts),
        "minutes_out_of_band": sum(p["minutes_out_of_band"] for p in parts),
        "excursions": sum(p["excursions"] for p in parts),
        "first": min((p["first"] for p in with_data), default=None),
        "last": max((p["last"] for p in with_data), default=None),
        "buckets": _merge_buckets([b for p in with_data for b in p["buckets"]]),
    }


def _merge_buckets(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Combines buckets that two custody intervals share (a lot moved between rooms within one bucket)."""
    merged: dict[str, dict[str, Any]] = {}
    for b in buckets:
        m = merged.get(b["start"])
        if m is None:
            merged[b["start"]] = dict(b)
            continue
        n = m["readings"] + b["readings"]
        m["mean"] = (m["mean"] * m["readings"] + b["mean"] * b["readings"]) / n
        m["min"], m["max"], m["readings"] = min(m["min"], b["min"]), max(m["max"], b["max"]), n
        for k in ("minutes_in_band", "minutes_out_of_band", "excursions"):
            m[k] += b[k]
    # jsonb renders every start in UTC with the same offset, so the text sorts as the time does.
    return [merged[t] for t in sorted(merged)]
