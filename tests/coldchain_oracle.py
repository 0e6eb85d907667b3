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


# --- Alerts (issue 14, the alert half) ---------------------------------------------------------------
# Definitions, from docs/coldchain.md:
# - A rule watches a condition: a metric and a direction (`below` / `above` a threshold). A reading
#   is *beyond* when value < threshold (below) or > threshold (above); *cleared* when value >=
#   threshold + clear_margin (below) or <= threshold - clear_margin (above).
# - A reading stands until the next reading, at most max_gap; the last one stands for nothing yet.
# - single: a run of consecutive beyond readings from s meets the rule at the first reading i of the
#   run with t_i - t_s >= delay. cumulative: at reading i the time beyond within the window is the
#   sum of the standing times of the beyond readings j before i with t_j > t_i - window; the rule is
#   met at i when that is >= delay (and the rule is armed: it re-arms once that sum is back under the
#   delay after an excursion ended); the excursion starts at the first beyond reading j in that window.
# - An excursion (once met) ends at the first reading of a run of cleared readings lasting at least
#   clear_delay (t_last - t_first >= clear_delay), judged from the reading after the one it was met at
#   onwards, including that reading: a single rule's run restarts after it.
# - Per condition, the excursions of its rules that overlap (an unended one reaches forever) are one
#   alert: from the earliest start to the latest end (none if one is unended); severity is the
#   highest of the rules met; it is late when it became known (the arrival of the data that first
#   showed a rule met in it, in any alert it is made of) more than 15 min after its first level was
#   met, by all the readings now known (late readings may show it was met earlier than first seen).

RANKS = {"info": 1, "warning": 2, "critical": 3}
LATE_AFTER = timedelta(minutes=15)


@dataclass
class OracleRule:
    name: str
    direction: str
    threshold: float
    delay: timedelta
    severity: str
    clear_margin: float = 0.5
    clear_delay: timedelta = timedelta(minutes=10)
    window: timedelta | None = None  # set: cumulative
    max_gap: timedelta = timedelta(minutes=15)


@dataclass
class OracleAlert:
    condition: str
    start: datetime
    end: datetime | None
    severity: str
    rules: frozenset[str]
    met: datetime


def _excursions(
    rule: OracleRule, data: dict[datetime, float]
) -> list[tuple[datetime, datetime | None, datetime]]:
    """(start, end, met) of each excursion of one rule."""
    times = sorted(data)
    below = rule.direction == "below"

    def beyond(v: float) -> bool:
        return v < rule.threshold if below else v > rule.threshold

    def cleared(v: float) -> bool:
        return v >= rule.threshold + rule.clear_margin if below else v <= rule.threshold - rule.clear_margin

    def stands(j: int) -> timedelta:
        return min(times[j + 1] - times[j], rule.max_gap) if j + 1 < len(times) else timedelta(0)

    def window_beyond(i: int) -> tuple[timedelta, int | None]:
        assert rule.window is not None
        inside = [j for j in range(i) if times[j] > times[i] - rule.window and beyond(data[times[j]])]
        total = sum((stands(j) for j in inside), timedelta(0))
        first = next(
            (j for j in range(i + 1) if times[j] > times[i] - rule.window and beyond(data[times[j]])), None
        )
        return total, first

    found: list[tuple[datetime, datetime | None, datetime]] = []
    i, run, armed = 0, None, True
    while i < len(times):
        t, v = times[i], data[times[i]]
        start = None
        if rule.window is None:
            if beyond(v):
                run = t if run is None else run
                if t - run >= rule.delay:
                    start = run
            else:
                run = None
        else:
            total, first = window_beyond(i)
            armed = armed or total < rule.delay
            if armed and total >= rule.delay and first is not None:
                start = times[first]
        if start is None:
            i += 1
            continue
        # Met at t: it ends at the first of a run of cleared readings lasting clear_delay (from t on).
        end, k, clear = None, i, None
        while k < len(times):
            if cleared(data[times[k]]):
                clear = times[k] if clear is None else clear
                if times[k] - clear >= rule.clear_delay:
                    end = clear
                    break
            else:
                clear = None
            k += 1
        found.append((start, end, t))
        if end is None:
            break
        i, run, armed = k + 1, None, rule.window is None
    return found


def alert_set(rules: list[OracleRule], data: dict[datetime, float]) -> list[OracleAlert]:
    """The alerts the readings give: one per overlapping group of a condition's excursions."""
    out: list[OracleAlert] = []
    for direction in ("below", "above"):
        excs = [(s, e, m, r) for r in rules if r.direction == direction for s, e, m in _excursions(r, data)]
        excs.sort(key=lambda x: x[0])
        groups: list[list[tuple[datetime, datetime | None, datetime, OracleRule]]] = []
        for x in excs:
            if groups:
                ends = [g[1] for g in groups[-1]]
                reach = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
                if reach is None or x[0] <= reach:
                    groups[-1].append(x)
                    continue
            groups.append([x])
        for g in groups:
            ends = [x[1] for x in g]
            out.append(
                OracleAlert(
                    condition=f"temperature:{direction}",
                    start=min(x[0] for x in g),
                    end=None if any(e is None for e in ends) else max(e for e in ends if e is not None),
                    severity=max((x[3].severity for x in g), key=RANKS.__getitem__),
                    rules=frozenset(x[3].name for x in g),
                    met=min(x[2] for x in g),
                )
            )
    return sorted(out, key=lambda a: (a.condition, a.start))


def late_flags(
    rules: list[OracleRule], batches: list[tuple[datetime, list[tuple[datetime, float]]]]
) -> list[tuple[str, datetime, bool]]:
    """(condition, start, late) of each final alert, replaying the arrivals (arrival time, readings)."""
    data: dict[datetime, float] = {}
    known: list[tuple[OracleAlert, datetime]] = []  # each alert as first seen, and when
    for arrived, readings in batches:
        for t, v in readings:
            data.setdefault(t, v)
        for a in alert_set(rules, data):
            if not any(k.condition == a.condition and _overlap(k, a) for k, _ in known):
                known.append((a, arrived))
    final = alert_set(rules, data)
    flags = []
    for a in final:
        seen = sorted(
            (k for k in known if k[0].condition == a.condition and _overlap(k[0], a)), key=lambda k: k[1]
        )
        at = seen[0][1]
        flags.append((a.condition, a.start, at - a.met > LATE_AFTER))
    return flags


def _overlap(a: OracleAlert, b: OracleAlert) -> bool:
    far = datetime.max.replace(tzinfo=a.start.tzinfo)
    return a.start <= (b.end or far) and b.start <= (a.end or far)
