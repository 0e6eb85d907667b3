"""A batch's cold chain: readings of the channels that held it, over the intervals they held it."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agritrace.db import Conn

# LEAD: replace with the agritrace.coldchain profiles after the merge (issue 4). Until then these are
# the product temperature bands from DESIGN.md ("Cold chain"), in °C, (low, high); None = unbounded.
PRODUCT_BANDS: dict[str, tuple[float | None, float | None]] = {
    "mango": (10.0, 13.0),
    "citrus": (5.0, 8.0),
    "tea": (None, 10.0),
}
# A single gap between readings counts at most this long, so an offline logger does not turn one
# out-of-band reading into a day of excursion.
MAX_GAP_MINUTES = 15.0
# Time outside the band tolerated before the verdict becomes an excursion (short door openings).
TOLERANCE_MINUTES = 30.0
CHART_POINTS = 96
# The summary is the costly part of a page view (a pass over the readings), and a popular lot is
# scanned by many shoppers at once: each process keeps it this long. Readings arriving late show
# up within this delay; recalls, certificates and events are always read fresh.
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
# One interval at a time, with its bounds as parameters: TimescaleDB then touches only the chunks
# of that interval (a join against the custody table would visit every chunk's index).
_BUCKETS = """
SELECT time_bucket(%(bucket)s::interval, time) AS t, count(*) AS n,
       count(*) FILTER (WHERE value < %(low)s OR value > %(high)s) AS n_out,
       min(value) AS lo, max(value) AS hi, sum(value) AS total,
       -- for the mean kinetic temperature (ΔH/R = 10,000 K)
       sum(exp(-10000.0 / (value + 273.15))) AS arrhenius,
       min(time) AS first, max(time) AS last
  FROM readings
 WHERE channel_id = %(channel)s AND time >= %(start)s AND time < %(end)s
 GROUP BY 1
"""


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
    minutes_outside: float
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
            "minutes_outside_band": round(self.minutes_outside, 1),
            "from": self.first.isoformat() if self.first else None,
            "to": self.last.isoformat() if self.last else None,
            "verdict": self.verdict,
            "series": [
                {"time": p["t"].isoformat(), "min": p["lo"], "max": p["hi"], "avg": p["v"]}
                for p in self.series
            ],
        }


def _merge(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Combines buckets that two custody intervals share (a lot moved between rooms within one bucket)."""
    merged: dict[datetime, dict[str, Any]] = {}
    for b in buckets:
        m = merged.get(b["t"])
        if m is None:
            merged[b["t"]] = dict(b)
            continue
        for k in ("n", "n_out", "total", "arrhenius"):
            m[k] += b[k]
        m["lo"], m["hi"] = min(m["lo"], b["lo"]), max(m["hi"], b["hi"])
        m["first"], m["last"] = min(m["first"], b["first"]), max(m["last"], b["last"])
    return [merged[t] for t in sorted(merged)]


def summarize(conn: Conn, *, product: str, batch_ids: list[int]) -> ColdChain:
    """Summarises the temperature readings over the custody intervals of these batches (a lot and its sources).

    Works on chart buckets (about CHART_POINTS over the whole span), so its cost does not grow with the
    number of readings returned. Time outside the band is estimated per bucket: the share of readings
    outside it times the time the bucket's readings cover (each reading covers at most MAX_GAP_MINUTES).
    """
    band = PRODUCT_BANDS.get(product, (None, None))
    custody = conn.execute(_CUSTODY, (batch_ids,)).fetchall()
    empty = ColdChain(product, band, 0, None, None, None, None, 0.0, None, None, "no_data", [])
    if not custody:
        return empty
    span = (max(k["ended_at"] for k in custody) - min(k["started_at"] for k in custody)).total_seconds()
    bucket_seconds = max(60, int(span / CHART_POINTS) + 1)
    params: dict[str, Any] = {
        "bucket": f"{bucket_seconds} seconds",
        "low": band[0] if band[0] is not None else -1e9,
        "high": band[1] if band[1] is not None else 1e9,
    }
    rows: list[dict[str, Any]] = []
    for k in custody:
        params.update(channel=k["channel_id"], start=k["started_at"], end=k["ended_at"])
        rows += conn.execute(_BUCKETS, params).fetchall()
    buckets = _merge(rows)
    if not buckets:
        return empty
    n = sum(int(b["n"]) for b in buckets)
    outside = 0.0
    for b in buckets:
        if b["n_out"]:
            step = (
                (b["last"] - b["first"]).total_seconds() / 60 / (b["n"] - 1)
                if b["n"] > 1
                else MAX_GAP_MINUTES
            )
            covered = min(bucket_seconds / 60, b["n"] * min(step, MAX_GAP_MINUTES))
            outside += covered * b["n_out"] / b["n"]
    arrhenius = sum(float(b["arrhenius"]) for b in buckets) / n
    series = [
        {"t": b["t"], "lo": float(b["lo"]), "hi": float(b["hi"]), "v": float(b["total"]) / int(b["n"])}
        for b in buckets
    ]
    return ColdChain(
        product=product,
        band=band,
        readings=n,
        minimum=min(p["lo"] for p in series),
        maximum=max(p["hi"] for p in series),
        mean=round(sum(float(b["total"]) for b in buckets) / n, 2),
        mkt=round(-10000.0 / math.log(arrhenius) - 273.15, 2),
        minutes_outside=outside,
        first=buckets[0]["first"],
        last=buckets[-1]["last"],
        verdict="excursion" if outside > TOLERANCE_MINUTES else "ok",
        series=series,
    )


def summarize_cached(conn: Conn, *, product: str, batch_ids: list[int]) -> tuple[dict[str, Any], str]:
    """The summary as JSON and its chart as SVG, reusing a result younger than CACHE_SECONDS in this process."""
    key = (product, tuple(batch_ids))
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    cold = summarize(conn, product=product, batch_ids=batch_ids)
    summary, chart = cold.as_json(), chart_svg(cold)
    with _cache_lock:
        if len(_cache) >= CACHE_MAX_ENTRIES:
            _cache.clear()
        _cache[key] = (now + CACHE_SECONDS, summary, chart)
    return summary, chart


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
