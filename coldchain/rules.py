"""The excursion rule engine: a pure function from a channel's readings to its excursions.

It sees the readings as a set keyed by time (sorted, one value per time), so readings that arrive
late, out of order or twice give the same excursions as the same readings in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Direction = Literal["below", "above"]
Mode = Literal["single", "cumulative"]


@dataclass(frozen=True)
class Rule:
    """A threshold rule: beyond `threshold` for `delay` (continuously, or in total within `window`)."""

    id: int
    direction: Direction
    threshold: float
    delay: timedelta
    clear_margin: float = 0.0
    clear_delay: timedelta = timedelta(minutes=10)
    mode: Mode = "single"
    window: timedelta | None = None
    max_gap: timedelta = timedelta(minutes=15)

    def beyond(self, value: float) -> bool:
        """Is the value out of range for this rule?"""
        return value < self.threshold if self.direction == "below" else value > self.threshold

    def cleared(self, value: float) -> bool:
        """Is the value back in range by at least the hysteresis margin?"""
        if self.direction == "below":
            return value >= self.threshold + self.clear_margin
        return value <= self.threshold - self.clear_margin

    def worse(self, a: float, b: float) -> float:
        """The worse of two values for this rule."""
        return min(a, b) if self.direction == "below" else max(a, b)


@dataclass(frozen=True)
class Excursion:
    """One excursion: when it began, when it ended (None while ongoing), worst value, minutes out,
    and `met`: the time of the reading at which the rule was met (its delay reached)."""

    start: datetime
    end: datetime | None
    worst: float
    minutes_out: float
    met: datetime | None = None


def _ordered(readings: Iterable[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    # Duplicates are the same (channel, time): the database keeps the first, so do we.
    by_time: dict[datetime, float] = {}
    for t, v in readings:
        by_time.setdefault(t, v)
    return sorted(by_time.items())


def evaluate(rule: Rule, readings: Iterable[tuple[datetime, float]]) -> list[Excursion]:
    """Finds the rule's excursions in a set of readings (order and duplicates do not matter)."""
    points = _ordered(readings)
    n = len(points)
    # How long each reading stands for: until the next one, but never longer than max_gap.
    dwell = [
        min(points[i + 1][0] - points[i][0], rule.max_gap) if i + 1 < n else timedelta(0) for i in range(n)
    ]
    excursions: list[Excursion] = []
    run_start: datetime | None = None  # single mode: first reading of the current run beyond
    window_out = timedelta(0)  # cumulative mode: time beyond within the window ending now
    left = 0
    active: _Open | None = None
    clear_start: datetime | None = None
    # A cumulative rule re-arms only once the window's total is back under the delay, so a room that
    # used up its budget and keeps dipping does not open an alert per dip.
    armed = True
    for i, (t, v) in enumerate(points):
        if rule.mode == "cumulative":
            assert rule.window is not None
            # Time beyond in (t - window, t), counted from readings before this one.
            if i > 0 and rule.beyond(points[i - 1][1]):
                window_out += dwell[i - 1]
            while points[left][0] <= t - rule.window:
                if rule.beyond(points[left][1]):
                    window_out -= dwell[left]
                left += 1
            armed = armed or window_out < rule.delay
        if active is None:
            clear_start = None
            if rule.mode == "single":
                if not rule.beyond(v):
                    run_start = None
                    continue
                run_start = run_start or t
                if t - run_start < rule.delay:
                    continue
                active = _begin(rule, points, run_start, i, dwell)
            else:
                if not (armed and window_out >= rule.delay):
                    continue
                # The budget ran out with the previous reading; the excursion covers the dips in the window.
                first = next(j for j in range(left, i + 1) if rule.beyond(points[j][1]))
                active = _begin(rule, points, points[first][0], i, dwell)
        else:
            # An excursion is open: track it, and end it only after a steady return (hysteresis).
            if rule.beyond(v):
                active.worst = rule.worse(active.worst, v)
            if i > 0 and rule.beyond(points[i - 1][1]):
                active.out += dwell[i - 1]
        if not rule.cleared(v):
            clear_start = None
            continue
        clear_start = clear_start or t
        if t - clear_start >= rule.clear_delay:
            excursions.append(active.finish(clear_start))
            active, run_start, clear_start, armed = None, None, None, rule.mode == "single"
    if active is not None:
        excursions.append(active.finish(None))
    return excursions


@dataclass
class _Open:
    """An excursion being followed through the readings."""

    start: datetime
    worst: float
    out: timedelta
    met: datetime

    def finish(self, end: datetime | None) -> Excursion:
        minutes = round(self.out.total_seconds() / 60, 3)
        return Excursion(start=self.start, end=end, worst=self.worst, minutes_out=minutes, met=self.met)


def _begin(
    rule: Rule, points: list[tuple[datetime, float]], start: datetime, upto: int, dwell: list[timedelta]
) -> _Open:
    """Opens an excursion from `start`, with worst value and time out counted up to reading `upto`."""
    worst: float | None = None
    out = timedelta(0)
    for j, (t, v) in enumerate(points[: upto + 1]):
        if t < start or not rule.beyond(v):
            continue
        worst = v if worst is None else rule.worse(worst, v)
        if j < upto:
            out += dwell[j]
    assert worst is not None  # a run or a window with time beyond has readings beyond
    return _Open(start=start, worst=worst, out=out, met=points[upto][0])


@dataclass(frozen=True)
class Episode:
    """One excursion of a condition (a metric and direction on a channel), whatever rules it met:
    the union of the overlapping excursions of the condition's rules, and when each rule (an
    escalation level) was met. An alert stands for one episode."""

    start: datetime
    end: datetime | None
    worst: float
    minutes_out: float
    levels: dict[int, datetime]  # rule id -> the reading time it was met at

    @property
    def met(self) -> datetime:
        """When the first level was met."""
        return min(self.levels.values())


def episodes(found: dict[int, list[Excursion]], direction: Direction | None) -> list[Episode]:
    """Joins the excursions of one condition's rules (rule id -> its excursions) into episodes:
    excursions that overlap (an ongoing one reaches to the end of time) are one episode."""
    flat = sorted(((e, rule_id) for rule_id, excs in found.items() for e in excs), key=lambda x: x[0].start)
    out: list[Episode] = []
    group: list[tuple[Excursion, int]] = []
    reach: datetime | None = None  # the end of the group so far (None: ongoing)
    for exc, rule_id in flat:
        if group and reach is not None and exc.start > reach:
            out.append(_episode(group, direction))
            group = []
        if not group:
            reach = exc.end
        elif reach is not None:
            reach = None if exc.end is None else max(reach, exc.end)
        group.append((exc, rule_id))
    if group:
        out.append(_episode(group, direction))
    return out


def _episode(group: list[tuple[Excursion, int]], direction: Direction | None) -> Episode:
    ends = [e.end for e, _ in group]
    worst = group[0][0].worst
    for e, _ in group[1:]:
        if direction == "below":
            worst = min(worst, e.worst)
        elif direction == "above":
            worst = max(worst, e.worst)
    levels: dict[int, datetime] = {}
    for e, rule_id in group:
        met = e.met or e.start
        levels[rule_id] = min(levels.get(rule_id, met), met)
    return Episode(
        start=min(e.start for e, _ in group),
        end=None if any(end is None for end in ends) else max(end for end in ends if end is not None),
        worst=worst,
        minutes_out=max(e.minutes_out for e, _ in group),
        levels=levels,
    )
