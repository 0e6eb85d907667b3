"""Role x endpoint matrix: every route of the app, called as every kind of caller, answers exactly
the expected status. A route without an entry in CASES fails `test_every_route_has_a_matrix_entry`.

Adding an endpoint = one line in CASES:
    Case("GET", "/api/v1/gateways/{gateway_id}/latest", lambda t: f"/api/v1/gateways/{t.gateway_id}/latest",
         tenant_read()),
where the lambda builds the URL for an object owned by tenant `t` (the caller's own cooperative for
`own`, admin and regulator; the other cooperative for `other`). If the route needs a kind of object
the Tenant does not have yet (a batch, a code), add a field to Tenant and create it in make_tenant.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.coldchain import profiles
from agritrace.db import Conn

PERSONAS = ("none", "expired", "revoked", "regulator", "own", "other", "admin")


@dataclass
class Tenant:
    """One cooperative's objects, as the matrix needs them."""

    cooperative_id: int
    cooperative: str
    gateway_id: str
    channel_id: int
    token_id: int  # a token of this cooperative (something an admin may revoke)
    alert_id: int  # an open cold-chain alert on the channel
    rule_id: int  # the excursion rule the alert follows (rules are shared, not the tenant's)


@dataclass
class World:
    a: Tenant
    b: Tenant
    bearer: dict[str, str | None]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    url: Callable[[Tenant], str]
    expect: dict[str, int]
    body: Callable[[Tenant], Any] | None = field(default=None)


def public(status: int = 200) -> dict[str, int]:
    """Anyone, with or without a token (a bad token is ignored, not refused)."""
    return dict.fromkeys(PERSONAS, status)


def authed(*, admin: int, regulator: int, own: int, other: int) -> dict[str, int]:
    """A route behind a bearer token: no, expired or revoked token is a 401."""
    return {
        "none": 401,
        "expired": 401,
        "revoked": 401,
        "admin": admin,
        "regulator": regulator,
        "own": own,
        "other": other,
    }


def admin_only(ok: int = 200) -> dict[str, int]:
    return authed(admin=ok, regulator=403, own=403, other=403)


def staff_only(ok: int = 200) -> dict[str, int]:
    """Admin and regulator (read everything); cooperatives refused by role."""
    return authed(admin=ok, regulator=ok, own=403, other=403)


def tenant_read(ok: int = 200) -> dict[str, int]:
    """Everyone with a token may read their own; another cooperative's object is a 404."""
    return authed(admin=ok, regulator=ok, own=ok, other=404)


def tenant_write(ok: int = 200) -> dict[str, int]:
    """Admin and the owning cooperative may change it; regulators may not; others see 404."""
    return authed(admin=ok, regulator=403, own=ok, other=404)


CASES: list[Case] = [
    Case("GET", "/healthz", lambda t: "/healthz", public()),
    Case("GET", "/openapi.json", lambda t: "/openapi.json", public()),
    Case("GET", "/docs", lambda t: "/docs", public()),
    Case("GET", "/docs/oauth2-redirect", lambda t: "/docs/oauth2-redirect", public()),
    Case("GET", "/redoc", lambda t: "/redoc", public()),
    Case(
        "POST", "/api/v1/tokens", lambda t: "/api/v1/tokens", admin_only(201), lambda t: {"role": "regulator"}
    ),
    Case("GET", "/api/v1/tokens", lambda t: "/api/v1/tokens", admin_only()),
    Case("DELETE", "/api/v1/tokens/{token_id}", lambda t: f"/api/v1/tokens/{t.token_id}", admin_only(204)),
    Case(
        "GET",
        "/api/v1/audit/{table}/{key}",
        lambda t: f"/api/v1/audit/gateways/{t.gateway_id}",
        tenant_read(),
    ),
    # Cold chain: alerts and channels are tenant data; profiles, rules and webhooks are staff's.
    Case(
        "GET",
        "/api/v1/alerts",
        lambda t: "/api/v1/alerts?status=open",
        authed(admin=200, regulator=200, own=200, other=200),
    ),
    Case("GET", "/api/v1/alerts/{alert_id}", lambda t: f"/api/v1/alerts/{t.alert_id}", tenant_read()),
    Case(
        "POST",
        "/api/v1/alerts/{alert_id}/acknowledge",
        lambda t: f"/api/v1/alerts/{t.alert_id}/acknowledge",
        tenant_read(),
    ),
    Case(
        "POST",
        "/api/v1/alerts/{alert_id}/resolve",
        lambda t: f"/api/v1/alerts/{t.alert_id}/resolve",
        tenant_read(),
        lambda t: {"comment": "fruit inspected"},
    ),
    Case(
        "POST",
        "/api/v1/alerts/{alert_id}/comments",
        lambda t: f"/api/v1/alerts/{t.alert_id}/comments",
        tenant_read(201),
        lambda t: {"comment": "moved pallets"},
    ),
    Case(
        "GET",
        "/api/v1/coldchain/profiles",
        lambda t: "/api/v1/coldchain/profiles",
        authed(admin=200, regulator=200, own=200, other=200),
    ),
    Case(
        "POST",
        "/api/v1/coldchain/profiles",
        lambda t: "/api/v1/coldchain/profiles",
        staff_only(201),
        lambda t: {"name": "lychee", "temp_low": 1, "temp_high": 5},
    ),
    Case(
        "PATCH",
        "/api/v1/coldchain/profiles/{name}",
        lambda t: "/api/v1/coldchain/profiles/mango",
        staff_only(),
        lambda t: {"temp_low": 10.5},
    ),
    Case(
        "POST",
        "/api/v1/coldchain/profiles/{name}/rules",
        lambda t: "/api/v1/coldchain/profiles/mango/rules",
        staff_only(201),
        lambda t: {
            "name": "frost",
            "metric": "temperature",
            "direction": "below",
            "threshold": 2,
            "delay_s": 600,
            "severity": "critical",
        },
    ),
    Case(
        "PATCH",
        "/api/v1/coldchain/rules/{rule_id}",
        lambda t: f"/api/v1/coldchain/rules/{t.rule_id}",
        staff_only(204),
        lambda t: {"delay_s": 900},
    ),
    Case(
        "PUT",
        "/api/v1/coldchain/channel-profiles",
        lambda t: "/api/v1/coldchain/channel-profiles",
        authed(admin=200, regulator=200, own=200, other=404),
        lambda t: {"gateway_id": t.gateway_id, "channel": "coldroom/temp", "profile": "citrus"},
    ),
    Case(
        "POST",
        "/api/v1/coldchain/webhooks",
        lambda t: "/api/v1/coldchain/webhooks",
        staff_only(201),
        lambda t: {"url": "https://ops.example.org/hook", "cooperative": t.cooperative},
    ),
    Case(
        "GET",
        "/api/v1/coldchain/channels/{channel_id}/summary",
        lambda t: (
            f"/api/v1/coldchain/channels/{t.channel_id}/summary?start=2026-05-01T00:00:00Z&end=2026-05-02T00:00:00Z"
        ),
        tenant_read(),
    ),
]


def make_tenant(conn: Conn) -> Tenant:
    name = f"coop-{secrets.token_hex(4)}"
    coop = conn.execute("INSERT INTO cooperatives (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert coop is not None
    gw = f"gw-{secrets.token_hex(4)}"
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gw, coop["id"]))
    ch = conn.execute(
        "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, 'coldroom/temp', 'Cel') RETURNING id",
        (gw,),
    ).fetchone()
    assert ch is not None
    tok = tokens.issue(conn, role="cooperative", cooperative=name)
    profiles.ensure_defaults(conn)
    rule = conn.execute(
        """SELECT r.id, r.profile_id, r.severity FROM coldchain_rules r
             JOIN coldchain_profiles p ON p.id = r.profile_id
            WHERE p.name = 'mango' AND r.name = 'chilling'"""
    ).fetchone()
    assert rule is not None
    alert = conn.execute(
        """INSERT INTO alerts (channel_id, rule_id, profile_id, severity, started_at, worst_value)
           VALUES (%s, %s, %s, %s, now() - interval '1 hour', 6.0) RETURNING id""",
        (ch["id"], rule["id"], rule["profile_id"], rule["severity"]),
    ).fetchone()
    assert alert is not None
    return Tenant(coop["id"], name, gw, ch["id"], tok["id"], alert["id"], rule["id"])


def make_world(conn: Conn) -> World:
    a, b = make_tenant(conn), make_tenant(conn)
    revoked = tokens.issue(conn, role="admin")
    tokens.revoke(conn, token_id=revoked["id"])
    # Admin role for the expired and revoked tokens: a 401 then cannot be mistaken for a role's 403.
    expired = tokens.create(conn, role="admin", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    own = tokens.create(conn, role="cooperative", cooperative=a.cooperative)
    return World(
        a,
        b,
        {
            "none": None,
            "expired": expired,
            "revoked": str(revoked["token"]),
            "regulator": tokens.create(conn, role="regulator"),
            "own": own,
            "other": own,  # the same cooperative A token, aimed at B's object
            "admin": tokens.create(conn, role="admin"),
        },
    )


def route_keys(routes: list[Any]) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    # iter_route_contexts flattens included routers (FastAPI keeps them nested in app.routes).
    for r in iter_route_contexts(routes):
        methods = getattr(r, "methods", None) or ()
        keys |= {(str(m), str(r.path)) for m in methods if m != "HEAD"}
    return keys


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        for _ in range(100):  # the broker session connects in the background; /healthz waits for it
            if c.app.state.broker.is_connected():  # type: ignore[attr-defined]
                break
            time.sleep(0.05)
        yield c


def test_every_route_has_a_matrix_entry(client: TestClient) -> None:
    have = {(c.method, c.path) for c in CASES}
    routes = route_keys(client.app.routes)  # type: ignore[attr-defined]
    missing = sorted(routes - have)
    stale = sorted(have - routes)
    assert not missing, f"routes without an authz matrix entry (add a Case to CASES): {missing}"
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
def test_route_answers_each_caller_with_the_expected_status(
    client: TestClient, conn: Conn, case: Case, persona: str
) -> None:
    world = make_world(conn)
    owner = world.b if persona == "other" else world.a
    token = world.bearer[persona]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = client.request(
        case.method, case.url(owner), headers=headers, json=case.body(owner) if case.body else None
    )
    assert resp.status_code == case.expect[persona], (persona, resp.text[:300])
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json"


def _fake_tenant(n: int) -> Tenant:
    """A Tenant with distinct made-up values in every field (whatever fields it grows)."""
    values: dict[str, Any] = {
        f.name: n if f.type in ("int", int) else f"{f.name}-{n}" for f in fields(Tenant)
    }
    return Tenant(**values)


def test_no_route_lets_a_cooperative_reach_another_cooperatives_object() -> None:
    # Routes whose URL names an object (it differs between two tenants) must refuse `other`; list
    # routes have one URL for everyone and are filtered by scope instead (checked in domain tests).
    a, b = _fake_tenant(1), _fake_tenant(2)
    for case in CASES:
        if case.url(a) == case.url(b):
            continue
        assert not 200 <= case.expect["other"] < 300, f"{case.method} {case.path} admits another cooperative"


def _has_example(spec: dict[str, Any], response: dict[str, Any]) -> bool:
    for media in response.get("content", {}).values():
        if "example" in media or "examples" in media:
            return True
        schema = media.get("schema", {})
        ref = schema.get("$ref", "")
        if ref:
            schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        if "examples" in schema:
            return True
    return False


def test_openapi_documents_every_operations_auth_and_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    public_paths = {c.path for c in CASES if c.expect == public(c.expect["admin"])}
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            assert "security" in op, f"{where}: no security requirement (public routes declare security: [])"
            assert (op["security"] == []) == (path in public_paths), where
            ok = [r for s, r in op["responses"].items() if s.startswith("2")]
            assert ok and all(r.get("content") is None or _has_example(spec, r) for r in ok), (
                f"{where}: no example"
            )
            if "requestBody" in op:
                assert _has_example(spec, op["requestBody"]), f"{where}: request body without an example"
