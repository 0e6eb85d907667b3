"""An admin hands out, lists and revokes API tokens over HTTP and from the CLI; pagination is stable."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from agritrace.api import pagination, tokens
from agritrace.api.app import create_app
from agritrace.db import Conn
from agritrace.errors import InvalidInput

REPO = Path(__file__).resolve().parents[1]


def agritrace_cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".venv/bin/agritrace"), *args],
        capture_output=True,
        text=True,
        env={
            "AGRITRACE_DATABASE_URL": database,
            "AGRITRACE_ENV_FILE": str(REPO / ".local/agritrace.env"),
            "PATH": "/usr/bin:/bin",
        },
        check=False,
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def admin(conn: Conn) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create(conn, role='admin')}"}


def test_admin_creates_a_cooperative_token_that_is_shown_once(
    client: TestClient, conn: Conn, admin: dict[str, str]
) -> None:
    conn.execute("INSERT INTO cooperatives (name) VALUES ('百色芒果合作社')")
    resp = client.post(
        "/api/v1/tokens",
        json={"role": "cooperative", "cooperative": "百色芒果合作社", "description": "packing house"},
        headers=admin,
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["token"].startswith(created["prefix"]) and created["cooperative_id"] is not None
    listed = client.get("/api/v1/tokens", headers=admin).json()["items"]
    assert created["id"] in [t["id"] for t in listed]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    me = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {created['token']}"})
    assert me.status_code == 403  # a cooperative token works, but may not manage tokens


def test_a_revoked_token_stops_working_at_once(client: TestClient, conn: Conn, admin: dict[str, str]) -> None:
    victim = tokens.issue(conn, role="regulator")
    auth = {"Authorization": f"Bearer {victim['token']}"}
    assert client.get("/api/v1/audit/api_tokens/1", headers=auth).status_code in (200, 404)
    assert client.delete(f"/api/v1/tokens/{victim['id']}", headers=admin).status_code == 204
    assert client.delete(f"/api/v1/tokens/{victim['id']}", headers=admin).status_code == 204  # idempotent
    resp = client.get("/api/v1/audit/api_tokens/1", headers=auth)
    assert resp.status_code == 401 and resp.json()["type"].endswith("/unauthorized")
    assert client.delete("/api/v1/tokens/999999", headers=admin).status_code == 404


def test_an_expired_token_is_refused(client: TestClient, conn: Conn) -> None:
    old = tokens.create(conn, role="admin", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    assert client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {old}"}).status_code == 401


def test_bad_token_requests_are_422_problems(client: TestClient, admin: dict[str, str]) -> None:
    bad = [
        {"role": "root"},
        {"role": "cooperative"},
        {"role": "admin", "cooperative": "x"},
        {"role": "admin", "description": "x" * 201},
        {"role": "admin", "expires_at": "2020-01-01T00:00:00Z"},
        {"role": "admin", "extra": 1},
    ]
    for body in bad:
        resp = client.post("/api/v1/tokens", json=body, headers=admin)
        assert resp.status_code == 422, body
        assert resp.headers["content-type"] == "application/problem+json"
    unknown = client.post(
        "/api/v1/tokens", json={"role": "cooperative", "cooperative": "nobody"}, headers=admin
    )
    assert unknown.status_code == 404


def test_token_list_pages_are_stable_while_tokens_are_added(
    client: TestClient, conn: Conn, admin: dict[str, str]
) -> None:
    for _ in range(6):
        tokens.create(conn, role="regulator")
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/tokens", params=params, headers=admin).json()
        seen += [t["id"] for t in body["items"]]
        tokens.create(conn, role="regulator")  # arrives while paging: lands after, never shifts a page
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen)) and len(seen) >= 7


def test_page_size_and_cursor_are_bounded(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/api/v1/tokens", params={"limit": 201}, headers=admin).status_code == 422
    assert client.get("/api/v1/tokens", params={"limit": 0}, headers=admin).status_code == 422
    assert client.get("/api/v1/tokens", params={"cursor": "not-a-cursor"}, headers=admin).status_code == 422
    assert client.get("/api/v1/tokens", params={"cursor": "x" * 600}, headers=admin).status_code == 422
    foreign = pagination.encode_cursor(["abc"])  # well-formed, but not a token list's key
    assert client.get("/api/v1/tokens", params={"cursor": foreign}, headers=admin).status_code == 422
    huge = pagination.encode_cursor([2**70])
    assert client.get("/api/v1/tokens", params={"cursor": huge}, headers=admin).status_code == 422


def test_cli_lists_and_revokes_tokens_and_sets_expiry(database: str, conn: Conn) -> None:
    out = agritrace_cli(database, "token", "create", "--role", "regulator", "--expires", "30d")
    assert out.returncode == 0 and out.stdout.count("\n") == 1
    listed = json.loads(agritrace_cli(database, "token", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["role"] == "regulator" and listed[0]["expires_at"]
    assert "token_hash" not in listed[0]
    assert agritrace_cli(database, "token", "revoke", str(listed[0]["id"])).returncode == 0
    assert json.loads(agritrace_cli(database, "token", "list", "--json").stdout) == []
    assert len(json.loads(agritrace_cli(database, "token", "list", "--all", "--json").stdout)) == 1
    bad = agritrace_cli(database, "token", "create", "--role", "admin", "--expires", "soon")
    assert bad.returncode == 1 and "error:" in bad.stderr
    assert agritrace_cli(database, "token", "revoke", "424242").returncode == 1


@given(st.integers(min_value=1, max_value=99999), st.sampled_from("mhdw"))
def test_expiry_durations_land_in_the_future(n: int, unit: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert tokens.parse_expiry(f"{n}{unit}", now=now) > now


@given(st.text(max_size=30))
def test_expiry_parser_accepts_or_refuses_cleanly(text: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        when = tokens.parse_expiry(text, now=now)
    except InvalidInput:
        return
    assert when > now and when.tzinfo is not None


@given(st.lists(st.one_of(st.integers(), st.text(max_size=20)), min_size=1, max_size=3))
def test_cursors_round_trip(key: list[int | str]) -> None:
    key = [k if isinstance(k, str) else k % 2**62 for k in key]
    types = tuple(type(k) for k in key)
    assert pagination.decode_cursor(pagination.encode_cursor(key), types=types) == key


@given(st.text(max_size=100))
def test_garbage_cursors_are_refused_cleanly(cursor: str) -> None:
    with contextlib.suppress(InvalidInput):
        key = pagination.decode_cursor(cursor)
        assert key is None or (len(key) == 1 and isinstance(key[0], int))
