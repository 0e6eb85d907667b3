"""Fixtures for the attack tests: the real app under uvicorn (for curl), a tenant to attack, and the
fixtures shared with the trace tests (a mango lot with an issued code, tokens)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from attacker import Tenant, make_tenant
from test_ingest import stack  # noqa: F401 - re-exported fixture (a real ingest worker stack)
from tracing.conftest import mango_lot, regulator  # noqa: F401 - re-exported fixtures

from agritrace import db
from agritrace.api.app import create_app


@pytest.fixture
def live_server() -> Iterator[str]:
    """The real app under uvicorn on a free port, so real clients (curl) send the raw bytes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def tenant(conn: db.Conn) -> Tenant:
    """A cooperative with one batch, and a token of each role."""
    return make_tenant(conn)
