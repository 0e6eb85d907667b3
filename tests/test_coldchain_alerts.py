"""Cold-chain alerts end to end against the real database and broker: a mango cold room that gets
too cold, late and shuffled readings, a flapping sensor, a silent logger, and who may see what."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import factories
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agritrace import audit, db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.api.pagination import encode_cursor
from agritrace.coldchain import evaluator, profiles
from agritrace.db import Conn
from agritrace.ingest import store
from agritrace.ingest.senml import Reading
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
AGRITRACE = REPO / ".venv" / "bin" / "agritrace"


def watched_channel(
    conn: Conn, *, profile: str = "mango", gateway_id: str | None = None, name: str = "coldroom/temp"
) -> dict[str, Any]:
    """A gateway's temperature channel watched against a profile."""
    gw = gateway_id or factories.gateway(conn)["id"]
    ch = factories.channel(conn, gateway_id=gw, name=name)
    profiles.set_channel_profile(conn, gateway_id=gw, channel=name, profile=profile)
    return ch


def ingest(conn: Conn, channel_id: int, points: list[tuple[datetime, float]]) -> None:
    """What the ingest worker does: store readings, then mark the channel as freshly ingested."""
    factories.readings(conn, channel_id=channel_id, points=points)
    conn.execute(
        """UPDATE channels SET last_ingested_at = clock_timestamp(), coldchain_from = least(coldchain_from, %s)
            WHERE id = %s""",
        (min(t for t, _ in points), channel_id),
    )


def series(start: datetime, values: list[float]) -> list[tuple[datetime, float]]:
    """One reading a minute from `start`."""
    return [(start + timedelta(minutes=i), v) for i, v in enumerate(values)]


def alerts_of(conn: Conn, channel_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM alerts_view WHERE channel_id = %s AND status <> 'withdrawn' ORDER BY started_at, rule",
        (channel_id,),
    ).fetchall()


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def bearer(conn: Conn, role: str, cooperative: str | None = None) -> dict[str, str]:
    return {"Authorization": "Bearer " + tokens.create(conn, role=role, cooperative=cooperative)}


class AlertTopic:
    """Listens on a gateway's alert topics with the test run's observer account."""

    def __init__(self, gateway_id: str, observer: tuple[str, str]) -> None:
        settings = get_settings()
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = new_client(
            f"t-alerts-{secrets.token_hex(4)}", username=observer[0], password=observer[1]
        )
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.client.on_subscribe = lambda *_: subscribed.set()
        connect_blocking(self.client, settings)
        self.client.subscribe(f"agritrace/v1/alerts/{gateway_id}/#", qos=1)
        assert subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mango_cold_room_at_6c_past_the_delay_opens_one_alert_in_api_and_mqtt_and_recovery_resolves_it(
    conn: Conn, client: TestClient, alerts_process: None, observer_account: tuple[str, str]
) -> None:
    ch = watched_channel(conn, profile="mango")
    topic = AlertTopic(ch["gateway_id"], observer_account)
    headers = bearer(conn, "regulator")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    # 10 min in band, then 45 min at 6 °C: past the 30 min chilling delay.
    ingest(conn, ch["id"], series(start, [11.5] * 10 + [6.0] * 45))

    def open_alerts() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = client.get("/api/v1/alerts?status=open", headers=headers).json()[
            "items"
        ]
        return [a for a in items if a["gateway_id"] == ch["gateway_id"]]

    (alert,) = wait_for(open_alerts)
    assert alert["channel"] == "coldroom/temp"
    assert alert["severity"] == "critical"
    assert alert["rule"] == "chilling" and alert["product"] == "mango"
    assert alert["worst_value"] == 6.0
    assert datetime.fromisoformat(alert["started_at"]) == start + timedelta(minutes=10)
    alert_topic = f"agritrace/v1/alerts/{ch['gateway_id']}/{alert['id']}"
    first = wait_for(lambda: [m for m in topic.messages if m.topic == alert_topic])[0]
    assert json.loads(first.payload)["status"] == "open"

    # Back to 11.5 °C for 20 minutes: longer than the 10 minute clear delay.
    ingest(conn, ch["id"], series(start + timedelta(minutes=55), [11.5] * 20))
    resolved = wait_for(
        lambda: client.get(f"/api/v1/alerts/{alert['id']}", headers=headers).json()["status"] == "resolved"
    )
    assert resolved
    body = client.get(f"/api/v1/alerts/{alert['id']}", headers=headers).json()
    assert body["ended_at"] and datetime.fromisoformat(body["ended_at"]) == start + timedelta(minutes=55)
    assert body["minutes_out"] == 45
    assert [h["action"] for h in body["history"]] == ["opened", "resolved"]
    # The resolution is published, then the retained state is cleared with an empty message.
    wait_for(lambda: [m for m in topic.messages if m.topic == alert_topic and m.payload == b""])
    payloads = [m.payload for m in topic.messages if m.topic == alert_topic]
    assert json.loads(payloads[-2])["status"] == "resolved"
    topic.close()
    # Exactly one alert for the whole episode, whatever the status.
    everything = client.get(f"/api/v1/alerts?gateway_id={ch['gateway_id']}", headers=headers).json()["items"]
    assert len(everything) == 1


def _episode(start: datetime) -> list[tuple[datetime, float]]:
    """Three hours of a cold room: a real excursion, a short dip, and one still going on."""
    values = [11.5] * 20 + [6.0] * 45 + [11.5] * 30 + [8.0] * 15 + [11.5] * 40 + [7.0] * 35
    return series(start, values)


def _evaluated_in_chunks(
    conn: Conn, channel_id: int, points: list[tuple[datetime, float]], size: int = 15
) -> None:
    for i in range(0, len(points), size):
        ingest(conn, channel_id, points[i : i + size])
        evaluator.run_once(conn)


def _comparable(conn: Conn, channel_id: int) -> list[tuple[Any, ...]]:
    # "No data" follows real time and arrival, not the readings' content; compare the threshold rules.
    return [
        (a["rule"], a["status"], a["started_at"], a["ended_at"], a["worst_value"], a["minutes_out"])
        for a in alerts_of(conn, channel_id)
        if a["metric"] != "no_data"
    ]


def test_shuffled_and_duplicated_readings_give_the_same_alerts_as_in_order(conn: Conn) -> None:
    gw = factories.gateway(conn)["id"]
    in_order = watched_channel(conn, gateway_id=gw, name="room-a/temp")
    shuffled = watched_channel(conn, gateway_id=gw, name="room-b/temp")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=190)
    points = _episode(start)
    noisy = points + random.Random(4).sample(points, k=60)
    random.Random(7).shuffle(noisy)

    _evaluated_in_chunks(conn, in_order["id"], points)
    _evaluated_in_chunks(conn, shuffled["id"], noisy)

    expected = _comparable(conn, in_order["id"])
    assert [(a[0], a[1]) for a in expected] == [("chilling", "resolved"), ("chilling", "open")]
    assert _comparable(conn, shuffled["id"]) == expected
    # Evaluating again changes nothing (idempotent), not even the history.
    events = conn.execute("SELECT count(*) AS n FROM alert_events").fetchone()
    conn.execute("DELETE FROM coldchain_eval_state")
    evaluator.run_once(conn)
    assert conn.execute("SELECT count(*) AS n FROM alert_events").fetchone() == events
    assert _comparable(conn, shuffled["id"]) == expected


def test_readings_committed_after_an_evaluation_by_a_transaction_begun_before_it_are_still_evaluated(
    conn: Conn, database: str
) -> None:
    """Two ingest workers: B begins its transaction, A begins, commits, and the evaluator looks at the
    channel; then B commits the readings that carry the room past the delay. The evaluator must look
    again, or the alert waits for the next reading (forever, if B's was the last of a burst)."""
    ch = watched_channel(conn)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    too_cold = [Reading("room", (start + timedelta(minutes=i)).timestamp(), 8.0, "Cel") for i in range(40)]
    ids = {"gw": {"room": ch["id"]}}  # mango: < 10 °C

    def write(worker: Conn, readings: list[Reading]) -> None:
        stream, newest, oldest = store.encode_readings([("gw", readings)], ids)
        store.copy_readings(worker, stream, len(readings))
        store.update_latest(worker, newest, oldest)
        worker.commit()

    with db.connect(database) as a, db.connect(database) as b:
        b.execute("SELECT 1")  # B's transaction begins first
        time.sleep(0.01)
        write(a, too_cold[:20])  # 20 min too cold: under the 30 min delay
        assert evaluator.run_once(conn) == 1
        assert alerts_of(conn, ch["id"]) == []
        write(b, too_cold[20:])  # 40 min too cold: past it
    assert evaluator.run_once(conn) == 1
    assert [(x["rule"], x["status"]) for x in alerts_of(conn, ch["id"])] == [("chilling", "open")]


def test_readings_oscillating_across_the_threshold_every_minute_open_at_most_one_alert(conn: Conn) -> None:
    ch = watched_channel(conn)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    points = series(start, [9.8 if i % 2 else 10.2 for i in range(6 * 60)])
    _evaluated_in_chunks(conn, ch["id"], points)
    assert len(alerts_of(conn, ch["id"])) <= 1
    opened = conn.execute("SELECT count(*) AS n FROM alert_events WHERE action = 'opened'").fetchone()
    assert opened is not None and opened["n"] <= 1


def test_a_channel_that_stops_reporting_raises_a_no_data_alert_that_ends_when_it_reports_again(
    conn: Conn,
) -> None:
    ch = watched_channel(conn)
    now = datetime.now(UTC).replace(microsecond=0)
    last = now - timedelta(minutes=45)
    ingest(conn, ch["id"], series(last - timedelta(minutes=30), [11.5] * 31))
    conn.execute("UPDATE channels SET last_ingested_at = %s WHERE id = %s", (last, ch["id"]))
    evaluator.run_once(conn, now=now)
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["rule"], alert["metric"], alert["status"]) == ("no-data", "no_data", "open")
    assert alert["started_at"] == last
    assert alert["minutes_out"] == 45

    evaluator.run_once(conn, now=now + timedelta(minutes=5))  # still silent: the same alert, no new one
    assert [a["id"] for a in alerts_of(conn, ch["id"])] == [alert["id"]]

    ingest(conn, ch["id"], [(now + timedelta(minutes=6), 11.4)])
    evaluator.run_once(conn, now=now + timedelta(minutes=7))
    (done,) = alerts_of(conn, ch["id"])
    assert done["status"] == "resolved" and done["ended_at"] == now + timedelta(minutes=6)


def _one_alert(
    conn: Conn, profile: str = "mango", value: float = 6.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    ch = watched_channel(conn, profile=profile)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    ingest(conn, ch["id"], series(start, [value] * 40))
    evaluator.run_once(conn)
    (alert,) = alerts_of(conn, ch["id"])
    return ch, alert


def test_a_reading_committed_wakes_the_evaluator_instead_of_waiting_for_its_next_poll(
    conn: Conn, database: str, alerts_env: dict[str, str]
) -> None:
    # Polling alone, every 10 minutes here, would leave the second cold room without its alert for
    # that long: the commit that advances channels.last_ingested_at notifies the evaluator.
    first = watched_channel(conn, profile="mango")
    second = watched_channel(conn, profile="mango")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    ingest(conn, first["id"], series(start, [6.0] * 45))
    env = {**os.environ, "AGRITRACE_DATABASE_URL": database, **alerts_env}
    proc = subprocess.Popen([str(AGRITRACE), "alerts", "run", "--interval", "600"], env=env)
    try:
        wait_for(lambda: alerts_of(conn, first["id"]))  # its first pass, at start-up
        ingest(conn, second["id"], series(start, [6.0] * 45))
        (alert,) = wait_for(lambda: alerts_of(conn, second["id"]), timeout=60)
        assert alert["rule"] == "chilling" and alert["status"] == "open"
    finally:
        proc.terminate()
        proc.wait(timeout=15)  # a stop is not kept waiting for the 10-minute poll either


def test_cooperative_acknowledges_and_comments_but_only_a_regulator_resolves_a_critical_alert(
    conn: Conn, client: TestClient
) -> None:
    ch, alert = _one_alert(conn)
    assert alert["severity"] == "critical"
    coop = conn.execute(
        "SELECT c.name FROM cooperatives c JOIN gateways g ON g.cooperative_id = c.id WHERE g.id = %s",
        (ch["gateway_id"],),
    ).fetchone()
    assert coop is not None
    mine = bearer(conn, "cooperative", coop["name"])
    url = f"/api/v1/alerts/{alert['id']}"

    r = client.post(url + "/acknowledge", json={"comment": "door left open, closing it"}, headers=mine)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert r.json()["acknowledged_by"].startswith("cooperative:")
    r = client.post(url + "/comments", json={"comment": "moved pallets to room 2"}, headers=mine)
    assert r.status_code == 201
    # The cooperative cannot silence its own critical alert.
    r = client.post(url + "/resolve", json={"comment": "fruit inspected, no damage"}, headers=mine)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    r = client.post(
        url + "/resolve", json={"comment": "inspected on site"}, headers=bearer(conn, "regulator")
    )
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    history = r.json()["history"]
    assert [h["action"] for h in history] == ["opened", "acknowledged", "commented", "resolved"]
    assert history[-1]["comment"] == "inspected on site"

    # Resolving twice is a conflict (problem+json), and the history cannot be rewritten.
    r = client.post(url + "/resolve", headers=bearer(conn, "admin"))  # the comment is optional
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    with pytest.raises(Exception, match="append-only"):
        conn.execute("UPDATE alert_events SET comment = 'nothing happened'")
    # Evaluated again with nothing new: the resolution stands.
    conn.execute("DELETE FROM coldchain_eval_state")
    evaluator.run_once(conn)
    assert [a["status"] for a in alerts_of(conn, ch["id"])] == ["resolved"]
    # Readings taken after the resolution are still at 6 °C: it is not over, the alert reopens and
    # says who resolved it.
    ingest(conn, ch["id"], [(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1), 6.0)])
    evaluator.run_once(conn)
    (again,) = alerts_of(conn, ch["id"])
    assert again["id"] == alert["id"] and again["status"] == "open"
    assert again["resolve_attempted_by"].startswith("regulator:")
    body = client.get(url, headers=mine).json()
    assert [h["action"] for h in body["history"]][-2:] == ["resolved", "reopened"]
    assert "still out of range after regulator:" in body["history"][-1]["comment"]


def test_a_cooperative_resolves_its_warning_alert_and_it_stays_resolved_once_back_in_range(
    conn: Conn, client: TestClient
) -> None:
    ch = watched_channel(conn)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=90)
    ingest(conn, ch["id"], series(start, [14.0] * 70))  # warm: 1 h above 13 °C, a warning
    evaluator.run_once(conn)
    (alert,) = alerts_of(conn, ch["id"])
    assert (alert["rule"], alert["severity"]) == ("warm", "warning")
    coop = bearer(conn, "cooperative", alert["cooperative"])
    r = client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=coop)
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    ingest(conn, ch["id"], series(start + timedelta(minutes=70), [12.0] * 20))
    evaluator.run_once(conn)
    (done,) = alerts_of(conn, ch["id"])
    assert done["status"] == "resolved" and done["resolve_attempted_by"] is None


def test_cooperatives_see_only_their_own_alerts_and_regulators_filter_all(
    conn: Conn, client: TestClient
) -> None:
    _, mango = _one_alert(conn, "mango")
    _, citrus = _one_alert(conn, "citrus", 3.0)
    other = factories.cooperative(conn)
    theirs = bearer(conn, "cooperative", other["name"])
    assert client.get("/api/v1/alerts", headers=theirs).json() == {"items": [], "next_cursor": None}
    r = client.get(f"/api/v1/alerts/{mango['id']}", headers=theirs)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (
        client.post(f"/api/v1/alerts/{mango['id']}/acknowledge", json={}, headers=theirs).status_code == 404
    )

    reg = bearer(conn, "regulator")

    def ids(query: str) -> list[int]:
        return [a["id"] for a in client.get("/api/v1/alerts" + query, headers=reg).json()["items"]]

    assert sorted(ids("?status=open")) == sorted([mango["id"], citrus["id"]])
    assert ids("?product=citrus") == [citrus["id"]]
    assert ids(f"?cooperative={mango['cooperative']}") == [mango["id"]]
    assert ids("?severity=warning") == []
    assert ids("?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z") == []
    r = client.get("/api/v1/alerts?status=bogus", headers=reg)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/alerts").status_code == 401


def test_regulator_pages_through_alerts_newest_first_and_a_forged_cursor_is_a_problem(
    conn: Conn, client: TestClient
) -> None:
    ids = [_one_alert(conn)[1]["id"] for _ in range(3)]  # same start second: the id breaks the tie
    reg = bearer(conn, "regulator")
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/alerts", params=params, headers=reg).json()
        seen += [a["id"] for a in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    for forged in ("bm9wZQ", encode_cursor(["yesterday", 1]), encode_cursor([1, 1])):
        r = client.get("/api/v1/alerts", params={"cursor": forged}, headers=reg)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def _audit_entries(conn: Conn, table: str, key: object) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT action, actor, before, after FROM audit_log WHERE table_name = %s AND row_key = %s ORDER BY id",
        (table, str(key)),
    ).fetchall()


def test_an_alerts_decisions_are_audited_but_not_the_evaluators_running_numbers(
    conn: Conn, client: TestClient
) -> None:
    ch, alert = _one_alert(conn)
    assert [(e["action"], e["actor"]) for e in _audit_entries(conn, "alerts", alert["id"])] == [
        ("insert", "coldchain:evaluator")
    ]
    # The excursion goes on and gets worse: minutes out and the worst value change, the record does not.
    start = alert["started_at"] + timedelta(minutes=40)
    ingest(conn, ch["id"], series(start, [5.0] * 5))
    evaluator.run_once(conn)
    (now,) = alerts_of(conn, ch["id"])
    assert now["worst_value"] == 5.0 and now["minutes_out"] > alert["minutes_out"]
    assert len(_audit_entries(conn, "alerts", alert["id"])) == 1

    coop = conn.execute(
        "SELECT c.name FROM cooperatives c JOIN gateways g ON g.cooperative_id = c.id WHERE g.id = %s",
        (ch["gateway_id"],),
    ).fetchone()
    assert coop is not None
    mine = bearer(conn, "cooperative", coop["name"])
    client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=mine).raise_for_status()
    last = _audit_entries(conn, "alerts", alert["id"])[-1]
    assert last["actor"].startswith("token:") and ":cooperative:cooperative=" in last["actor"]
    assert (last["before"]["status"], last["after"]["status"]) == ("open", "acknowledged")
    assert "minutes_out" not in last["after"]

    # The owner reads the alert's audit history; another cooperative gets the 404 of a missing one.
    r = client.get(f"/api/v1/audit/alerts/{alert['id']}", headers=mine)
    assert r.status_code == 200 and [e["action"] for e in r.json()["entries"]] == ["insert", "update"]
    theirs = bearer(conn, "cooperative", factories.cooperative(conn)["name"])
    assert client.get(f"/api/v1/audit/alerts/{alert['id']}", headers=theirs).status_code == 404
    assert audit.verify(conn) == []


def test_profile_rule_channel_and_webhook_changes_are_audited_without_the_webhook_secret(
    conn: Conn, client: TestClient
) -> None:
    reg = bearer(conn, "regulator")
    ch = factories.channel(conn)
    r = client.put(
        "/api/v1/coldchain/channel-profiles",
        json={"gateway_id": ch["gateway_id"], "channel": ch["name"], "profile": "citrus"},
        headers=reg,
    )
    assert r.status_code == 200
    mango = next(
        p for p in client.get("/api/v1/coldchain/profiles", headers=reg).json() if p["name"] == "mango"
    )
    client.patch("/api/v1/coldchain/profiles/mango", json={"temp_low": 10.5}, headers=reg).raise_for_status()
    client.patch(
        f"/api/v1/coldchain/rules/{mango['rules'][0]['id']}", json={"delay_s": 900}, headers=reg
    ).raise_for_status()
    r = client.post("/api/v1/coldchain/webhooks", json={"url": "https://ops.example.org/hook"}, headers=reg)
    assert r.status_code == 201

    def updated(table: str, key: object) -> list[str]:
        return [e["actor"].split(":")[2] for e in _audit_entries(conn, table, key) if e["action"] == "update"]

    profile_id = conn.execute("SELECT id FROM coldchain_profiles WHERE name = 'mango'").fetchone()
    assert profile_id is not None
    assert updated("coldchain_profiles", profile_id["id"]) == ["regulator"]
    assert updated("coldchain_rules", mango["rules"][0]["id"]) == ["regulator"]
    (set_profile,) = _audit_entries(conn, "coldchain_channel_profiles", ch["id"])
    assert set_profile["action"] == "insert" and set_profile["actor"].endswith(":regulator")
    (hook,) = _audit_entries(conn, "coldchain_webhooks", r.json()["id"])
    assert hook["after"]["url"] == "https://ops.example.org/hook" and "secret" not in hook["after"]
    assert r.json()["secret"] not in json.dumps(
        conn.execute("SELECT jsonb_agg(after) AS a FROM audit_log").fetchone()
    )
    assert audit.verify(conn) == []


def test_an_old_excursion_sliding_out_of_the_evaluation_window_is_not_alerted_twice(conn: Conn) -> None:
    ch = watched_channel(conn)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=50)
    # Every 5 minutes for 50 hours; 90 minutes at 6 °C from 48.5 h ago, so the 48 h window cuts it.
    values = [6.0 if 18 <= i < 36 else 11.5 for i in range(50 * 12 + 1)]
    points = [(start + timedelta(minutes=5 * i), v) for i, v in enumerate(values)]
    ingest(conn, ch["id"], points[:60])
    evaluator.run_once(conn)
    (alert,) = alerts_of(conn, ch["id"])
    assert alert["status"] == "resolved" and alert["started_at"] == start + timedelta(minutes=90)
    for i in range(60, len(points), 100):
        ingest(conn, ch["id"], points[i : i + 100])
        evaluator.run_once(conn)
    assert [a["id"] for a in alerts_of(conn, ch["id"])] == [alert["id"]]
    history = conn.execute("SELECT action FROM alert_events WHERE alert_id = %s ORDER BY id", (alert["id"],))
    assert [h["action"] for h in history.fetchall()] == ["opened", "resolved"]


def test_no_gateway_can_be_named_alerts_so_none_can_forge_alert_topics(conn: Conn) -> None:
    coop = factories.cooperative(conn)
    with pytest.raises(Exception, match="gateways_id_not_reserved"):
        factories.gateway(conn, cooperative_id=coop["id"], gateway_id="alerts")


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from([5.0, 9.7, 10.2, 10.7, 12.0]), st.integers(min_value=1, max_value=50)),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=1, max_value=60),
    st.randoms(use_true_random=False),
)
def test_property_any_arrival_order_and_chunking_gives_the_in_order_alerts(
    conn: Conn, levels: list[tuple[float, int]], chunk: int, rnd: random.Random
) -> None:
    # Levels held for 1-50 minutes: runs past the 30 minute delay, short dips and flapping all occur.
    gw = factories.gateway(conn)["id"]
    in_order = watched_channel(conn, gateway_id=gw, name="a/temp")
    shuffled = watched_channel(conn, gateway_id=gw, name="b/temp")
    values = [v for v, minutes in levels for _ in range(minutes)]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=len(values))
    points = series(start, values)
    ingest(conn, in_order["id"], points)
    evaluator.run_once(conn)
    noisy = points + rnd.sample(points, k=len(points) // 4)
    rnd.shuffle(noisy)
    _evaluated_in_chunks(conn, shuffled["id"], noisy, size=chunk)
    assert _comparable(conn, shuffled["id"]) == _comparable(conn, in_order["id"])
