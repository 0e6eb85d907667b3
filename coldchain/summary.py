"""Cold-chain summaries, in SQL: what a set of (channel, start, end) windows shows about a product's
temperature (a lot's custody intervals, or one channel over a range), and the verdict it supports.

One definition of time (migration 0018): a reading stands until the next one, at most the channel's
expected interval times a tolerance; beyond that the time is *no data*, never in or out of band. A
window carries in the reading that stood at its start and clips the last one at its end; a window
still going on ends now. Mean kinetic temperature and the mean are weighted by that time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agritrace.coldchain.profiles import DEFAULT_PROFILES
from agritrace.db import Conn
from agritrace.errors import InvalidInput, NotFound

# Kept for the record: the activation energy over the gas constant the SQL uses (mkt_celsius).
DELTA_H_OVER_R = 10000.0
# Time outside the band tolerated before the verdict becomes an excursion (short door openings).
TOLERANCE_MINUTES = 30.0
# A window with more of its time without data than this share cannot show the product was kept.
INCOMPLETE_SHARE = 0.10

Verdict = Literal["ok", "excursion", "incomplete", "no_data"]

_SUMMARY = """
WITH k AS (
    SELECT i.ord, i.channel_id, i.t0, least(i.t1, now()) AS t1, i.t1 > now() AS open, c.unit,
           coalesce(c.asset_name, c.gateway_id || ' ' || c.name) AS place,
           coldchain_max_stand(c.id, %(profile)s) AS max_stand
      FROM unnest(%(channels)s::int[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
           WITH ORDINALITY AS i(channel_id, t0, t1, ord)
      JOIN channels c ON c.id = i.channel_id
     WHERE i.t0 < now()
), s AS (
    SELECT k.ord, k.place, x.time, coldchain_value(k.unit, x.value) AS v, x.stands_from,
           date_part('epoch', x.stands_to) - date_part('epoch', x.stands_from) AS secs
      FROM k CROSS JOIN LATERAL coldchain_spans(k.channel_id, k.t0, k.t1, k.max_stand) x
), f AS (
    SELECT s.*, lag(s.out) OVER (PARTITION BY s.ord ORDER BY s.time) AS prev_out
      FROM (SELECT s.*, NOT (s.v BETWEEN %(low)s AND %(high)s) AS out, mkt_arrhenius(s.v) AS arrhenius
              FROM s) s
), b AS (
    SELECT time_bucket(%(bucket)s::interval, stands_from) AS t, count(*) AS n, min(v) AS lo, max(v) AS hi,
           sum(v * secs) / nullif(sum(secs), 0) AS mean, coalesce(sum(secs) FILTER (WHERE out), 0) / 60 AS out_min
      FROM f GROUP BY 1
)
SELECT (SELECT count(*) FROM k) AS windows,
       (SELECT coalesce(sum(date_part('epoch', t1) - date_part('epoch', t0)), 0) FROM k) AS seconds,
       (SELECT coalesce(bool_or(open), false) FROM k) AS open,
       count(*) AS readings, min(v) AS min, max(v) AS max, sum(v * secs) / nullif(sum(secs), 0) AS mean,
       mkt_celsius(sum(secs * arrhenius), sum(secs) FILTER (WHERE arrhenius IS NOT NULL)) AS mkt,
       coalesce(sum(secs) FILTER (WHERE NOT out), 0) AS in_s, coalesce(sum(secs) FILTER (WHERE out), 0) AS out_s,
       count(*) FILTER (WHERE out AND NOT coalesce(prev_out, false)) AS excursions,
       min(stands_from) AS first, max(time) AS latest,
       (SELECT jsonb_build_object('value', w.v, 'time', w.time, 'place', w.place)
          FROM f w WHERE w.out ORDER BY greatest(w.v - %(high)s, %(low)s - w.v) DESC, w.time LIMIT 1) AS worst,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('time', t, 'readings', n, 'min', lo, 'max', hi, 'mean', mean,
                                                     'minutes_out_of_band', out_min) ORDER BY t), '[]')
          FROM b) AS buckets
  FROM f
"""


@dataclass(frozen=True)
class Worst:
    """The reading farthest outside the band: its value, when, and where (cold room, truck)."""

    value: float
    time: datetime
    place: str


@dataclass(frozen=True)
class Bucket:
    """One point of a chart: the readings standing in a time bucket."""

    time: datetime
    readings: int
    min: float
    max: float
    mean: float
    minutes_out_of_band: float


@dataclass(frozen=True)
class Summary:
    """What the readings of a set of windows show against a band, and the verdict they support."""

    band: tuple[float | None, float | None]
    readings: int
    min: float | None
    max: float | None
    mean: float | None
    mkt: float | None
    minutes: float
    minutes_in_band: float
    minutes_out_of_band: float
    minutes_no_data: float
    excursions: int
    worst: Worst | None
    first: datetime | None
    latest_reading: datetime | None
    in_progress: bool
    verdict: Verdict
    buckets: list[Bucket] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The summary as the API, the consumer page and the stored evidence show it (one set of names)."""
        return {
            "verdict": self.verdict,
            "in_progress": self.in_progress,
            "band": {"low": self.band[0], "high": self.band[1]},
            "readings": self.readings,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "mkt": self.mkt,
            "minutes": round(self.minutes, 1),
            "minutes_in_band": round(self.minutes_in_band, 1),
            "minutes_out_of_band": round(self.minutes_out_of_band, 1),
            "minutes_no_data": round(self.minutes_no_data, 1),
            "excursions": self.excursions,
            "worst": None
            if self.worst is None
            else {"value": self.worst.value, "time": self.worst.time.isoformat(), "place": self.worst.place},
            "first": self.first.isoformat() if self.first else None,
            "latest_reading": self.latest_reading.isoformat() if self.latest_reading else None,
            "buckets": [
                {
                    "time": b.time.isoformat(),
                    "readings": b.readings,
                    "min": b.min,
                    "max": b.max,
                    "mean": b.mean,
                    "minutes_out_of_band": b.minutes_out_of_band,
                }
                for b in self.buckets
            ],
        }


def judge(*, windows: int, minutes: float, out: float, no_data: float, in_progress: bool) -> Verdict:
    """The verdict: `excursion` once more than TOLERANCE_MINUTES were out of band; else `incomplete`
    while a window goes on, or when more than INCOMPLETE_SHARE of the time has no data; else `ok`.
    `no_data` when there is no window at all (nothing was recorded as holding the product)."""
    if windows == 0:
        return "no_data"
    if out > TOLERANCE_MINUTES:
        return "excursion"
    if in_progress or minutes <= 0 or no_data > INCOMPLETE_SHARE * minutes:
        return "incomplete"
    return "ok"


def summarize_windows(
    conn: Conn,
    *,
    windows: Sequence[tuple[int, datetime, datetime | None]],
    profile_id: int | None,
    low: float | None,
    high: float | None,
    bucket: timedelta = timedelta(hours=1),
) -> Summary:
    """Summarises (channel, start, end) windows (end None: still going on) against [low, high]
    (None: unbounded); `profile_id` gives the expected reporting interval of channels without their own."""
    infinity = datetime.max.replace(tzinfo=UTC)
    params = {
        "channels": [w[0] for w in windows],
        "starts": [w[1] for w in windows],
        # The database's 'infinity' is later than any Python datetime: an open window ends at it.
        "ends": [w[2] if w[2] is not None else infinity for w in windows],
        "profile": profile_id,
        "low": low if low is not None else -math.inf,
        "high": high if high is not None else math.inf,
        "bucket": bucket,
    }
    row = conn.execute(_SUMMARY, params).fetchone()
    assert row is not None
    seconds, in_s, out_s = float(row["seconds"]), float(row["in_s"]), float(row["out_s"])
    minutes, out = seconds / 60, out_s / 60
    no_data = max(0.0, seconds - in_s - out_s) / 60
    worst = row["worst"]
    return Summary(
        band=(low, high),
        readings=int(row["readings"]),
        min=row["min"],
        max=row["max"],
        mean=row["mean"],
        mkt=row["mkt"],
        minutes=minutes,
        minutes_in_band=in_s / 60,
        minutes_out_of_band=out,
        minutes_no_data=no_data,
        excursions=int(row["excursions"]),
        worst=None
        if worst is None
        else Worst(value=worst["value"], time=datetime.fromisoformat(worst["time"]), place=worst["place"]),
        first=row["first"],
        latest_reading=row["latest"],
        in_progress=bool(row["open"]),
        verdict=judge(
            windows=int(row["windows"]),
            minutes=minutes,
            out=out,
            no_data=no_data,
            in_progress=bool(row["open"]),
        ),
        buckets=[
            Bucket(
                time=datetime.fromisoformat(b["time"]),
                readings=b["readings"],
                min=b["min"],
                max=b["max"],
                mean=b["mean"],
                minutes_out_of_band=b["minutes_out_of_band"],
            )
            for b in row["buckets"]
        ],
    )


_CHANNEL = """
SELECT c.id, c.gateway_id, c.name, c.unit, coldchain_metric(c.unit) AS metric, p.id AS profile_id,
       p.name AS profile,
       CASE coldchain_metric(c.unit) WHEN 'temperature' THEN p.temp_low WHEN 'humidity' THEN p.rh_low END AS low,
       CASE coldchain_metric(c.unit) WHEN 'temperature' THEN p.temp_high WHEN 'humidity' THEN p.rh_high END AS high
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
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Summarises one channel over [start, end) (up to now); the band defaults to the channel's profile.
    Temperatures are in °C whatever the channel reports in (K is converted)."""
    # A time without a zone is taken as UTC rather than the database session's zone.
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if end <= start:
        raise InvalidInput("end must be after start")
    if bucket < timedelta(minutes=1) or (end - start) / bucket > 10000:
        raise InvalidInput("bucket must be at least a minute and give at most 10,000 buckets")
    channel = conn.execute(_CHANNEL, (channel_id, cooperative_id, cooperative_id)).fetchone()
    if channel is None:
        raise NotFound(f"no channel {channel_id}")
    s = summarize_windows(
        conn,
        windows=[(channel_id, start, end)],
        profile_id=channel["profile_id"],
        low=low if low is not None else channel["low"],
        high=high if high is not None else channel["high"],
        bucket=bucket,
    )
    body = s.as_json()
    if channel["metric"] != "temperature":
        body["mkt"] = None  # MKT only means something for temperatures
    return {
        "channel_id": channel_id,
        "gateway_id": channel["gateway_id"],
        "channel": channel["name"],
        "unit": "Cel" if channel["metric"] == "temperature" else channel["unit"],
        "profile": channel["profile"],
        "start": start,
        "end": end,
        **body,
    }


_PROFILE = "SELECT id, temp_low, temp_high FROM coldchain_profiles WHERE name = %s"
_CUSTODY = """
SELECT k.channel_id, k.started_at, k.ended_at
  FROM batch_custody k JOIN channels c ON c.id = k.channel_id
 WHERE k.batch_id = ANY(%s) AND coldchain_metric(c.unit) = 'temperature' AND k.started_at < now()
 ORDER BY k.started_at, k.id
"""


def product_band(conn: Conn, *, product: str) -> tuple[int | None, float | None, float | None]:
    """The product's profile id and temperature band (°C); unbounded without a profile."""
    row = conn.execute(_PROFILE, (product,)).fetchone()
    if row is not None:
        return row["id"], row["temp_low"], row["temp_high"]
    # The cold-chain worker writes the default profiles when it first starts; until then (and a
    # public page never writes them) the defaults are what that write would hold.
    for name, _, temp_low, temp_high, _, _ in DEFAULT_PROFILES:
        if name == product:
            return None, temp_low, temp_high
    return None, None, None


def summarize_lot(conn: Conn, *, product: str, batch_ids: list[int], points: int | None = None) -> Summary:
    """A lot's cold chain: its temperature over the custody intervals of `batch_ids` (the lot and
    its sources), against its product's profile band; `points`: about that many chart buckets."""
    profile_id, low, high = product_band(conn, product=product)
    custody = conn.execute(_CUSTODY, (batch_ids,)).fetchall()
    bucket = timedelta(hours=1)
    if custody and points:
        now = datetime.now(UTC)
        last = max(min(k["ended_at"] or now, now) for k in custody)
        span = (last - min(k["started_at"] for k in custody)).total_seconds()
        bucket = timedelta(seconds=max(60, int(span / points) + 1))
    return summarize_windows(
        conn,
        windows=[(k["channel_id"], k["started_at"], k["ended_at"]) for k in custody],
        profile_id=profile_id,
        low=low,
        high=high,
        bucket=bucket,
    )
