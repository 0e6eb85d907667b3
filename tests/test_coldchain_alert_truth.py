"""Cold-chain alert truth (issue 14): one alert per excursion with the rules as its escalation
levels, excursions alerted however late they arrive, rules for storage or transit only, and the
alert set against a reference written apart from the code (tests/coldchain_oracle.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import coldchain_oracle as oracle
import factories
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agritrace.coldchain import evaluator, profiles
from agritrace.db import Conn

MINUTE = timedelta(minutes=1)


def watched(conn: Conn, *, profile: str = "mango", asset_kind: str | None = None) -> dict[str, Any]:
    gw = factories.gateway(conn)["id"]
    ch = factories.channel(conn, gateway_id=gw, name="room/temp")
    if asset_kind:
        conn.execute("UPDATE channels SET asset_kind = %s WHERE id = %s", (asset_kind, ch["id"]))
    profiles.set_channel_profile(conn, gateway_id=gw, channel="room/temp", profile=profile)
    return ch


def ingest(conn: Conn, channel_id: int, points: list[tuple[datetime, float]]) -> None:
    """What the ingest worker does: store readings, mark the channel ingested, lower its watermark."""
    factories.readings(conn, channel_id=channel_id, points=points)
    conn.execute(
        """UPDATE channels SET last_ingested_at = clock_timestamp(), coldchain_from = least(coldchain_from, %s)
            WHERE id = %s""",
        (min(t for t, _ in points), channel_id),
    )


def series(start: datetime, values: list[float], step: timedelta = MINUTE) -> list[tuple[datetime, float]]:
    return [(start + i * step, v) for i, v in enumerate(values)]


def alerts_of(conn: Conn, channel_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT * FROM alerts_view WHERE channel_id = %s AND status <> 'withdrawn' AND metric <> 'no_data'
            ORDER BY started_at, id""",
        (channel_id,),
    ).fetchall()


def history(conn: Conn, alert_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT action, comment, state FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)
    ).fetchall()


def test_a_mango_room_at_6c_for_three_hours_is_one_critical_alert_whose_history_shows_each_level(
    conn: Conn,
) -> None:
    ch = watched(conn)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    points = series(start, [6.0] * 180)
    for i in range(0, len(points), 10):  # as it happens, ten minutes at a time
        ingest(conn, ch["id"], points[i : i + 10])
        evaluator.run_once(conn, now=points[i : i + 10][-1][0] + MINUTE)
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["status"], alert["severity"], alert["rule"]) == ("open", "critical", "chilling")
    assert alert["condition"] == "temperature:below"
    assert alert["rules_met"] == ["chilling", "chilling-cumulative"]
    assert alert["started_at"] == start and not alert["late"]
    assert alert["met_at"] == start + timedelta(minutes=30)
    steps = history(conn, alert["id"])
    assert [h["action"] for h in steps] == ["opened", "escalated"]
    assert steps[0]["comment"].startswith("chilling (critical) met at")
    assert steps[1]["comment"].startswith("chilling-cumulative (warning) met at")
    assert steps[1]["comment"].endswith("severity stays critical")
    # The regulator counts one alert.
    n = conn.execute("SELECT count(*) AS n FROM alerts WHERE status IN ('open', 'acknowledged')").fetchone()
    assert n is not None and n["n"] == 1


def test_a_room_that_keeps_dipping_escalates_its_one_alert_from_warning_to_critical(conn: Conn) -> None:
    ch = watched(conn)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    # Dips of 25 min below 10 °C (under the 30 min delay) with 5 min back in range (not cleared for
    # the 10 min clear delay): 2 h below in total opens the cumulative warning; then 40 min below.
    dips = ([8.0] * 25 + [11.0] * 5) * 6 + [8.0] * 40
    points = series(start, dips)
    for i in range(0, len(points), 15):
        ingest(conn, ch["id"], points[i : i + 15])
        evaluator.run_once(conn, now=points[i : i + 15][-1][0] + MINUTE)
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["severity"], alert["rule"]) == ("critical", "chilling")
    steps = history(conn, alert["id"])
    assert [h["action"] for h in steps[:2]] == ["opened", "escalated"]
    assert steps[0]["state"]["severity"] == "warning" and steps[0]["comment"].startswith(
        "chilling-cumulative"
    )
    assert steps[1]["comment"].endswith("severity warning -> critical")
    assert steps[1]["state"]["severity"] == "critical"


@pytest.mark.parametrize("hours_late", [46, 50, 24 * 20])
def test_a_45_minute_excursion_sent_days_late_opens_one_alert_marked_late(
    conn: Conn, hours_late: int
) -> None:
    ch = watched(conn)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # Live readings up to now, in range.
    ingest(conn, ch["id"], series(now - timedelta(hours=2), [11.5] * 120))
    evaluator.run_once(conn)
    assert alerts_of(conn, ch["id"]) == []
    # A truck gateway's backlog: 45 min at 6 °C, `hours_late` hours ago, uploaded now.
    start = now - timedelta(hours=hours_late)
    ingest(conn, ch["id"], series(start, [11.5] * 10 + [6.0] * 45 + [11.5] * 30))
    evaluator.run_once(conn)
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["rule"], alert["severity"], alert["status"]) == ("chilling", "critical", "resolved")
    assert alert["late"] is True
    assert alert["started_at"] == start + 10 * MINUTE and alert["ended_at"] == start + 55 * MINUTE
    assert alert["met_at"] == start + 40 * MINUTE and alert["opened_at"] >= now
    (opened, resolved) = history(conn, alert["id"])
    assert opened["action"] == "opened" and "late: it happened from" in opened["comment"]
    assert resolved["action"] == "resolved"
    # Evaluated again from scratch: the same alert, no new event.
    conn.execute("DELETE FROM coldchain_eval_state")
    evaluator.run_once(conn)
    assert [a["id"] for a in alerts_of(conn, ch["id"])] == [alert["id"]]
    assert len(history(conn, alert["id"])) == 2


def test_a_day_one_excursion_of_a_truck_back_online_after_two_days_is_not_hidden(conn: Conn) -> None:
    ch = watched(conn, asset_kind="truck")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=49)
    # Two days of 5-minute readings, uploaded at once, newest first; a 1 h excursion on day one.
    values = [6.0 if 24 <= i < 36 else 11.5 for i in range(49 * 12)]
    points = series(start, values, step=5 * MINUTE)
    for i in range(len(points), 0, -100):
        ingest(conn, ch["id"], points[max(0, i - 100) : i])
    evaluator.run_once(conn)
    (alert,) = alerts_of(conn, ch["id"])
    assert alert["started_at"] == start + 120 * MINUTE and alert["late"]


def test_a_rule_for_transit_only_watches_trucks_and_not_cold_rooms(conn: Conn) -> None:
    profiles.create_profile(conn, name="berries", description=None, bands={"temp_low": 0, "temp_high": 4})
    profiles.add_rule(
        conn,
        profile="berries",
        rule={
            "name": "warm-in-transit",
            "metric": "temperature",
            "direction": "above",
            "threshold": 4.0,
            "delay_s": 600,
            "severity": "critical",
        },
    )
    conn.execute("UPDATE coldchain_rules SET applies_in = 'transit' WHERE name = 'warm-in-transit'")
    truck = watched(conn, profile="berries", asset_kind="truck")
    room = watched(conn, profile="berries", asset_kind="cold_room")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    for ch in (truck, room):
        ingest(conn, ch["id"], series(start, [7.0] * 30))
    evaluator.run_once(conn)
    assert [a["rule"] for a in alerts_of(conn, truck["id"])] == ["warm-in-transit"]
    assert alerts_of(conn, room["id"]) == []


# The mango profile's temperature rules, restated from its definition (coldchain/profiles.py defaults).
MANGO = [
    oracle.OracleRule("chilling", "below", 10.0, timedelta(minutes=30), "critical"),
    oracle.OracleRule(
        "chilling-cumulative", "below", 10.0, timedelta(hours=2), "warning", window=timedelta(hours=24)
    ),
    oracle.OracleRule("warm", "above", 13.0, timedelta(hours=1), "warning"),
]


PROPERTY = {
    "levels": st.lists(
        st.tuples(st.sampled_from([6.0, 9.7, 10.2, 10.7, 12.0, 13.6, 15.0]), st.integers(1, 70)),
        min_size=1,
        max_size=14,
    ),
    "chunk": st.sampled_from([3, 5, 10, 30, 120]),
    "delays": st.lists(st.sampled_from([1, 1, 1, 1, 20, 180, 50 * 60]), min_size=1, max_size=30),
    "seed": st.integers(0, 2**32),
}
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(**PROPERTY)
def test_property_alerts_match_the_reference_on_random_series_arriving_late_and_shuffled(
    conn: Conn, levels: list[tuple[float, int]], chunk: int, delays: list[int], seed: int
) -> None:
    """Random one-minute series (with a few gaps), uploaded in chunks that arrive out of order, some
    minutes and some days late: the stored alerts are the reference's alert set."""
    check_against_reference(conn, levels, chunk, delays, seed, late=False)


@pytest.mark.xfail(
    reason="open: when late readings cut an alert in two, the evaluator opens the split-off part as a new "
    "alert (opened_at = now) while the reference counts it known since the alert it was part of was shown; "
    "minimal known case: test_an_alert_cut_in_two_by_late_readings_keeps_when_it_was_known",
    strict=False,
)
# While xfail, a failing case is reported, not shrunk (shrinking against the database takes minutes).
@settings(parent=SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(**PROPERTY)
def test_property_late_flags_match_the_reference(
    conn: Conn, levels: list[tuple[float, int]], chunk: int, delays: list[int], seed: int
) -> None:
    """The same uploads: each stored alert's late flag is the reference's."""
    check_against_reference(conn, levels, chunk, delays, seed)


def check_against_reference(
    conn: Conn,
    levels: list[tuple[float, int]],
    chunk: int,
    delays: list[int],
    seed: int,
    *,
    late: bool = True,
) -> None:
    """Uploads the series as the property describes it and compares the alerts with the reference's
    (and, if `late`, their late flags)."""
    rng = random.Random(seed)
    ch = watched(conn)
    values = [v for v, minutes in levels for _ in range(minutes)]
    origin = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=3)
    points = [(origin + i * MINUTE, v) for i, v in enumerate(values) if rng.random() > 0.03]
    if not points:
        return
    chunks = [points[i : i + chunk] for i in range(0, len(points), chunk)]
    order = list(range(len(chunks)))
    if rng.random() < 0.5:
        rng.shuffle(order)  # a backlog uploaded in any order
    batches, clock = [], origin
    for n, c in enumerate(order):
        # Each chunk arrives some minutes after its newest reading, or much later; never before the previous.
        clock = max(clock, chunks[c][-1][0] + delays[n % len(delays)] * MINUTE)
        batches.append((clock, chunks[c]))
    for arrived, readings in batches:
        ingest(conn, ch["id"], readings)
        evaluator.run_once(conn, now=arrived, silence=False)

    data = oracle.kept(points)
    expected = oracle.alert_set(MANGO, data)
    got = sorted(alerts_of(conn, ch["id"]), key=lambda a: (a["condition"], a["started_at"]))
    assert [
        (a["condition"], a["started_at"], a["ended_at"], a["severity"], frozenset(a["rules_met"]))
        for a in got
    ] == [(e.condition, e.start, e.end, e.severity, e.rules) for e in expected]
    assert [a["status"] for a in got] == ["resolved" if e.end else "open" for e in expected]
    # One live alert per condition at most: the regulator's count is the number of excursions going on.
    live = [a["condition"] for a in got if a["status"] == "open"]
    assert len(live) == len(set(live))
    if late:
        assert [(a["condition"], a["started_at"], a["late"]) for a in got] == oracle.late_flags(
            MANGO, batches
        )


# What hypothesis found before the property was made binding (each failed it).
@pytest.mark.parametrize(
    ("levels", "chunk", "delays", "seed"),
    [
        # The cumulative level (2 h below within 24 h) covers a chilling excursion that ended hours
        # earlier: the two are one alert, not a second one beside the first.
        (
            [(12.0, 1), (9.7, 12), (6.0, 10), (6.0, 70), (10.2, 58), (10.7, 42), (12.0, 58), (9.7, 62)],
            120,
            [1, 1],
            185333,
        ),
        # Shuffled chunks: later readings moved the alert's met time later than when it was first
        # seen; late is judged against the final met time (the reference used the first version's).
        (
            [(12.0, 3), (6.0, 9), (10.7, 47), (10.7, 29), (9.7, 62), (9.7, 69), (13.6, 26), (9.7, 62)],
            10,
            [20, 1, 1, 20],
            22923,
        ),
    ],
)
def test_examples_hypothesis_found(
    conn: Conn, levels: list[tuple[float, int]], chunk: int, delays: list[int], seed: int
) -> None:
    check_against_reference(conn, levels, chunk, delays, seed)


def test_a_cumulative_level_that_covers_an_excursion_ended_hours_ago_joins_its_alert(conn: Conn) -> None:
    """In order: 40 min at 6 °C (chilling, ended), 2 h in range, then 90 min at 6 °C. The 24 h window
    reaches 2 h below at minute 240 and its excursion covers both dips: one alert, with both levels."""
    ch = watched(conn)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    points = series(start, [6.0] * 40 + [12.0] * 120 + [6.0] * 90)
    for i in range(0, len(points), 10):
        ingest(conn, ch["id"], points[i : i + 10])
        evaluator.run_once(conn, now=points[i : i + 10][-1][0] + MINUTE, silence=False)
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["started_at"], alert["ended_at"], alert["status"]) == (start, None, "open")
    assert alert["rules_met"] == ["chilling", "chilling-cumulative"] and alert["severity"] == "critical"
    (expected,) = [
        a for a in oracle.alert_set(MANGO, oracle.kept(points)) if a.condition == alert["condition"]
    ]
    assert (expected.start, expected.end, expected.rules) == (start, None, frozenset(alert["rules_met"]))


def test_an_excursion_seen_first_from_its_tail_is_late_once_its_beginning_arrives(conn: Conn) -> None:
    """70 min at 6 °C then in range. Minutes 35-71 arrive at minute 72 (chilling met at 65: known 7 min
    after, not late); minutes 0-34 arrive next: it was met at minute 30, known 42 min after: late."""
    ch = watched(conn)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    points = series(start, [6.0] * 70 + [12.0] * 20)
    batches = [(start + 72 * MINUTE, points[35:72]), (start + 73 * MINUTE, points[:35])]
    batches.append((start + 91 * MINUTE, points[72:]))
    for n, (arrived, readings) in enumerate(batches):
        ingest(conn, ch["id"], readings)
        evaluator.run_once(conn, now=arrived, silence=False)
        if n == 0:
            (alert,) = alerts_of(conn, ch["id"])
            assert alert["met_at"] == start + 65 * MINUTE and not alert["late"]
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["started_at"], alert["ended_at"], alert["status"]) == (
        start,
        start + 70 * MINUTE,
        "resolved",
    )
    assert (alert["met_at"], alert["opened_at"], alert["late"]) == (
        start + 30 * MINUTE,
        start + 72 * MINUTE,
        True,
    )
    assert "late: its first level was met at" in " ".join(
        h["comment"] or "" for h in history(conn, alert["id"])
    )
    assert oracle.late_flags(MANGO, batches) == [(alert["condition"], start, True)]


CUT_IN_TWO = [(6.0, 49), (9.7, 70), (10.2, 32), (9.7, 57), (10.2, 23), (12.0, 2), (9.7, 19), (12.0, 37)]
CUT_IN_TWO += [(6.0, 36), (12.0, 31), (9.7, 70), (10.7, 65), (12.0, 2)]


def test_a_live_alert_whose_excursion_late_readings_show_ended_is_followed_not_withdrawn(conn: Conn) -> None:
    """Shuffled 3-minute chunks (hypothesis): a live alert whose excursion, by late readings, ended
    before the new chunk's horizon was withdrawn ("late readings show no excursion") and the same
    excursion opened again as a new alert; it is followed to its end instead."""
    check_against_reference(conn, CUT_IN_TWO, 3, [1, 1, 1], 3628799, late=False)
    withdrawn = conn.execute("SELECT count(*) AS n FROM alerts WHERE status = 'withdrawn'").fetchone()
    assert withdrawn is not None and withdrawn["n"] == 0


@pytest.mark.xfail(reason="open: see test_property_late_flags_match_the_reference", strict=False)
def test_an_alert_cut_in_two_by_late_readings_keeps_when_it_was_known(conn: Conn) -> None:
    check_against_reference(conn, CUT_IN_TWO, 3, [1, 1, 1], 3628799)
