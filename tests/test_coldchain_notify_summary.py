"""Webhooks get every alert change signed and retried; summaries and profiles through the API and CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import factories
import httpx
import pytest
from fastapi.testclient import TestClient
from test_coldchain_alerts import bearer, ingest, series, watched_channel

from agritrace.api.app import create_app
from agritrace.coldchain import evaluator, notify, summary, webhooks
from agritrace.db import Conn
from agritrace.settings import get_settings

REPO = Path(__file__).resolve().parents[1]


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that fails its first `failures` requests with 503."""

    failures = 0
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        server.calls += 1
        if server.calls <= server.failures:
            self.send_response(503)
        else:
            server.received.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)  # port 0: a free port
    server.calls, server.failures, server.received = 0, 2, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_webhooks() -> Iterator[None]:
    """The receiver is a plain-http server on this machine, which webhooks may reach only when the
    operator allows private targets (AGRITRACE_WEBHOOK_ALLOW_PRIVATE_TARGETS)."""
    os.environ["AGRITRACE_WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "true"
    get_settings.cache_clear()
    try:
        yield
    finally:
        del os.environ["AGRITRACE_WEBHOOK_ALLOW_PRIVATE_TARGETS"]
        get_settings.cache_clear()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def test_webhook_receives_every_alert_change_signed_after_retries(
    conn: Conn, client: TestClient, receiver: Any, private_webhooks: None
) -> None:
    reg = bearer(conn, "regulator")
    r = client.post(
        "/api/v1/coldchain/webhooks",
        json={"url": f"http://127.0.0.1:{receiver.server_port}/hook"},
        headers=reg,
    )
    assert r.status_code == 201
    secret = r.json()["secret"]
    ch = watched_channel(conn)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    ingest(conn, ch["id"], series(start, [6.0] * 40))
    evaluator.run_once(conn)

    with httpx.Client(timeout=5) as http:
        assert notify.deliver_pending(conn, http, backoff=0.01) == 1
    assert receiver.calls == 3  # two 503s, then delivered
    ((headers, body),) = receiver.received
    expected = hmac.new(
        secret.encode(), headers["X-AgriTrace-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-AgriTrace-Signature"] == "sha256=" + expected
    doc = json.loads(body)
    assert (doc["status"], doc["gateway_id"], doc["channel"], doc["event"]["action"]) == (
        "open",
        ch["gateway_id"],
        "coldroom/temp",
        "opened",
    )
    delivery = conn.execute(
        "SELECT attempts, status_code, error FROM coldchain_webhook_deliveries"
    ).fetchone()
    assert delivery == {"attempts": 3, "status_code": 204, "error": None}


def test_webhook_that_keeps_failing_is_given_up_and_recorded(
    conn: Conn, receiver: Any, private_webhooks: None
) -> None:
    receiver.failures = 100
    webhooks.add_webhook(conn, url=f"http://127.0.0.1:{receiver.server_port}/hook", secret="s3cret")
    ch = watched_channel(conn)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    ingest(conn, ch["id"], series(start, [6.0] * 40))
    evaluator.run_once(conn)
    with httpx.Client(timeout=5) as http:
        notify.deliver_pending(conn, http, backoff=0.01)
        assert notify.deliver_pending(conn, http, backoff=0.01) == 0  # the outbox moved on
    delivery = conn.execute(
        "SELECT attempts, status_code, error FROM coldchain_webhook_deliveries"
    ).fetchone()
    assert delivery == {"attempts": 4, "status_code": 503, "error": "HTTP 503"}


def test_summary_of_a_mango_room_gives_band_times_excursions_and_mkt(conn: Conn, client: TestClient) -> None:
    ch = watched_channel(conn)
    start = datetime(2026, 7, 1, tzinfo=UTC)
    # An hour at 12 °C (in the 10-13 band), an hour at 6 °C, then another hour at 12 °C.
    values = [12.0] * 60 + [6.0] * 60 + [12.0] * 60
    factories.readings(conn, channel_id=ch["id"], points=series(start, values))
    s = summary.summarize(conn, channel_id=ch["id"], start=start, end=start + timedelta(hours=3))
    assert (s["readings"], s["min"], s["max"], s["mean"]) == (180, 6.0, 12.0, 10.0)
    assert s["band"] == {"low": 10.0, "high": 13.0}
    # Each reading stands a minute, the last one until the range's end.
    assert (s["minutes_in_band"], s["minutes_out_of_band"], s["minutes_no_data"], s["excursions"]) == (
        120,
        60,
        0,
        1,
    )
    assert s["verdict"] == "excursion" and s["worst"]["value"] == 6.0
    mkt = 10000 / -math.log(sum(math.exp(-10000 / (v + 273.15)) for v in values) / len(values)) - 273.15
    assert s["mkt"] == pytest.approx(mkt, abs=1e-6)
    assert s["mkt"] > s["mean"]  # MKT weighs warm spells more
    assert [b["minutes_out_of_band"] for b in s["buckets"]] == [0, 60, 0]

    reg = bearer(conn, "regulator")
    url = f"/api/v1/coldchain/channels/{ch['id']}/summary"
    r = client.get(
        url, params={"start": start.isoformat(), "end": (start + timedelta(hours=3)).isoformat()}, headers=reg
    )
    assert r.status_code == 200 and r.json()["excursions"] == 1
    bad = client.get(url, params={"start": start.isoformat(), "end": start.isoformat()}, headers=reg)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    other = bearer(conn, "cooperative", factories.cooperative(conn)["name"])
    params = {"start": start.isoformat(), "end": (start + timedelta(hours=3)).isoformat()}
    assert client.get(url, params=params, headers=other).status_code == 404


def test_regulator_edits_rules_and_bad_rules_are_problems_not_errors(conn: Conn, client: TestClient) -> None:
    reg = bearer(conn, "regulator")
    profiles = client.get("/api/v1/coldchain/profiles", headers=reg).json()
    mango = next(p for p in profiles if p["name"] == "mango")
    assert (mango["temp_low"], mango["temp_high"], mango["rh_low"], mango["rh_high"]) == (10, 13, 85, 95)
    chilling = next(r for r in mango["rules"] if r["name"] == "chilling")
    assert (
        client.patch(
            f"/api/v1/coldchain/rules/{chilling['id']}", json={"delay_s": 900}, headers=reg
        ).status_code
        == 204
    )
    r = client.post(
        "/api/v1/coldchain/profiles/mango/rules",
        json={
            "name": "cold-sum",
            "metric": "temperature",
            "direction": "below",
            "threshold": 9,
            "delay_s": 600,
            "mode": "cumulative",
            "severity": "warning",
        },
        headers=reg,
    )  # cumulative without a window
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = client.post(
        "/api/v1/coldchain/profiles",
        json={"name": "lychee", "temp_low": 1, "temp_high": 5, "rh_low": 90, "rh_high": 95},
        headers=reg,
    )
    assert r.status_code == 201 and r.json()["rules"] == []
    assert client.post("/api/v1/coldchain/profiles", json={"name": "lychee"}, headers=reg).status_code == 409
    coop = bearer(conn, "cooperative", factories.cooperative(conn)["name"])
    assert (
        client.patch("/api/v1/coldchain/profiles/mango", json={"temp_low": 2}, headers=coop).status_code
        == 403
    )
    assert (
        client.patch("/api/v1/coldchain/profiles/mango", json={"temp_low": 20}, headers=reg).status_code
        == 422
    )


def test_operator_sets_a_channels_profile_from_the_cli(conn: Conn, database: str) -> None:
    ch = factories.channel(conn)
    cmd = [
        str(REPO / ".venv/bin/agritrace"),
        "channels",
        "profile",
        "--gateway",
        ch["gateway_id"],
        "--channel",
        ch["name"],
        "--profile",
        "citrus",
        "--json",
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        env={"AGRITRACE_DATABASE_URL": database, "PATH": "/usr/bin:/bin", "AGRITRACE_ENV_FILE": "/dev/null"},
    )
    assert json.loads(out.stdout)["profile"] == "citrus"
    row = conn.execute(
        "SELECT p.name FROM coldchain_monitored_channels m JOIN coldchain_profiles p ON p.id = m.profile_id"
        " WHERE m.channel_id = %s",
        (ch["id"],),
    ).fetchone()
    assert row == {"name": "citrus"}
    cmd[cmd.index("citrus")] = "banana"
    bad = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        env={"AGRITRACE_DATABASE_URL": database, "PATH": "/usr/bin:/bin", "AGRITRACE_ENV_FILE": "/dev/null"},
    )
    assert bad.returncode == 1 and "no profile named 'banana'" in bad.stderr


def test_a_batchs_cold_chain_combines_the_rooms_and_trucks_it_was_in(conn: Conn) -> None:
    gw = factories.gateway(conn)["id"]
    room = watched_channel(conn, gateway_id=gw, name="room/temp")
    truck = watched_channel(conn, gateway_id=gw, name="truck/temp")
    start = datetime(2026, 7, 1, tzinfo=UTC)
    room_values, truck_values = [12.0] * 120, [11.0] * 30 + [7.0] * 30
    factories.readings(conn, channel_id=room["id"], points=series(start, room_values))
    factories.readings(conn, channel_id=truck["id"], points=series(start + timedelta(hours=2), truck_values))
    s = summary.summarize_windows(
        conn,
        windows=[
            (room["id"], start, start + timedelta(hours=2)),
            (truck["id"], start + timedelta(hours=2), start + timedelta(hours=3)),
        ],
        profile_id=None,
        low=10.0,
        high=13.0,
    )
    # Every reading stands one minute (the last of each room until its custody ends): equal weights.
    values = room_values + truck_values
    mkt = 10000 / -math.log(sum(math.exp(-10000 / (v + 273.15)) for v in values) / len(values)) - 273.15
    assert s.mkt == pytest.approx(mkt, abs=1e-6)
    assert s.mean == pytest.approx(sum(values) / len(values))
    assert (s.min, s.max, s.readings) == (7.0, 12.0, 180)
    # 30 min at 7 °C is within the 30-minute tolerance: kept, but only just.
    assert s.excursions == 1 and s.minutes_out_of_band == 30 and s.verdict == "ok"
    assert s.worst is not None and s.worst.place == f"{gw} truck/temp"
