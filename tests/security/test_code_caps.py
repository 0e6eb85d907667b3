"""A batch took 208,000 codes in two requests, and its label sheet then ran for 10 minutes at 2.3 GB
(issue 12, "Bounded work"). Codes are capped per request (422) and per batch (409), a label sheet
holds a bounded number of labels (larger batches are printed sheet by sheet), and a sheet whose
client hangs up stops being drawn."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from attacker import Tenant, server_settings
from fastapi.testclient import TestClient

from agritrace import db
from agritrace.api.app import create_app
from agritrace.trace import codes as trace_codes


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app()
    app.state.labels_rate_limiter.burst = (
        1_000  # sheets are limited per token: tests/security/test_rate_limits.py
    )
    with TestClient(app) as c:
        yield c


def codes_of(conn: db.Conn, batch_id: int) -> int:
    row = conn.execute("SELECT count(*) AS n FROM codes WHERE batch_id = %s", (batch_id,)).fetchone()
    assert row is not None
    return int(row["n"])


def test_one_request_cannot_issue_more_than_ten_thousand_codes(
    client: TestClient, conn: db.Conn, tenant: Tenant
) -> None:
    path = f"/api/v1/batches/{tenant.batch_id}/codes"
    for count in (100_000, 10_001):
        r = client.post(path, json={"count": count}, headers=tenant.own)
        assert r.status_code == 422, r.status_code
        assert r.json()["type"].endswith("/invalid-input") and "10000" in r.json()["detail"]
    assert codes_of(conn, tenant.batch_id) == 0
    assert client.post(path, json={"count": 10_000}, headers=tenant.own).status_code == 201


def test_a_batch_cannot_hold_more_codes_than_its_cap(
    client: TestClient, conn: db.Conn, tenant: Tenant
) -> None:
    path = f"/api/v1/batches/{tenant.batch_id}/codes"
    with server_settings(codes_per_request_max="20", codes_per_batch_max="50"):
        assert client.post(path, json={"count": 21}, headers=tenant.own).status_code == 422
        assert [client.post(path, json={"count": 20}, headers=tenant.own).status_code for _ in range(3)] == [
            201,
            201,
            409,
        ]
        r = client.post(path, json={"count": 11}, headers=tenant.own)
        assert r.status_code == 409 and r.json()["type"].endswith("/conflict")
        assert "40 codes" in r.json()["detail"] and "at most 50" in r.json()["detail"]
        assert client.post(path, json={"count": 10}, headers=tenant.own).status_code == 201  # exactly full
        assert client.post(path, json={"count": 1}, headers=tenant.own).status_code == 409
    assert codes_of(conn, tenant.batch_id) == 50


def test_two_issuances_at_once_cannot_both_pass_the_batch_cap(
    live_server: str, conn: db.Conn, tenant: Tenant
) -> None:
    url = f"{live_server}/api/v1/batches/{tenant.batch_id}/codes"
    statuses: list[int] = []
    with server_settings(codes_per_request_max="2000", codes_per_batch_max="3000"):
        go = threading.Barrier(2)

        def issue() -> None:
            go.wait()
            statuses.append(httpx.post(url, json={"count": 2000}, headers=tenant.own, timeout=60).status_code)

        threads = [threading.Thread(target=issue) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(statuses) == [201, 409]
    assert codes_of(conn, tenant.batch_id) == 2000


def test_a_large_batch_prints_sheet_by_sheet(client: TestClient, conn: db.Conn, tenant: Tenant) -> None:
    trace_codes.issue_codes(conn, batch_id=tenant.batch_id, count=60)
    path = f"/api/v1/batches/{tenant.batch_id}/labels.pdf"
    with server_settings(labels_per_sheet_max="48"):
        whole = client.get(path, headers=tenant.own)
        assert whole.status_code == 422 and "?start=0&count=48" in whole.json()["detail"]
        assert client.get(path, params={"count": 49}, headers=tenant.own).status_code == 422
        first = client.get(path, params={"start": 0, "count": 48}, headers=tenant.own)
        assert first.status_code == 200 and first.content.startswith(b"%PDF")
        assert first.headers["x-total-count"] == "60"
        assert re.search(rb"/Count 2\b", first.content)  # 48 labels: two A4 pages
        following = re.fullmatch(r"<(.+)>; rel=\"next\"", first.headers["link"])
        assert following is not None and "start=48" in following[1]
        rest = client.get(following[1], headers=tenant.own)
        assert rest.status_code == 200 and "link" not in rest.headers
        assert re.search(rb"/Count 1\b", rest.content)  # the last 12


def test_a_label_sheet_stops_being_drawn_when_its_client_hangs_up(
    live_server: str, conn: db.Conn, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    trace_codes.issue_codes(conn, batch_id=tenant.batch_id, count=1200)  # ~7 s of drawing
    caplog.set_level(logging.INFO, logger="agritrace.trace.router")
    url = f"{live_server}/api/v1/batches/{tenant.batch_id}/labels.pdf"
    auth = tenant.own["Authorization"]
    # curl gives up after a second, as a phone on a train would.
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "1", "-H", f"Authorization: {auth}", url], check=False
    )
    assert done.returncode == 28  # curl: operation timed out
    for _ in range(200):
        stopped = [r.getMessage() for r in caplog.records if "client hung up" in r.getMessage()]
        if stopped:
            break
        time.sleep(0.05)
    assert stopped, "the sheet was drawn to the end for nobody"
    drawn = re.search(r"after (\d+) of 1200 labels", stopped[0])
    assert drawn is not None and int(drawn[1]) < 1200
