"""QR image routes were not rate-limited, label sheets (seconds of CPU each) not at all, and a client
could try tokens as fast as it liked (issue 12, "Bounded work"). Every route the OpenAPI document
declares public now shares the per-address limit, label sheets have a per-token limit, and an address
whose tokens keep failing gets 429 for its failing attempts, while valid tokens from it still work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from urllib.parse import urlsplit

import pytest
from attacker import Tenant, server_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agritrace import db
from agritrace.api.app import create_app
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app() -> Iterator[FastAPI]:
    with server_settings(public_rate_burst="5", public_rate_per_minute="1"):
        app = create_app()
    with TestClient(app):  # the lifespan: pool and broker session
        yield app


def assert_limited(response: object) -> None:
    r = response  # an httpx.Response
    assert r.status_code == 429, (r.status_code, r.text)  # type: ignore[attr-defined]
    assert r.json()["type"].endswith("/rate-limited")  # type: ignore[attr-defined]
    assert int(r.headers["retry-after"]) >= 1  # type: ignore[attr-defined]


def test_every_public_route_is_rate_limited_per_client(app: FastAPI, conn: db.Conn, tenant: Tenant) -> None:
    batch = trace_service.create_batch(
        conn,
        product="mango",
        cooperative_id=tenant.cooperative_id,
        gtin="06901234567892",
        harvest_date=date(2026, 7, 1),
    )
    issued = trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)[0]
    code = issued["code"]
    urls = {
        "/healthz": "/healthz",
        "/t/{code}": f"/t/{code}",
        "/api/v1/trace/{code}": f"/api/v1/trace/{code}",
        "/01/{gtin}/10/{lot}/21/{serial}": urlsplit(issued["url"]).path,
        "/api/v1/codes/{code}/qr.png": f"/api/v1/codes/{code}/qr.png",
        "/api/v1/codes/{code}/qr.svg": f"/api/v1/codes/{code}/qr.svg",
    }
    with TestClient(app) as c:
        spec = c.get("/openapi.json").json()
    # What the API tells its clients is public (no token), whatever the server does with it.
    public = sorted(
        path for path, ops in spec["paths"].items() for op in ops.values() if op.get("security") == []
    )
    assert set(public) == set(urls), "a new public route: add a URL for it here"
    for i, template in enumerate(public):
        with TestClient(app, client=(f"198.51.100.{i + 1}", 4000)) as one:
            served = [one.get(urls[template]).status_code for _ in range(5)]
            assert 429 not in served and all(s < 500 for s in served), (template, served)
            assert_limited(one.get(urls[template]))


def test_label_sheets_are_limited_per_token(app: FastAPI, conn: db.Conn, tenant: Tenant) -> None:
    trace_codes.issue_codes(conn, batch_id=tenant.batch_id, count=2)
    path = f"/api/v1/batches/{tenant.batch_id}/labels.pdf"
    burst = get_settings().labels_rate_burst
    with TestClient(app) as c:
        assert [c.get(path, headers=tenant.own).status_code for _ in range(burst)] == [200] * burst
        assert_limited(c.get(path, headers=tenant.own))
        # Another token (from the same address) has its own budget.
        assert c.get(path, headers=tenant.admin).status_code == 200


def test_an_address_whose_tokens_keep_failing_is_slowed_but_valid_tokens_still_work(
    app: FastAPI, tenant: Tenant
) -> None:
    clock = FakeClock()
    app.state.auth_failure_limiter.clock = clock
    settings = get_settings()
    burst, per_minute = settings.auth_failures_burst, settings.auth_failures_per_minute
    forged = {"Authorization": "Bearer agt_" + "A" * 43}
    with (
        TestClient(app, client=("203.0.113.5", 5000)) as attacker,
        TestClient(app, client=("203.0.113.6", 5000)) as neighbour,
    ):
        assert [attacker.get("/api/v1/batches", headers=forged).status_code for _ in range(burst)] == [
            401
        ] * burst
        assert_limited(attacker.get("/api/v1/batches", headers=forged))
        assert_limited(attacker.get("/api/v1/batches", headers={"Authorization": "Bearer nonsense"}))
        # The same address with a valid token (someone else behind the same NAT) is served...
        assert attacker.get("/api/v1/batches", headers=tenant.own).status_code == 200
        # ... a request without a token guesses nothing and is a plain 401 ...
        assert attacker.get("/api/v1/batches").status_code == 401
        # ... and another address is not affected.
        assert neighbour.get("/api/v1/batches", headers=forged).status_code == 401
        # Once the bucket has refilled one attempt's worth, a failing attempt is a 401 again.
        clock.now += 60 / per_minute
        assert attacker.get("/api/v1/batches", headers=forged).status_code == 401
        assert_limited(attacker.get("/api/v1/batches", headers=forged))
