"""The public endpoints face the internet: rate limits, cache and security headers, input limits, and
errors that never leak internals. The public routes live on other branches, so a stand-in route is
registered on the test app under each public prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from agritrace.api.app import create_app
from agritrace.api.deps import ConnDep
from agritrace.api.protection import TokenBucket
from agritrace.db import Conn
from agritrace.settings import get_settings


class FakeClock:
    """Time that the test moves by hand, so recovery is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app_with_public_routes() -> FastAPI:
    app = create_app()
    existing = len(app.router.routes)

    @app.get("/t/{code}")
    def consumer_page(code: str) -> dict[str, str]:
        return {"code": code}

    @app.get("/api/v1/trace/{code}")
    def trace_json(code: str) -> dict[str, str]:
        return {"code": code}

    @app.post("/api/v1/echo")
    def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @app.post("/api/v1/duplicate-cooperative")
    def duplicate(conn: ConnDep) -> None:
        conn.execute("INSERT INTO cooperatives (name) VALUES ('dup'), ('dup')")

    @app.post("/api/v1/overlong-cooperative")
    def overlong(conn: ConnDep) -> None:
        conn.execute("INSERT INTO cooperatives (name) VALUES (repeat('x', 500))")

    @app.get("/api/v1/boom")
    def boom(conn: ConnDep) -> None:
        conn.execute("SELECT * FROM no_such_table_secret_name")

    # Ahead of the real routes, so `/t/{code}` here answers 200 without a batch behind it.
    added = app.router.routes[existing:]
    del app.router.routes[existing:]
    app.router.routes[0:0] = added
    return app


@pytest.fixture
def app() -> FastAPI:
    return app_with_public_routes()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_public_pages_return_429_past_the_limit_and_recover_after_it(
    app: FastAPI, client: TestClient
) -> None:
    clock = FakeClock()
    limiter: TokenBucket = app.state.public_rate_limiter
    limiter.clock = clock
    burst = get_settings().public_rate_burst
    statuses = [client.get(f"/t/code{i}").status_code for i in range(burst)]
    assert statuses == [200] * burst
    limited = client.get("/api/v1/trace/code")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"].endswith("/rate-limited")
    retry = int(limited.headers["retry-after"])
    assert retry >= 1
    clock.now += retry
    assert client.get("/t/code").status_code == 200


def test_one_clients_flood_does_not_limit_another_client(app: FastAPI) -> None:
    limiter: TokenBucket = app.state.public_rate_limiter
    limiter.clock = FakeClock()
    with (
        TestClient(app, client=("198.51.100.7", 1234)) as flood,
        TestClient(app, client=("203.0.113.9", 4321)) as other,
    ):
        for _ in range(get_settings().public_rate_burst + 1):
            last = flood.get("/t/x")
        assert last.status_code == 429
        assert other.get("/t/x").status_code == 200


def test_authenticated_api_is_not_rate_limited_by_the_public_limiter(
    app: FastAPI, client: TestClient
) -> None:
    app.state.public_rate_limiter.clock = FakeClock()
    statuses = {client.get("/api/v1/tokens").status_code for _ in range(get_settings().public_rate_burst + 5)}
    assert statuses == {401}


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for resp in (
        client.get("/healthz"),
        client.get("/nowhere"),
        client.get("/t/abc"),
        client.get("/api/v1/tokens"),
    ):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["x-frame-options"] == "DENY"
        csp = resp.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert "http" not in csp  # no third-party source


def test_public_pages_may_be_cached_and_private_answers_may_not(client: TestClient) -> None:
    assert client.get("/t/abc").headers["cache-control"].startswith("public, max-age=")
    assert client.get("/api/v1/tokens").headers["cache-control"] == "no-store"
    assert client.get("/healthz").headers["cache-control"] == "no-store"


def test_a_body_over_the_limit_is_a_413_problem(client: TestClient) -> None:
    big = "x" * (get_settings().max_body_bytes + 1)
    resp = client.post("/api/v1/echo", json={"a": big})
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"].endswith("/too-large")


def test_a_streamed_body_over_the_limit_is_a_413_too(client: TestClient) -> None:
    chunk = b"x" * 65536
    n = get_settings().max_body_bytes // len(chunk) + 2

    def stream() -> Iterator[bytes]:
        for _ in range(n):
            yield chunk

    resp = client.post("/api/v1/echo", content=stream(), headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_a_body_within_the_limit_reaches_the_route(client: TestClient) -> None:
    assert client.post("/api/v1/echo", json={"a": "b"}).json() == {"a": "b"}


def test_database_constraint_violations_are_409_or_422_without_sql(client: TestClient, conn: Conn) -> None:
    dup = client.post("/api/v1/duplicate-cooperative")
    assert dup.status_code == 409 and dup.json()["type"].endswith("/conflict")
    long = client.post("/api/v1/overlong-cooperative")
    assert long.status_code == 422 and long.json()["type"].endswith("/invalid-input")
    for resp in (dup, long):
        assert "INSERT" not in resp.text and "cooperatives" not in resp.text


def test_an_unexpected_error_is_a_500_problem_without_trace_or_sql(client: TestClient) -> None:
    resp = client.get("/api/v1/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"].endswith("/internal")
    assert "no_such_table" not in resp.text and "Traceback" not in resp.text and "SELECT" not in resp.text
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"


@given(
    rate=st.floats(min_value=0.01, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=10), max_size=60),
)
def test_token_bucket_never_admits_more_than_burst_plus_refill(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=rate, burst=burst, clock=clock)
    admitted = 0
    start = clock.now
    for gap in gaps:
        clock.now += gap
        wait = bucket.take("c")
        assert wait >= 0
        admitted += wait == 0
    assert admitted <= burst + (clock.now - start) * rate + 1e-6


@given(clients=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=200))
def test_token_bucket_memory_is_bounded(clients: list[str]) -> None:
    bucket = TokenBucket(rate=1, burst=1, max_clients=10, clock=FakeClock())
    for c in clients:
        bucket.take(c)
    assert len(bucket._buckets) <= 10
