"""Webhooks could target loopback over plain http (issue 12, item 6): a regulator's token was enough
to make the alert notifier call anything on the server's own network. Now a webhook must be https
and reach public addresses only, checked when it is registered and again before every call."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from attacker import Tenant, server_settings
from fastapi.testclient import TestClient
from test_coldchain_alerts import ingest, series, watched_channel

from agritrace import db
from agritrace.api.app import create_app
from agritrace.coldchain import evaluator, notify


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


class Listener:
    """A TCP port on this machine that counts who connects (whatever they then say)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.sock.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",  # plain http, loopback
        "https://127.0.0.1:{port}/hook",
        "https://10.0.0.1/hook",  # private
        "https://192.168.1.10/hook",
        "https://[::1]:{port}/hook",  # IPv6 loopback
        "https://localhost:{port}/hook",  # a name resolving to 127.0.0.1
        "https://2130706433/hook",  # 127.0.0.1 as one number
        "https://good.example@127.0.0.1:{port}/",  # reads like good.example, goes to loopback
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata, link-local
        "https://[fe80::1]/hook",
        "https://224.0.0.1/hook",  # multicast
        "https://0.0.0.0:{port}/hook",
        "https://[::ffff:127.0.0.1]:{port}/hook",  # IPv4-mapped loopback
        "https://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://240.0.0.1/hook",  # reserved
        "http://hooks.example.com/alerts",  # a public name, but plain http
    ],
)
def test_a_webhook_to_a_non_public_or_plain_http_target_is_refused(
    client: TestClient, conn: db.Conn, tenant: Tenant, listener: Listener, url: str
) -> None:
    r = client.post(
        "/api/v1/coldchain/webhooks", json={"url": url.format(port=listener.port)}, headers=tenant.regulator
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/invalid-input")
    assert conn.execute("SELECT count(*) AS n FROM coldchain_webhooks").fetchone() == {"n": 0}


@pytest.mark.parametrize("url", ["https://93.184.215.14/alerts", "https://hooks.example.com/x?key=abc"])
def test_a_webhook_to_a_public_https_target_is_registered(
    client: TestClient, tenant: Tenant, url: str
) -> None:
    # hooks.example.com does not resolve from a machine without DNS: it is checked again at each call.
    r = client.post("/api/v1/coldchain/webhooks", json={"url": url}, headers=tenant.admin)
    assert r.status_code == 201, r.text


@pytest.fixture
def alert_event(conn: db.Conn) -> None:
    """An open alert: one event in the notifier's outbox."""
    ch = watched_channel(conn)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    ingest(conn, ch["id"], series(start, [6.0] * 40))
    evaluator.run_once(conn)


@pytest.mark.parametrize(
    "url",
    ["https://localhost:{port}/hook", "http://127.0.0.1:{port}/hook", "https://[::ffff:127.0.0.1]:{port}/"],
)
def test_a_stored_webhook_whose_target_turned_private_is_not_called(
    conn: db.Conn, listener: Listener, alert_event: None, url: str
) -> None:
    # As if registered while its name pointed elsewhere (DNS rebinding), or written around the API.
    conn.execute(
        "INSERT INTO coldchain_webhooks (url, secret) VALUES (%s, 's3cret')",
        (url.format(port=listener.port),),
    )
    with httpx.Client(timeout=5) as http:
        assert notify.deliver_pending(conn, http, backoff=0.01) == 1
    assert listener.connections == 0
    delivery = conn.execute(
        "SELECT attempts, status_code, error FROM coldchain_webhook_deliveries"
    ).fetchone()
    assert delivery is not None and delivery["attempts"] == 1 and delivery["status_code"] is None
    assert delivery["error"].startswith("refused: ")


@pytest.fixture
def private_webhooks() -> Iterator[None]:
    with server_settings(webhook_allow_private_targets="true"):
        yield


def test_an_operator_may_allow_private_targets_for_a_receiver_on_the_lan(
    client: TestClient,
    conn: db.Conn,
    tenant: Tenant,
    listener: Listener,
    alert_event: None,
    private_webhooks: None,
) -> None:
    url = f"http://127.0.0.1:{listener.port}/hook"
    r = client.post("/api/v1/coldchain/webhooks", json={"url": url}, headers=tenant.regulator)
    assert r.status_code == 201, r.text
    with httpx.Client(timeout=5) as http:
        notify.deliver_pending(conn, http, backoff=0.01)
    assert listener.connections >= 1  # the listener hangs up on it, but it was called
