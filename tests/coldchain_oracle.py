"""A reference cold-chain summary, written from the definitions of issue 14 alone (plain Python, no
code shared with `agritrace.coldchain`), for the property tests to compare the SQL with.

Definitions:
- A channel keeps one value per time: the first to arrive.
- A reading stands from its time until the channel's next reading, but at most `max_stand`
  (expected interval x tolerance); time that no reading stands for is *no data*.
- A window [t0, t1) (custody, or a summary's range; one that has not ended, or ends after now, ends
  now and is *in progress*) counts the part of each standing that falls inside it: so the reading
  before t0 that still stood at t0 is carried in, and the last one is clipped at t1.
- In band: low <= value <= high (°C; a kelvin reading is value - 273.15).
- Mean and MKT are weighted by the counted time; MKT = 10000 / -ln(sum(w * exp(-10000 / (T + 273.15)))
  / sum(w)) - 273.15 (USP <1079>, ΔH/R = 10,000 K).
- An excursion starts at each counted reading out of band whose previous counted reading in the same
  window is in band or absent. The worst reading is the one farthest outside the band (earliest first).
- Verdict: no window -> no_data; more than 30 min out of band -> excursion; in progress, or more than
  10 % of the windows' time without data -> incomplete; else ok.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

TOLERANCE_MIN = 30.0
INCOMPLETE = 0.10


@dataclass
class Window:
    channel: int
    start: datetime
    end: datetime | None  # None: not ended


@dataclass
class Expected:
    readings: int
    minutes: float
    minutes_in: float
    minutes_out: float
    minutes_no_data: float
    excursions: int
    low_value: float | None
    high_value: float | None
    mean: float | None
    mkt: float | None
    worst: tuple[float, datetime, int] | None  # value, time, channel
    latest: datetime | None
    in_progress: bool
    verdict: str


def kept(arrivals: Iterable[tuple[datetime, float]]) -> dict[datetime, float]:
    """The channel's readings as stored: the first value to arrive for each time."""
    out: dict[datetime, float] = {}
    for t, v in arrivals:
        if t not in out:
            out[t] = v
    return out


def summarize(
    *,
    series: dict[int, dict[datetime, float]],
    max_stand: dict[int, timedelta],
    windows: list[Window],
    low: float | None,
    high: float | None,
    now: datetime,
) -> Expected:
    lo = -math.inf if low is None else low
    hi = math.inf if high is None else high
    counted: list[tuple[int, datetime, float, float]] = []  # window no, time, value, seconds
    channel_of: list[int] = []
    total = 0.0
    in_progress = False
    n_windows = 0
    for no, w in enumerate(windows):
        if w.start >= now:
            continue  # has not begun
        n_windows += 1
        end = now if w.end is None or w.end > now else w.end
        in_progress = in_progress or w.end is None or w.end > now
        total += (end - w.start).total_seconds()
        times = sorted(series.get(w.channel, {}))
        for i, t in enumerate(times):
            stand_end = t + max_stand[w.channel]
            if i + 1 < len(times):
                stand_end = min(stand_end, times[i + 1])
            a, b = max(t, w.start), min(stand_end, end)
            if t < end and b > a:
                counted.append((no, t, series[w.channel][t], (b - a).total_seconds()))
                channel_of.append(w.channel)
    seconds_in = sum(s for _, _, v, s in counted if lo <= v <= hi)
    seconds_out = sum(s for _, _, v, s in counted if not lo <= v <= hi)
    weight = sum(s for *_, s in counted)
    excursions = 0
    prev: dict[int, float] = {}
    for no, _, v, _ in sorted(counted, key=lambda c: (c[0], c[1])):
        if not lo <= v <= hi and (no not in prev or lo <= prev[no] <= hi):
            excursions += 1
        prev[no] = v
    worst = None
    best_dev = -math.inf
    for (_, t, v, _), ch in sorted(zip(counted, channel_of, strict=True), key=lambda x: x[0][1]):
        if lo <= v <= hi:
            continue
        dev = max(v - hi, lo - v)
        if dev > best_dev:
            best_dev, worst = dev, (v, t, ch)
    mkt = None
    if weight > 0:
        k = sum(s * math.exp(-10000.0 / (v + 273.15)) for _, _, v, s in counted) / weight
        mkt = 10000.0 / -math.log(k) - 273.15
    minutes, out_min = total / 60, seconds_out / 60
    no_data = max(0.0, total - seconds_in - seconds_out) / 60
    if n_windows == 0:
        verdict = "no_data"
    elif out_min > TOLERANCE_MIN:
        verdict = "excursion"
    elif in_progress or minutes <= 0 or no_data > INCOMPLETE * minutes:
        verdict = "incomplete"
    else:
        verdict = "ok"
    return Expected(
        readings=len(counted),
        minutes=minutes,
        minutes_in=seconds_in / 60,
        minutes_out=out_min,
        minutes_no_data=no_data,
        excursions=excursions,
        low_value=min((v for _, _, v, _ in counted), default=None),
        high_value=max((v for _, _, v, _ in counted), default=None),
        mean=sum(v * s for _, _, v, s in counted) / weight if weight > 0 else None,
        mkt=mkt,
        worst=worst,
        latest=max((t for _, t, _, _ in counted), default=None),
        in_progress=in_progress,
        verdict=verdict,
    )
