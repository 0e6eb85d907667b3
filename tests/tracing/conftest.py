"""Fixtures for the trace tests: an API client, tokens, a fully recorded mango lot, a live server."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import coldchain_page, gs1
from agritrace.trace import service as trace_service

GTIN = "0690123456789" + str(gs1.check_digit("0690123456789"))


@pytest.fixture(autouse=True)
def fresh_cold_chain_cache() -> None:
    """Batch ids restart in every test: never reuse a summary cached by an earlier one."""
    coldchain_page.clear_cache()


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app()
    # These tests send hundreds of requests from one test client; the public rate limit has tests
    # of its own (tests/test_public_protection.py).
    app.state.public_rate_limiter.burst = 1_000_000
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(conn: Conn) -> dict[str, str]:
    return bearer(tokens.create(conn, role="admin"))


@pytest.fixture
def regulator(conn: Conn) -> dict[str, str]:
    return bearer(tokens.create(conn, role="regulator"))


def cooperative_token(conn: Conn, name: str) -> dict[str, str]:
    trace_service.ensure_cooperative(conn, name=name)
    return bearer(tokens.create(conn, role="cooperative", cooperative=name))


def cold_room(
    conn: Conn, cooperative_id: int, *, start: datetime, hours: int, temp: float, wobble: float = 0.0
) -> int:
    """A gateway with a temperature channel and a reading every 5 minutes at `temp` °C (± `wobble`)."""
    gateway = f"gw-{time.monotonic_ns() % 10**12}"
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gateway, cooperative_id))
    row = conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, 'coldroom/temp', 'Cel') RETURNING id",
        (gateway,),
    ).fetchone()
    assert row is not None
    conn.execute(
        """INSERT INTO readings (time, channel_id, value)
           SELECT t, %s, %s + %s * sin(extract(epoch FROM t) / 5400.0) FROM generate_series(%s::timestamptz, %s::timestamptz + %s * interval '1 hour',
                                                  interval '5 minutes') t""",
        (row["id"], temp, wobble, start, start, hours),
    )
    return int(row["id"])


@pytest.fixture
def mango_lot(conn: Conn) -> dict[str, Any]:
    """百色芒果: a harvest batch with GI + green-food certificates, an inspection, a cold room at 11.5 °C,
    packed into a GTIN lot with a 承诺达标合格证 and one issued code."""
    coop = trace_service.ensure_cooperative(conn, name=f"百色芒果合作社-{time.monotonic_ns() % 10**9}")
    harvest = datetime(2026, 7, 10, 1, tzinfo=UTC)
    parent = trace_service.create_batch(
        conn,
        product="mango",
        cooperative_id=coop,
        variety="台农一号",
        origin_plot="右江区阳圩镇 3 号果园",
        gi_area="百色芒果",
        harvest_date=harvest.date(),
        quantity=Decimal(2000),
        unit="kg",
    )
    trace_service.add_event(
        conn, batch_id=parent["id"], biz_step="commissioning", event_time=harvest, place="阳圩镇"
    )
    trace_service.add_certificate(
        conn,
        kind="geographical_indication",
        number=f"AGI{time.monotonic_ns() % 100000:05d}",
        issuer="农业农村部",
        valid_from=date(2024, 1, 1),
        valid_to=date(2099, 12, 31),
        holder_cooperative_id=coop,
    )
    trace_service.add_certificate(
        conn,
        kind="green_food",
        number=f"LB-15-{time.monotonic_ns() % 10**10:010d}A",
        issuer="中国绿色食品发展中心",
        valid_from=date(2024, 1, 1),
        valid_to=date(2099, 1, 1),
        batch_id=parent["id"],
    )
    trace_service.add_inspection(
        conn, batch_id=parent["id"], inspected_at=harvest + timedelta(hours=3), kind="农药残留", passed=True
    )
    channel = cold_room(conn, coop, start=harvest + timedelta(hours=4), hours=48, temp=11.5, wobble=0.7)
    trace_service.add_custody(
        conn,
        batch_id=parent["id"],
        channel_id=channel,
        started_at=harvest + timedelta(hours=4),
        ended_at=harvest + timedelta(hours=52),
    )
    child = trace_service.split_batch(
        conn, batch_id=parent["id"], parts=[{"quantity": Decimal(500), "unit": "kg", "gtin": GTIN}]
    )[0]
    trace_service.set_compliance_certificate(
        conn,
        batch_id=child["id"],
        product_name="百色芒果",
        quantity=Decimal(500),
        unit="kg",
        origin="广西百色市右江区",
        issued_at=harvest + timedelta(days=2),
        issuer="黄师傅",
        contact="0776-2800000",
    )
    issued = trace_codes.issue_codes(conn, batch_id=child["id"], count=1)[0]
    return {"cooperative_id": coop, "parent": parent, "child": child, "channel_id": channel, **issued}


@pytest.fixture
def live_server() -> Iterator[str]:
    """The real app under uvicorn on a free port, so real clients (Chromium, curl) send the raw bytes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def phone_browser(url: str, shot: Path, profile: Path) -> str:
    """Headless Chromium at a phone's size: saves a screenshot of `url` to `shot` and returns the DOM
    it built (after parsing), as a shopper's phone would render the page."""
    common = [
        "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--window-size=390,844",
        "--hide-scrollbars",
    ]
    shot.unlink(missing_ok=True)
    subprocess.run([*common, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=90)
    assert shot.stat().st_size > 10_000
    return subprocess.run(
        [*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=90
    ).stdout
