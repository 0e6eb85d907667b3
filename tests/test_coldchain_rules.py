"""The excursion rule engine on its own: delays, hysteresis, cumulative windows, and properties
(arrival order and duplicates never change the answer)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agritrace.coldchain.rules import Rule, evaluate

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
CHILLING = Rule(id=1, direction="below", threshold=10.0, clear_margin=0.5, delay=timedelta(minutes=30))
CUMULATIVE = Rule(
    id=2,
    direction="below",
    threshold=10.0,
    clear_margin=0.5,
    delay=timedelta(minutes=120),
    mode="cumulative",
    window=timedelta(hours=24),
)


def minutes(values: list[float], start: datetime = T0) -> list[tuple[datetime, float]]:
    return [(start + timedelta(minutes=i), v) for i, v in enumerate(values)]


def test_cold_room_at_6c_past_the_delay_is_one_excursion_that_ends_when_back_in_band() -> None:
    points = minutes([11.5] * 10 + [6.0] * 45 + [11.5] * 30)
    (exc,) = evaluate(CHILLING, points)
    assert exc.start == T0 + timedelta(minutes=10)
    assert exc.end == T0 + timedelta(minutes=55)
    assert exc.worst == 6.0
    assert exc.minutes_out == 45


def test_dip_shorter_than_the_delay_is_no_excursion() -> None:
    assert evaluate(CHILLING, minutes([11.5] * 10 + [6.0] * 20 + [11.5] * 30)) == []


def test_excursion_still_going_has_no_end() -> None:
    (exc,) = evaluate(CHILLING, minutes([11.5] * 5 + [7.0] * 40))
    assert exc.end is None


def test_return_just_above_threshold_does_not_end_it_hysteresis() -> None:
    # 10.2 is in band but inside the 0.5 °C margin: the room has not really recovered.
    (exc,) = evaluate(CHILLING, minutes([6.0] * 40 + [10.2] * 60))
    assert exc.end is None


def test_oscillating_every_minute_across_the_threshold_gives_at_most_one_excursion() -> None:
    points = minutes([9.8 if i % 2 else 10.2 for i in range(24 * 60)])
    assert evaluate(CHILLING, points) == []
    assert len(evaluate(CUMULATIVE, points)) <= 1


def test_cumulative_rule_counts_short_dips_within_its_window() -> None:
    # 15 minutes cold every hour: never 30 min at once, but 120 min in total after the 8th dip.
    hour = [6.0] * 15 + [11.5] * 45
    (exc,) = evaluate(CUMULATIVE, minutes(hour * 10))
    assert exc.start == T0  # the excursion covers the dips that used up the budget
    assert exc.end == T0 + timedelta(hours=7, minutes=15)  # back in band: ends; not re-armed after
    assert exc.minutes_out == 120
    assert exc.worst == 6.0
    assert evaluate(CHILLING, minutes(hour * 10)) == []


readings_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=600), st.sampled_from([5.0, 9.7, 10.2, 10.7, 12.0])),
    max_size=300,
).map(lambda pts: [(T0 + timedelta(minutes=m), v) for m, v in pts])


@settings(max_examples=150, deadline=None)
@given(readings_strategy, st.randoms(use_true_random=False), st.sampled_from([CHILLING, CUMULATIVE]))
def test_shuffled_and_duplicated_readings_give_the_same_excursions(
    points: list[tuple[datetime, float]], rnd: random.Random, rule: Rule
) -> None:
    # Duplicates are the same (channel, time) with the same value (a re-sent reading).
    first = dict(reversed(points))
    canonical = list(first.items())
    noisy = canonical + rnd.sample(canonical, k=len(canonical) // 3)
    rnd.shuffle(noisy)
    assert evaluate(rule, noisy) == evaluate(rule, sorted(canonical))


@settings(max_examples=150, deadline=None)
@given(readings_strategy, st.sampled_from([CHILLING, CUMULATIVE]))
def test_excursions_are_ordered_disjoint_and_separated_by_a_steady_return(
    points: list[tuple[datetime, float]], rule: Rule
) -> None:
    excursions = evaluate(rule, points)
    assert evaluate(rule, points) == excursions  # idempotent
    for a, b in itertools.pairwise(excursions):
        assert a.end is not None and a.end < b.start
    for exc in excursions[:-1]:
        assert exc.end is not None
    for exc in excursions:
        assert rule.beyond(exc.worst)
        assert exc.minutes_out >= 0


def test_cumulative_excursion_ends_back_in_band_and_rearms_only_when_the_budget_recovers() -> None:
    # 150 min cold (budget of 120 min used up), 30 min back in band, then a short dip again.
    points = minutes([6.0] * 150 + [11.5] * 30 + [6.0] * 10 + [11.5] * 30)
    first, *rest = evaluate(CUMULATIVE, points)
    assert first.end == T0 + timedelta(minutes=150)
    assert rest == []  # the dip comes while the 24 h window still holds 150 min: no second alert
