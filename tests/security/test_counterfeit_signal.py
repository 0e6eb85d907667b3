"""The "possibly counterfeit" warning (issue 12, item 5): 52 anonymous GETs from one network flagged a
genuine code for every later buyer, and no one could clear it. The signal now counts distinct client
networks only, ignores staff, link-preview bots and the operator's own networks, and a reviewer can
clear it (audited). Requests go through the real app (the consumer page route) from given addresses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.db import Conn
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service

PHONE = "Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 MicroMessenger/8.0.50"


@pytest.fixture
def app() -> Iterator[Any]:
    application = create_app()
    application.state.public_rate_limiter.burst = 1_000_000  # the rate limit has its own tests
    yield application


def scan(app: Any, code: str, ip: str, *, ua: str = PHONE, headers: dict[str, str] | None = None) -> int:
    with TestClient(app, client=(ip, 40000)) as c:
        return int(c.get(f"/t/{code}", headers={"user-agent": ua, **(headers or {})}).status_code)


def flagged(conn: Conn, code: str) -> bool:
    row = conn.execute("SELECT flagged_at FROM codes WHERE serial = %s", (code,)).fetchone()
    assert row is not None
    return row["flagged_at"] is not None


def test_52_requests_from_one_network_flag_nothing(app: Any, conn: Conn, mango_lot: dict[str, Any]) -> None:
    code = mango_lot["code"]
    for i in range(52):
        assert scan(app, code, f"198.51.100.{i % 250 + 1}") == 200  # one /24
    assert not flagged(conn, code)
    with TestClient(app, client=("203.0.113.9", 1)) as c:
        assert "possibly_counterfeit" not in c.get(f"/api/v1/trace/{code}").json()["warnings"]


def test_many_networks_flag_the_code(app: Any, conn: Conn, mango_lot: dict[str, Any]) -> None:
    code = mango_lot["code"]
    limit = get_settings().counterfeit_networks
    for i in range(limit):
        scan(app, code, f"10.{i}.7.1")
    assert not flagged(conn, code)  # exactly at the threshold: not yet
    scan(app, code, f"10.{limit}.7.1")
    assert flagged(conn, code)


def test_staff_bots_and_the_operators_networks_do_not_count(
    app: Any, conn: Conn, mango_lot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = mango_lot["code"]
    limit = get_settings().counterfeit_networks
    staff = {"Authorization": f"Bearer {tokens.create(conn, role='admin')}"}
    conn.commit()
    for i in range(limit + 3):
        scan(app, code, f"10.{i}.8.1", headers=staff)
        scan(app, code, f"10.{i}.9.1", ua="facebookexternalhit/1.1")
        scan(app, code, f"10.{i}.10.1", ua="WhatsApp/2.23.20.0")
        scan(app, code, f"10.{i}.11.1", ua="Mozilla/5.0 (compatible; Googlebot/2.1)")
    assert not flagged(conn, code)
    # The operator's label-check networks, from settings.
    monkeypatch.setenv("AGRITRACE_COUNTERFEIT_IGNORE_NETWORKS", '["172.16.0.0/12"]')
    get_settings.cache_clear()
    try:
        for i in range(limit + 3):
            scan(app, code, f"172.16.{i}.1")
        assert not flagged(conn, code)
    finally:
        monkeypatch.delenv("AGRITRACE_COUNTERFEIT_IGNORE_NETWORKS")
        get_settings.cache_clear()
    kinds = {
        r["ua_family"] for r in conn.execute("SELECT ua_family FROM code_scans WHERE serial = %s", (code,))
    }
    assert kinds == {"staff", "bot", "operator"}


def test_a_reviewer_clears_a_flag_and_only_later_scans_count(
    app: Any, conn: Conn, mango_lot: dict[str, Any], regulator: dict[str, str]
) -> None:
    code = mango_lot["code"]
    limit = get_settings().counterfeit_networks
    for i in range(limit + 1):
        scan(app, code, f"10.{i}.12.1")
    assert flagged(conn, code)
    trace_service.ensure_cooperative(conn, name="别的合作社")
    other = {"Authorization": f"Bearer {tokens.create(conn, role='cooperative', cooperative='别的合作社')}"}
    conn.commit()
    with TestClient(app) as c:
        # Another cooperative cannot even see the code.
        assert (
            c.post(f"/api/v1/codes/{code}/flag/clear", json={"note": "x"}, headers=other).status_code == 404
        )
        assert c.post(f"/api/v1/codes/{code}/flag/clear", json={}, headers=regulator).status_code == 422
        resp = c.post(
            f"/api/v1/codes/{code}/flag/clear", json={"note": "展销会扫码，标签核验为真"}, headers=regulator
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["flagged_at"] is None
        assert "possibly_counterfeit" not in c.get(f"/api/v1/trace/{code}").json()["warnings"]
    # The same networks scanning again do not re-flag it at once: only scans since the review count.
    for i in range(limit):
        scan(app, code, f"10.{i}.12.1")
    assert not flagged(conn, code)
    scan(app, code, f"10.{limit}.12.1")
    assert flagged(conn, code)
    # The review is in the audit trail with the regulator's token as the actor.
    entry = conn.execute(
        """SELECT actor, after ->> 'flag_review' AS note FROM audit_log
            WHERE table_name = 'codes' AND row_key = %s AND after ->> 'flag_review' IS NOT NULL
            ORDER BY id LIMIT 1""",
        (code,),
    ).fetchone()
    assert entry is not None and entry["note"] == "展销会扫码，标签核验为真"
    assert entry["actor"].startswith("token:") and entry["actor"].endswith(":regulator")


def test_the_flag_reason_names_networks_not_scans() -> None:
    limit = get_settings().counterfeit_networks
    assert trace_codes.flag_reason(places=limit) is None
    reason = trace_codes.flag_reason(places=limit + 1)
    assert reason is not None and "networks" in reason
