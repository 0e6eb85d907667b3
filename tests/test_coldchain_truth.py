"""Cold-chain truth (issue 14): the SQL summary and its verdict against a reference implementation
written apart from it (tests/coldchain_oracle.py), on random logger series; and the scenarios of the
issue, checked against figures computed by hand."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import coldchain_oracle as oracle
import factories
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agritrace.coldchain import evaluator, profiles, summary
from agritrace.db import Conn
from agritrace.errors import InvalidInput

MINUTE = timedelta(minutes=1)


@st.composite
def logger_histories(draw: st.DrawFn) -> dict[str, Any]:
    """One or two channels with irregular readings (gaps included), windows with edges anywhere
    (some still open), and an arrival order that is shuffled and has duplicates."""
    channels = []
    for _ in range(draw(st.integers(1, 2))):
        interval_s = draw(st.sampled_from([60, 300, 900]))
        tolerance = draw(st.sampled_from([1.0, 1.5, 2.0, 3.0]))
        t = draw(st.integers(-120, 30))  # minutes from the origin
        readings = []
        for _ in range(draw(st.integers(0, 40))):
            # Mostly about the expected interval, sometimes a long silence.
            t += draw(st.one_of(st.integers(1, 2 * interval_s // 60 + 1), st.integers(1, 240)))
            readings.append((t, draw(st.sampled_from([5.0, 9.5, 10.0, 11.0, 12.5, 13.0, 13.5, 16.0]))))
        channels.append({"interval_s": interval_s, "tolerance": tolerance, "readings": readings})
    windows = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(-60, 900))
        length = draw(st.integers(1, 900))
        open_ = draw(st.booleans()) and draw(st.booleans())
        windows.append((draw(st.integers(0, len(channels) - 1)), start, None if open_ else start + length))
    band = draw(st.sampled_from([(10.0, 13.0), (None, 10.0), (5.0, None)]))
    return {
        "channels": channels,
        "windows": windows,
        "band": band,
        "seed": draw(st.integers(0, 2**32)),
        "duplicates": draw(st.integers(0, 5)),
        "age_h": draw(st.sampled_from([1, 20, 200])),  # how long ago the origin was (windows may reach now)
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=logger_histories())
def test_summary_and_verdict_match_the_reference_on_random_logger_series(
    conn: Conn, history: dict[str, Any]
) -> None:
    rng = random.Random(history["seed"])
    origin = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=history["age_h"])
    gw = factories.gateway(conn)["id"]
    ids, arrivals_of, stands = [], {}, {}
    for n, ch in enumerate(history["channels"]):
        row = factories.channel(conn, gateway_id=gw, name=f"room{n}/temp")
        conn.execute(
            "UPDATE channels SET expected_interval_s = %s, interval_tolerance = %s WHERE id = %s",
            (ch["interval_s"], ch["tolerance"], row["id"]),
        )
        arrivals = [(origin + m * MINUTE, v) for m, v in ch["readings"]]
        # Duplicated arrivals (the same time again, maybe another value: the first one stays), shuffled.
        for _ in range(history["duplicates"] if arrivals else 0):
            t, _ = rng.choice(arrivals)
            arrivals.append((t, rng.choice([0.0, 20.0])))
        first, rest = arrivals[: len(ch["readings"])], arrivals[len(ch["readings"]) :]
        rng.shuffle(first)
        arrivals = first + rest  # duplicates arrive after the originals
        for i in range(0, len(arrivals), 7):  # in several late batches
            factories.readings(conn, channel_id=row["id"], points=arrivals[i : i + 7])
        ids.append(int(row["id"]))
        arrivals_of[int(row["id"])] = arrivals
        stands[int(row["id"])] = timedelta(seconds=ch["interval_s"] * ch["tolerance"])
    windows = [
        (ids[c], origin + s * MINUTE, None if e is None else origin + e * MINUTE)
        for c, s, e in history["windows"]
    ]
    low, high = history["band"]
    with conn.transaction():  # one now() for the summary and the reference
        now_row = conn.execute("SELECT now() AS now").fetchone()
        assert now_row is not None
        got = summary.summarize_windows(conn, windows=windows, profile_id=None, low=low, high=high)
    want = oracle.summarize(
        series={c: oracle.kept(a) for c, a in arrivals_of.items()},
        max_stand=stands,
        windows=[oracle.Window(c, s, e) for c, s, e in windows],
        low=low,
        high=high,
        now=now_row["now"],
    )
    approx = pytest.approx
    assert got.readings == want.readings
    assert got.minutes == approx(want.minutes, abs=1e-6)
    assert got.minutes_in_band == approx(want.minutes_in, abs=1e-6)
    assert got.minutes_out_of_band == approx(want.minutes_out, abs=1e-6)
    assert got.minutes_no_data == approx(want.minutes_no_data, abs=1e-6)
    assert got.excursions == want.excursions
    assert (got.min, got.max) == (want.low_value, want.high_value)
    assert got.mean == (None if want.mean is None else approx(want.mean, abs=1e-9))
    assert got.mkt == (None if want.mkt is None else approx(want.mkt, abs=1e-9))
    assert got.latest_reading == want.latest
    assert got.in_progress == want.in_progress
    assert got.verdict == want.verdict
    if want.worst is None:
        assert got.worst is None
    else:
        assert got.worst is not None and (got.worst.value, got.worst.time) == want.worst[:2]


def _mango_room(conn: Conn, *, start: datetime, values: list[float], every: timedelta) -> int:
    ch = factories.channel(conn, name="coldroom/temp")
    conn.execute(
        "UPDATE channels SET asset_kind = 'cold_room', asset_name = '2号冷库' WHERE id = %s", (ch["id"],)
    )
    factories.readings(
        conn, channel_id=ch["id"], points=[(start + i * every, v) for i, v in enumerate(values)]
    )
    return int(ch["id"])


def test_the_last_reading_of_custody_counts_until_custody_ends(conn: Conn) -> None:
    # The lot: custody 00:05-05:58 of a channel read every 15 min, 16.0 °C at 05:15, 05:30, 05:45.
    day = datetime(2026, 8, 3, tzinfo=UTC)
    values = [12.0] * 25
    for i in (21, 22, 23):  # 05:15, 05:30, 05:45
        values[i] = 16.0
    ch = _mango_room(conn, start=day, values=values, every=timedelta(minutes=15))
    got = summary.summarize_windows(
        conn,
        windows=[(ch, day + timedelta(minutes=5), day + timedelta(hours=5, minutes=58))],
        profile_id=None,
        low=10.0,
        high=13.0,
    )
    # By hand: 15 + 15 + 13 (05:45 clipped at 05:58) = 43 min out; the 00:00 reading carried in (10 min).
    assert got.minutes_out_of_band == pytest.approx(43.0)
    assert got.minutes_in_band == pytest.approx(353 - 43)
    assert got.minutes_no_data == 0 and got.readings == 24
    assert got.verdict == "excursion"
    assert got.worst is not None and (got.worst.value, got.worst.place) == (16.0, "2号冷库")
    assert got.worst.time == day + timedelta(hours=5, minutes=15)


def test_mkt_is_weighted_by_time_not_by_reading(conn: Conn) -> None:
    # Irregular logging: 12 °C for 50 min in one reading, then ten readings of 8 °C a minute apart.
    start = datetime(2026, 8, 3, tzinfo=UTC)
    ch = factories.channel(conn)
    conn.execute(
        "UPDATE channels SET expected_interval_s = 3600, interval_tolerance = 1 WHERE id = %s", (ch["id"],)
    )
    points = [(start, 12.0)] + [(start + timedelta(minutes=50 + i), 8.0) for i in range(11)]
    factories.readings(conn, channel_id=ch["id"], points=points)
    got = summary.summarize_windows(
        conn, windows=[(ch["id"], start, start + timedelta(minutes=60))], profile_id=None, low=None, high=None
    )
    # By hand: weights 50 min at 12 °C, 10 min at 8 °C.
    k = (50 * math.exp(-10000 / 285.15) + 10 * math.exp(-10000 / 281.15)) / 60
    assert got.mkt == pytest.approx(10000 / -math.log(k) - 273.15, abs=1e-9)
    unweighted = sum(math.exp(-10000 / (v + 273.15)) for _, v in points[:11]) / 11
    assert (
        got.mkt is not None and abs(got.mkt - (10000 / -math.log(unweighted) - 273.15)) > 1
    )  # what was shown before


def _alerts(conn: Conn, channel_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT rule, status, severity, worst_value FROM alerts_view
            WHERE channel_id = %s AND status <> 'withdrawn' ORDER BY started_at, rule""",
        (channel_id,),
    ).fetchall()


def _worker_writes(conn: Conn, gateway: str, records: list[tuple[str, datetime, float, str]]) -> None:
    """The ingest worker's write path for SenML records (name, time, value, unit) of known channels."""
    from agritrace.ingest import store
    from agritrace.ingest.senml import Reading

    rows = conn.execute("SELECT id, name, unit FROM channels WHERE gateway_id = %s", (gateway,)).fetchall()
    ids = {gateway: {r["name"]: r["id"] for r in rows}}
    units = {r["id"]: r["unit"] for r in rows}
    readings = [Reading(n, t.timestamp(), v, u) for n, t, v, u in records]
    stream, newest, oldest = store.encode_readings([(gateway, readings)], ids, units)
    with conn.transaction():
        store.copy_readings(conn, stream, len(readings))
        store.update_latest(conn, newest, oldest)


def test_kelvin_sent_on_a_celsius_channel_is_stored_in_celsius_and_opens_the_chilling_alert(
    conn: Conn,
) -> None:
    profiles.ensure_defaults(conn)
    gw = factories.gateway(conn)["id"]
    ch = factories.channel(conn, gateway_id=gw, name="coldroom/temp", unit="Cel")
    profiles.set_channel_profile(conn, gateway_id=gw, channel="coldroom/temp", profile="mango")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=45)
    _worker_writes(conn, gw, [("coldroom/temp", start + i * MINUTE, 281.15, "K") for i in range(45)])
    stored = conn.execute("SELECT DISTINCT value FROM readings WHERE channel_id = %s", (ch["id"],)).fetchall()
    assert [round(r["value"], 9) for r in stored] == [8.0]
    evaluator.run_once(conn)
    assert [(a["rule"], a["status"], round(a["worst_value"], 9)) for a in _alerts(conn, ch["id"])] == [
        ("chilling", "open", 8.0)
    ]


def test_a_channel_reporting_in_kelvin_is_watched_in_celsius(conn: Conn) -> None:
    profiles.ensure_defaults(conn)
    gw = factories.gateway(conn)["id"]
    ch = factories.channel(conn, gateway_id=gw, name="truck/temp", unit="K")
    profiles.set_channel_profile(conn, gateway_id=gw, channel="truck/temp", profile="mango")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=45)
    factories.readings(conn, channel_id=ch["id"], points=[(start + i * MINUTE, 281.15) for i in range(45)])
    conn.execute("UPDATE channels SET last_ingested_at = now() WHERE id = %s", (ch["id"],))
    evaluator.run_once(conn)
    assert [(a["rule"], round(a["worst_value"], 9)) for a in _alerts(conn, ch["id"])] == [("chilling", 8.0)]
    s = summary.summarize(conn, channel_id=ch["id"], start=start, end=start + 45 * MINUTE)
    assert (s["unit"], round(s["min"], 9), s["minutes_out_of_band"]) == ("Cel", 8.0, 45.0)


@pytest.mark.parametrize(
    ("unit", "profile", "problem"),
    [
        ("V", "mango", "reports in V"),
        (None, "mango", "reports in no unit"),
        ("%", "mango", "reports in %"),
        ("%RH", "lychee", "has no humidity band or rule"),
    ],
)
def test_a_profile_is_refused_on_a_channel_whose_unit_cannot_express_it(
    conn: Conn, unit: str | None, profile: str, problem: str
) -> None:
    profiles.ensure_defaults(conn)
    profiles.create_profile(conn, name="lychee", description=None, bands={"temp_low": 1.0, "temp_high": 5.0})
    gw = factories.gateway(conn)["id"]
    conn.execute("INSERT INTO channels (gateway_id, name, unit) VALUES (%s, 'probe', %s)", (gw, unit))
    with pytest.raises(InvalidInput, match=problem):
        profiles.set_channel_profile(conn, gateway_id=gw, channel="probe", profile=profile)
    assert conn.execute("SELECT count(*) AS n FROM coldchain_channel_profiles").fetchone() == {"n": 0}
    # The same channel in a unit that expresses the profile's metric is accepted.
    conn.execute("UPDATE channels SET unit = 'K' WHERE gateway_id = %s", (gw,))
    profiles.set_channel_profile(conn, gateway_id=gw, channel="probe", profile=profile)
