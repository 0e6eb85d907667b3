"""The consumer page: what a shopper sees after scanning a box, in a real browser and as JSON."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import page as trace_page
from agritrace.trace import service as trace_service

from .conftest import cold_room, phone_browser


@pytest.mark.slow
def test_phone_browser_renders_product_certificates_chart_and_verdict(
    live_server: str, mango_lot: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    url = live_server + urlsplit(mango_lot["url"]).path
    shot = artifacts / "trace-page-phone.png"
    # What the browser built (after parsing): the DOM carries the product, certificates, chart and verdict.
    dom = phone_browser(url, shot, tmp_path / "profile")
    assert "芒果" in dom and "台农一号" in dom
    assert "农产品地理标志" in dom and "绿色食品" in dom and "承诺达标合格证" in dom
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in dom and "<polyline" in dom
    assert "全程冷链合格" in dom


@pytest.mark.slow
def test_phone_browser_shows_a_recall_in_english(
    live_server: str, conn: Conn, mango_lot: dict[str, Any], artifacts: Path, tmp_path: Path
) -> None:
    trace_service.recall_batch(
        conn, batch_id=mango_lot["parent"]["id"], reason="pesticide residue", recalled_by="regulator"
    )
    url = f"{live_server}/t/{mango_lot['code']}?lang=en"
    shot = artifacts / "trace-page-phone-recalled-en.png"
    common = [
        "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=390,844",
        "--hide-scrollbars",
    ]
    subprocess.run([*common, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=90)
    dom = subprocess.run(
        [*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=90
    ).stdout
    assert "RECALLED" in dom and "pesticide residue" in dom and "Mango" in dom


def test_page_shows_origin_cooperative_harvest_certificates_journey_and_scan_count(
    client: TestClient, mango_lot: dict[str, Any]
) -> None:
    path = urlsplit(mango_lot["url"]).path
    first = client.get(path)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/html")
    html = first.text
    assert '<html lang="zh-CN">' in html
    for text in (
        "右江区阳圩镇 3 号果园",
        "百色芒果",
        "2026-07-10",
        "有效",
        "采收",
        "农药残留",
        "合格",
        "已被查询 1 次",
    ):
        assert text in html, text
    assert "已被查询 2 次" in client.get(path).text
    english = client.get(path, params={"lang": "en"}).text
    assert '<html lang="en">' in english and "Mango" in english and "Cold chain kept" in english


def test_json_trace_is_the_same_view_as_the_page(client: TestClient, mango_lot: dict[str, Any]) -> None:
    resp = client.get(f"/api/v1/trace/{mango_lot['code']}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["batch"]["lot"] == mango_lot["child"]["lot"]
    assert body["batch"]["sources"] == [mango_lot["parent"]["lot"]]
    assert {c["kind"]: c["status"] for c in body["certificates"]} == {
        "geographical_indication": "valid",
        "green_food": "valid",
    }
    assert body["compliance_certificate"]["contact"] == "0776-2800000"
    assert body["cold_chain"]["verdict"] == "ok"
    assert body["cold_chain"]["readings"] > 500
    assert body["recalled"] is False and body["warnings"] == []
    assert body["scans"]["count"] == 1


def test_recalled_parent_batch_shows_on_the_child_lots_page(
    client: TestClient, regulator: dict[str, str], mango_lot: dict[str, Any]
) -> None:
    resp = client.post(
        f"/api/v1/batches/{mango_lot['parent']['id']}/recall",
        json={"reason": "农药残留超标"},
        headers=regulator,
    )
    assert resp.status_code == 201, resp.text
    assert [b["lot"] for b in resp.json()["affected_batches"]] == [mango_lot["child"]["lot"]]
    assert resp.json()["affected_codes"] == 1
    page = client.get(urlsplit(mango_lot["url"]).path)
    assert 'id="recall"' in page.text
    assert "该产品已被召回" in page.text and "农药残留超标" in page.text
    body = client.get(f"/api/v1/trace/{mango_lot['code']}").json()
    assert body["recalled"] is True
    assert body["journey"][-1]["biz_step"] == "holding" and body["journey"][-1]["disposition"] == "recalled"
    assert body["recalls"][0]["lot"] == mango_lot["parent"]["lot"] and body["recalls"][0]["own"] is False


def test_a_lot_packed_after_the_recall_is_covered_too(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    trace_service.recall_batch(
        conn, batch_id=mango_lot["parent"]["id"], reason="召回", recalled_by="regulator"
    )
    later = trace_service.split_batch(conn, batch_id=mango_lot["child"]["id"], parts=[{"quantity": 10}])[0]
    (code,) = trace_codes.issue_codes(conn, batch_id=later["id"], count=1)
    body = client.get(f"/api/v1/trace/{code['code']}").json()
    assert body["recalled"] is True
    assert [r["lot"] for r in body["recalls"]] == [mango_lot["parent"]["lot"]]


def test_cooperatives_cannot_recall(client: TestClient, conn: Conn, mango_lot: dict[str, Any]) -> None:
    from agritrace.api import tokens

    name = conn.execute(
        "SELECT name FROM cooperatives WHERE id = %s", (mango_lot["cooperative_id"],)
    ).fetchone()
    assert name is not None
    token = tokens.create(conn, role="cooperative", cooperative=name["name"])
    resp = client.post(
        f"/api/v1/batches/{mango_lot['parent']['id']}/recall",
        json={"reason": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 403


def test_expired_certificate_is_marked_and_warned(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    trace_service.add_certificate(
        conn,
        kind="organic",
        number="124OP2000123",
        issuer="认证中心",
        valid_from=date(2020, 1, 1),
        valid_to=date(2021, 1, 1),
        batch_id=mango_lot["child"]["id"],
    )
    html = client.get(f"/t/{mango_lot['code']}").text
    assert "已过期" in html and 'id="warn-certificate_expired"' in html


def test_cold_room_too_cold_for_mango_is_an_excursion(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    start = datetime(2026, 7, 13, tzinfo=UTC)
    channel = cold_room(conn, mango_lot["cooperative_id"], start=start, hours=6, temp=6.0)
    trace_service.add_custody(
        conn,
        batch_id=mango_lot["child"]["id"],
        channel_id=channel,
        started_at=start,
        ended_at=start + timedelta(hours=6),
    )
    body = client.get(f"/api/v1/trace/{mango_lot['code']}").json()
    assert body["cold_chain"]["verdict"] == "excursion"
    assert body["cold_chain"]["min"] == 6.0
    assert body["cold_chain"]["minutes_out_of_band"] >= 300
    assert "cold_chain_excursion" in body["warnings"]
    assert "冷链温度超出范围" in client.get(f"/t/{mango_lot['code']}").text


def test_code_scanned_from_many_places_is_flagged_for_regulators(
    client: TestClient, conn: Conn, regulator: dict[str, str], mango_lot: dict[str, Any]
) -> None:
    for i in range(8):
        trace_page.scan_view(conn, serial=mango_lot["code"], ip=f"10.{i}.0.1", user_agent="MicroMessenger")
    flagged = client.get("/api/v1/codes/flagged", headers=regulator).json()["items"]
    assert [f["code"] for f in flagged] == [mango_lot["code"]]
    assert "networks" in flagged[0]["flag_reason"]
    page = client.get(f"/t/{mango_lot['code']}").text
    assert 'id="warn-possibly_counterfeit"' in page
    # No addresses are kept, only a keyed hash of the network and the browser family.
    rows = conn.execute("SELECT * FROM code_scans WHERE serial = %s", (mango_lot["code"],)).fetchall()
    assert all("10." not in (r["place_hash"] or "") for r in rows)
    assert {r["ua_family"] for r in rows} >= {"wechat"}


def test_digital_link_with_a_wrong_lot_is_not_genuine(client: TestClient, mango_lot: dict[str, Any]) -> None:
    gtin = mango_lot["child"]["gtin"]
    resp = client.get(f"/01/{gtin}/10/OTHERLOT/21/{mango_lot['code']}")
    assert resp.status_code == 404
    assert "未找到该追溯码" in resp.text
    forged = trace_codes.new_serial()  # the right shape, never issued
    assert client.get(f"/t/{forged}").status_code == 404
    assert client.get(f"/01/{gtin}/10/{mango_lot['child']['lot']}/21/{forged}").status_code == 404


def test_page_is_styled_under_its_own_content_security_policy(
    client: TestClient, mango_lot: dict[str, Any]
) -> None:
    # The CSP allows styles and scripts only from this origin: an inline <style> or script would
    # be dropped by the browser and a consumer would see a bare page.
    resp = client.get(urlsplit(mango_lot["url"]).path)
    csp = resp.headers["content-security-policy"]
    assert "style-src 'self'" in csp and "unsafe-inline" not in csp
    html = resp.text
    assert "<style" not in html and "<script" not in html and " style=" not in html
    sheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert sheets, "the page links its stylesheet"
    for href in sheets:
        assert href.startswith("/"), href  # same origin
        css = client.get(href)
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert "body{" in css.text
