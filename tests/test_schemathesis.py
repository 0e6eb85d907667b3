"""Property-based API tests from /openapi.json (schemathesis): whatever a client sends, with an admin
token or none, the API answers without a 5xx and within its documented schema. Bounded: a few
examples per operation, so the whole file runs in seconds. A cooperative token is tried too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.db import Conn

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Serving /openapi.json needs no database, so the schema can load when the module is collected.
APP = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def running_app() -> Iterator[FastAPI]:
    with TestClient(APP):  # runs the lifespan: the pool and broker session the routes use
        yield APP


@pytest.fixture
def admin_token(conn: Conn) -> str:
    conn.execute("INSERT INTO cooperatives (name) VALUES ('coop-schemathesis')")
    # Low token ids belong to others, so a generated DELETE /tokens/{id} rarely revokes the caller.
    for _ in range(5):
        tokens.create(conn, role="regulator")
    return tokens.create(conn, role="admin")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_an_admin_token_never_errors_and_keeps_its_schema(
    case: schemathesis.Case[Any], admin_token: str
) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_without_a_token_never_errors_and_keeps_its_schema(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.fixture
def cooperative_token(conn: Conn) -> str:
    conn.execute("INSERT INTO cooperatives (name) VALUES ('coop-schemathesis-own')")
    return tokens.create(conn, role="cooperative", cooperative="coop-schemathesis-own")


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_a_cooperative_token_never_errors_and_keeps_its_schema(
    case: schemathesis.Case[Any], cooperative_token: str
) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {cooperative_token}"}, checks=CHECKS)
