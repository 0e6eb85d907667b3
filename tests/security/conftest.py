"""Fixtures for the attack tests: the real app under uvicorn (for curl), a tenant to attack, and the
fixtures shared with the trace tests (a mango lot with an issued code, tokens)."""

from __future__ import annotations

import pytest
from attacker import Tenant, make_tenant
from test_ingest import stack  # noqa: F401 - re-exported fixture (a real ingest worker stack)
from tracing.conftest import live_server, mango_lot, regulator  # noqa: F401 - re-exported fixtures

from agritrace import db


@pytest.fixture
def tenant(conn: db.Conn) -> Tenant:
    """A cooperative with one batch, and a token of each role."""
    return make_tenant(conn)
