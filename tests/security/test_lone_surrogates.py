"""A JSON `"\\ud800"` escape decodes in Python to a lone surrogate, which no UTF-8 encoder accepts: it
used to reach psycopg and come back as a 500 (issue 12, "Input"). Every route now answers 422 naming
the field, checked once for all routes in `api/protection.py`. Sent by curl to the real app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from attacker import Tenant, curl
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agritrace.api.app import create_app

SURROGATE = "\\ud800"  # the six characters of the JSON escape, as an attacker sends them


def raw(template: str) -> bytes:
    """A JSON body written by hand, with `@` standing for the surrogate escape."""
    return template.replace("@", SURROGATE).encode()


CASES: list[tuple[str, str, str, list[Any]]] = [
    ("POST", "/api/v1/batches", '{"product": "mango", "cooperative": "coop@"}', ["body", "cooperative"]),
    (
        "POST",
        "/api/v1/batches",
        '{"product": "mango", "cooperative": "x", "variety": "@"}',
        ["body", "variety"],
    ),
    ("POST", "/api/v1/gateways", '{"cooperative": "@coop"}', ["body", "cooperative"]),
    (
        "POST",
        "/api/v1/gateways",
        '{"cooperative": "{coop}", "description": "room @"}',
        ["body", "description"],
    ),
    (
        "POST",
        "/api/v1/batches/{batch}/certificates",
        '{"kind": "organic", "number": "124OP2100123", "issuer": "认证中心@", '
        '"valid_from": "2026-01-01", "valid_to": "2027-01-01"}',
        ["body", "issuer"],
    ),
    (
        "POST",
        "/api/v1/batches/{batch}/events",
        '{"biz_step": "packing", "event_time": "2026-05-02T01:00:00Z", "documents": [{"type": "po", "id": "@"}]}',
        ["body", "documents", 0, "id"],
    ),
    ("POST", "/api/v1/tokens", '{"role": "regulator", "description": "@"}', ["body", "description"]),
    ("POST", "/api/v1/batches/{batch}/recall", '{"reason": "bad @ batch"}', ["body", "reason"]),
    (
        "POST",
        "/api/v1/coldchain/webhooks",
        '{"url": "https://ops.example.org/h", "cooperative": "@"}',
        ["body", "cooperative"],
    ),
    # In a key: an unknown field's name is echoed in the validation error, which could not be encoded.
    ("POST", "/api/v1/gateways", '{"cooperative": "{coop}", "x@": 1}', ["body", "x\\ud800"]),
]


@pytest.mark.parametrize(
    ("method", "path", "template", "loc"), CASES, ids=[f"{c[1]}:{c[3][-1]}" for c in CASES]
)
def test_a_lone_surrogate_in_a_json_body_is_422_naming_the_field(
    live_server: str, tenant: Tenant, method: str, path: str, template: str, loc: list[Any]
) -> None:
    url = live_server + path.replace("{batch}", str(tenant.batch_id))
    body = raw(template.replace("{coop}", tenant.cooperative))
    status, payload = curl(method, url, headers=tenant.admin, body=body)
    assert status == 422, payload
    problem = json.loads(payload)
    assert problem["type"].endswith("/invalid-input")
    assert loc in [e["loc"] for e in problem["errors"]]


def test_a_surrogate_pair_is_an_ordinary_character_and_accepted(live_server: str, tenant: Tenant) -> None:
    # "\ud83c\udf4b" is 🍋 (U+1F34B) written as a JSON surrogate pair: valid JSON, valid text.
    body = (
        b'{"product": "citrus", "cooperative": "'
        + tenant.cooperative.encode()
        + b'", "variety": "\\ud83c\\udf4b"}'
    )
    status, payload = curl("POST", live_server + "/api/v1/batches", headers=tenant.admin, body=body)
    assert status == 201, payload
    assert json.loads(payload)["variety"] == "🍋"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/trace/%ED%A0%80",  # UTF-8 bytes of U+D800: invalid UTF-8
        "/t/%ED%A0%80?lang=%ED%A0%80",
        "/api/v1/audit/batches/%ED%A0%80",
        "/api/v1/batches?cursor=%ED%A0%80",
        "/api/v1/coldchain/alerts?status=%ED%A0%80",
    ],
)
def test_surrogate_bytes_in_a_path_or_query_never_give_a_server_error(
    live_server: str, tenant: Tenant, path: str
) -> None:
    status, payload = curl("GET", live_server + path, headers=tenant.admin)
    assert 400 <= status < 500, payload


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


# Any text at all, lone surrogates included (`st.text` never makes them, whatever the categories).
ANY_TEXT = st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=30).map(
    "".join
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cooperative=ANY_TEXT, variety=ANY_TEXT, issuer=ANY_TEXT, description=ANY_TEXT)
def test_arbitrary_text_in_any_field_never_gives_a_server_error(
    client: TestClient, tenant: Tenant, cooperative: str, variety: str, issuer: str, description: str
) -> None:
    def post(path: str, doc: dict[str, Any]) -> None:
        # ensure_ascii: every non-ASCII character, lone surrogates too, goes as a \\u escape.
        body = json.dumps(doc, ensure_ascii=True).encode()
        r = client.post(path, content=body, headers={**tenant.admin, "Content-Type": "application/json"})
        assert r.status_code < 500, (path, doc, r.text)
        # A high surrogate followed by a low one is a pair: JSON decodes it to one astral character.
        received = json.loads(body).values()
        if any("\ud800" <= ch <= "\udfff" for v in received if isinstance(v, str) for ch in v):
            assert r.status_code == 422

    post("/api/v1/batches", {"product": "mango", "cooperative": cooperative or "x", "variety": variety})
    post(
        f"/api/v1/batches/{tenant.batch_id}/certificates",
        {
            "kind": "organic",
            "number": "124OP2100123",
            "issuer": issuer,
            "valid_from": "2026-01-01",
            "valid_to": "2027-01-01",
        },
    )
    post("/api/v1/tokens", {"role": "regulator", "description": description})
