"""A batch's cold chain: readings of the channels that held it, over the intervals they held it."""

from __future__ import annotations

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
# Chart axis labels are read by consumers in China.
DISPLAY_TZ = ZoneInfo("Asia/Shanghai")

_SUMMARY = """
WITH custody AS (
    SELECT k.channel_id, k.started_at, coalesce(k.ended_at, now()) AS ended_at
      FROM batch_custody k JOIN channels ch ON ch.id = k.channel_id
     WHERE k.batch_id = ANY(%(batch_ids)s) AND ch.unit = 'Cel'
), r AS (
    SELECT r.time, r.value,
           least(extract(epoch FROM coalesce(lead(r.time) OVER w, r.time) - r.time) / 60.0, %(gap)s) AS minutes
      FROM readings r JOIN custody k
        ON r.channel_id = k.channel_id AND r.time >= k.started_at AND r.time < k.ended_at
    WINDOW w AS (PARTITION BY r.channel_id ORDER BY r.time)
)
SELECT count(*) AS n, min(value) AS min, max(value) AS max, avg(value) AS mean,
       min(time) AS first, max(time) AS last,
       coalesce(sum(minutes) FILTER (WHERE value < %(low)s OR value > %(high)s), 0) AS minutes_outside,
       -- Mean kinetic temperature, ΔH/R = 10,000 K.
       -10000.0 / ln(avg(exp(-10000.0 / (value + 273.15)))) - 273.15 AS mkt
  FROM r
"""
_SERIES = """
WITH custody AS (
    SELECT k.channel_id, k.started_at, coalesce(k.ended_at, now()) AS ended_at
      FROM batch_custody k JOIN channels ch ON ch.id = k.channel_id
     WHERE k.batch_id = ANY(%(batch_ids)s) AND ch.unit = 'Cel'
)
SELECT time_bucket(%(bucket)s::interval, r.time) AS t, min(r.value) AS lo, max(r.value) AS hi, avg(r.value) AS v
  FROM readings r JOIN custody k
    ON r.channel_id = k.channel_id AND r.time >= k.started_at AND r.time < k.ended_at
 GROUP BY 1 ORDER BY 1
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
            "min": self.minimum,
            "max": self.maximum,
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


def summarize(conn: Conn, *, product: str, batch_ids: list[int]) -> ColdChain:
    """Summarises the temperature readings over the custody intervals of these batches (a lot and its sources)."""
    band = PRODUCT_BANDS.get(product, (None, None))
    low = band[0] if band[0] is not None else -1e9
    high = band[1] if band[1] is not None else 1e9
    params = {"batch_ids": batch_ids, "gap": MAX_GAP_MINUTES, "low": low, "high": high}
    s = conn.execute(_SUMMARY, params).fetchone()
    assert s is not None
    if not s["n"]:
        return ColdChain(product, band, 0, None, None, None, None, 0.0, None, None, "no_data", [])
    span = (s["last"] - s["first"]).total_seconds()
    bucket_seconds = max(60, int(span / CHART_POINTS) + 1)
    series = conn.execute(_SERIES, {"batch_ids": batch_ids, "bucket": f"{bucket_seconds} seconds"}).fetchall()
    outside = float(s["minutes_outside"])
    return ColdChain(
        product=product,
        band=band,
        readings=int(s["n"]),
        minimum=float(s["min"]),
        maximum=float(s["max"]),
        mean=round(float(s["mean"]), 2),
        mkt=round(float(s["mkt"]), 2),
        minutes_outside=outside,
        first=s["first"],
        last=s["last"],
        verdict="excursion" if outside > TOLERANCE_MINUTES else "ok",
        series=series,
    )


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
        f"{cc.series[-1]['t']:%m-%d %H:%M}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
