"""Role x endpoint matrix: every route of the app, called as every kind of caller, answers exactly
the expected status. A route without an entry in CASES fails `test_every_route_has_a_matrix_entry`.

Adding an endpoint = one line in CASES:
    Case("GET", "/api/v1/gateways/{gateway_id}/latest", lambda t: f"/api/v1/gateways/{t.gateway_id}/latest",
         tenant_read()),
where the lambda builds the URL for an object owned by tenant `t` (the caller's own cooperative for
`own`, admin and regulator; the other cooperative for `other`). If the route needs a kind of object
the Tenant does not have yet (a batch, a code), add a field to Tenant and create it in make_tenant.
A route that acts on the gateway's broker client (disable, rotate) says `broker=True`: only those
cases provision real broker clients for their tenants.
"""

from __future__ import annotations

import os
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
from agritrace.devices import broker
from agritrace.devices import service as devices_service
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import labels
from agritrace.trace import service as trace_service

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
    # Devices and trace (integ-api):
    batch_id: int  # a mango batch with a GTIN, so its code also resolves as a Digital Link
    batch2_id: int  # a second batch of the same product, to merge with the first
    lot: str
    gtin: str
    code: str  # a code issued for batch_id
    label_job_id: int  # a finished label job of batch_id


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
    # The route changes the tenant gateway's broker client: provision a real one (three dynamic-
    # security round trips, most of a world's set-up time), not just the gateway's row.
    broker: bool = False


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
        # The tenant's alert is critical (chilling): only a regulator or an admin closes it.
        authed(admin=200, regulator=200, own=403, other=404),
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
        "POST",
        "/api/v1/coldchain/alert-feeds",
        lambda t: "/api/v1/coldchain/alert-feeds",
        admin_only(201),  # a cooperative's own feed: tests/test_coldchain_alert_feeds.py
        lambda t: {"regulator": f"matrix-{secrets.token_hex(4)}"},
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


# ---- Devices and trace routes (integ-api) ----
# The gateway of a Tenant is provisioned in the broker too, so enabling, disabling and rotating its
# credentials reach the broker; the module's fixture removes those clients afterwards.
_PROVISIONED: list[str] = []
_DYNSEC: list[broker.DynamicSecurity] = []
_FROM = "2026-05-01T00:00:00Z"


def _new_gateway(t: Tenant) -> dict[str, str]:
    gateway_id = f"{t.gateway_id}-n{secrets.token_hex(2)}"
    _PROVISIONED.append(gateway_id)
    return {"cooperative": t.cooperative, "gateway_id": gateway_id}


def _certificate() -> dict[str, str]:
    """A green-food certificate with a number nobody registered yet (numbers are unique)."""
    number = f"LB-18-{secrets.randbelow(10**11):011d}A"
    return {
        "kind": "green_food",
        "number": number,
        "issuer": "中国绿色食品发展中心",
        "valid_from": "2026-01-01",
        "valid_to": "2028-12-31",
    }


_COMPLIANCE = {
    "product_name": "百色芒果",
    "quantity": 100,
    "unit": "kg",
    "origin": "广西百色市田东县",
    "issued_at": "2026-05-02T01:00:00+08:00",
    "issuer": "百色芒果合作社",
    "contact": "0776-1234567",
}
_INSPECTION = {"inspected_at": "2026-05-02T02:00:00Z", "kind": "pesticide residue", "passed": True}

CASES += [
    Case(
        "POST",
        "/api/v1/gateways",
        lambda t: "/api/v1/gateways",
        authed(admin=201, regulator=403, own=201, other=403),
        _new_gateway,
    ),
    Case(
        "GET",
        "/api/v1/gateways",
        lambda t: "/api/v1/gateways",
        authed(admin=200, regulator=200, own=200, other=200),
    ),
    Case("GET", "/api/v1/gateways/{gateway_id}", lambda t: f"/api/v1/gateways/{t.gateway_id}", tenant_read()),
    Case(
        "POST",
        "/api/v1/gateways/{gateway_id}/disable",
        lambda t: f"/api/v1/gateways/{t.gateway_id}/disable",
        tenant_write(),
        broker=True,
    ),
    Case(
        "POST",
        "/api/v1/gateways/{gateway_id}/enable",
        lambda t: f"/api/v1/gateways/{t.gateway_id}/enable",
        tenant_write(),
        broker=True,
    ),
    Case(
        "POST",
        "/api/v1/gateways/{gateway_id}/credentials",
        lambda t: f"/api/v1/gateways/{t.gateway_id}/credentials",
        tenant_write(),
        broker=True,
    ),
    Case(
        "GET",
        "/api/v1/gateways/{gateway_id}/latest",
        lambda t: f"/api/v1/gateways/{t.gateway_id}/latest",
        tenant_read(),
    ),
    Case(
        "GET",
        "/api/v1/gateways/{gateway_id}/channels",
        lambda t: f"/api/v1/gateways/{t.gateway_id}/channels",
        tenant_read(),
    ),
    Case("GET", "/api/v1/channels/{channel_id}", lambda t: f"/api/v1/channels/{t.channel_id}", tenant_read()),
    Case(
        "PATCH",
        "/api/v1/channels/{channel_id}",
        lambda t: f"/api/v1/channels/{t.channel_id}",
        tenant_write(),
        lambda t: {"asset_kind": "cold_room", "asset_name": "冷库 1"},
    ),
    Case(
        "GET",
        "/api/v1/channels/{channel_id}/readings",
        lambda t: f"/api/v1/channels/{t.channel_id}/readings?start={_FROM}&end=2026-05-02T00:00:00Z",
        tenant_read(),
    ),
    Case(
        "POST",
        "/api/v1/batches",
        lambda t: "/api/v1/batches",
        authed(admin=201, regulator=403, own=201, other=403),
        lambda t: {"product": "mango", "cooperative": t.cooperative},
    ),
    Case(
        "GET",
        "/api/v1/batches",
        lambda t: "/api/v1/batches",
        authed(admin=200, regulator=200, own=200, other=200),
    ),
    Case("GET", "/api/v1/batches/{batch_id}", lambda t: f"/api/v1/batches/{t.batch_id}", tenant_read()),
    Case(
        "GET",
        "/api/v1/batches/{batch_id}/lineage",
        lambda t: f"/api/v1/batches/{t.batch_id}/lineage",
        tenant_read(),
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/split",
        lambda t: f"/api/v1/batches/{t.batch_id}/split",
        tenant_write(201),
        lambda t: {"parts": [{"quantity": 10, "unit": "kg"}]},
    ),
    Case(
        "POST",
        "/api/v1/batches/merge",
        lambda t: "/api/v1/batches/merge",
        authed(admin=201, regulator=403, own=201, other=404),
        lambda t: {"batch_ids": [t.batch_id, t.batch2_id]},
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/events",
        lambda t: f"/api/v1/batches/{t.batch_id}/events",
        tenant_write(201),
        lambda t: {"biz_step": "packing", "event_time": "2026-05-02T01:00:00Z"},
    ),
    Case(
        "GET",
        "/api/v1/batches/{batch_id}/epcis",
        lambda t: f"/api/v1/batches/{t.batch_id}/epcis",
        tenant_read(),
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/custody",
        lambda t: f"/api/v1/batches/{t.batch_id}/custody",
        tenant_write(201),
        lambda t: {"channel_id": t.channel_id, "started_at": _FROM},
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/certificates",
        lambda t: f"/api/v1/batches/{t.batch_id}/certificates",
        tenant_write(201),
        lambda t: _certificate(),
    ),
    Case(
        "POST",
        "/api/v1/cooperatives/{cooperative_id}/certificates",
        lambda t: f"/api/v1/cooperatives/{t.cooperative_id}/certificates",
        tenant_write(201),
        lambda t: _certificate(),
    ),
    Case(
        "GET",
        "/api/v1/batches/{batch_id}/certificates",
        lambda t: f"/api/v1/batches/{t.batch_id}/certificates",
        tenant_read(),
    ),
    Case(
        "PUT",
        "/api/v1/batches/{batch_id}/compliance-certificate",
        lambda t: f"/api/v1/batches/{t.batch_id}/compliance-certificate",
        tenant_write(),
        lambda t: _COMPLIANCE,
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/inspections",
        lambda t: f"/api/v1/batches/{t.batch_id}/inspections",
        tenant_write(201),
        lambda t: _INSPECTION,
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/codes",
        lambda t: f"/api/v1/batches/{t.batch_id}/codes",
        tenant_write(201),
        lambda t: {"count": 1},
    ),
    Case(
        "GET",
        "/api/v1/batches/{batch_id}/labels.pdf",
        lambda t: f"/api/v1/batches/{t.batch_id}/labels.pdf",
        tenant_read(),
    ),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/recall",
        lambda t: f"/api/v1/batches/{t.batch_id}/recall",
        staff_only(201),
        lambda t: {"reason": "pesticide residue above the limit"},
    ),
    Case("GET", "/api/v1/codes/flagged", lambda t: "/api/v1/codes/flagged", staff_only()),
    Case(
        "POST",
        "/api/v1/batches/{batch_id}/label-jobs",
        lambda t: f"/api/v1/batches/{t.batch_id}/label-jobs",
        tenant_write(202),
    ),
    Case(
        "GET", "/api/v1/label-jobs/{job_id}", lambda t: f"/api/v1/label-jobs/{t.label_job_id}", tenant_read()
    ),
    Case(
        "GET",
        "/api/v1/label-jobs/{job_id}/labels.pdf",
        lambda t: f"/api/v1/label-jobs/{t.label_job_id}/labels.pdf",
        tenant_read(),
    ),
    # The job is finished: cancelling it is a conflict for those who may see it.
    Case(
        "DELETE",
        "/api/v1/label-jobs/{job_id}",
        lambda t: f"/api/v1/label-jobs/{t.label_job_id}",
        authed(admin=409, regulator=403, own=409, other=404),
    ),
    Case(
        "POST",
        "/api/v1/codes/{code}/flag/clear",
        lambda t: f"/api/v1/codes/{t.code}/flag/clear",
        tenant_read(),
        lambda t: {"note": "checked genuine"},
    ),
    Case("GET", "/api/v1/codes/{code}/qr.png", lambda t: f"/api/v1/codes/{t.code}/qr.png", public()),
    Case("GET", "/api/v1/codes/{code}/qr.svg", lambda t: f"/api/v1/codes/{t.code}/qr.svg", public()),
    Case("GET", "/t/{code}", lambda t: f"/t/{t.code}", public()),
    Case("GET", "/api/v1/trace/{code}", lambda t: f"/api/v1/trace/{t.code}", public()),
    Case(
        "GET", "/01/{gtin}/10/{lot}/21/{serial}", lambda t: f"/01/{t.gtin}/10/{t.lot}/21/{t.code}", public()
    ),
]
# ---- end of devices and trace routes ----


def make_tenant(conn: Conn, *, broker_client: bool) -> Tenant:
    name = f"coop-{secrets.token_hex(4)}"
    coop = conn.execute("INSERT INTO cooperatives (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert coop is not None
    gw = f"gw-{secrets.token_hex(4)}"
    if broker_client:
        _PROVISIONED.append(gw)
        devices_service.create_gateway(conn, dynsec=_DYNSEC[0], cooperative_id=coop["id"], gateway_id=gw)
    else:
        conn.execute(
            "INSERT INTO gateways (id, cooperative_id, credentials_issued_at) VALUES (%s, %s, now())",
            (gw, coop["id"]),
        )
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
    gtin = "06901234567892"
    batch = trace_service.create_batch(
        conn, product="mango", cooperative_id=coop["id"], gtin=gtin, quantity=100, unit="kg"
    )
    batch2 = trace_service.create_batch(
        conn, product="mango", cooperative_id=coop["id"], quantity=50, unit="kg"
    )
    (code,) = trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)
    job = labels.submit(conn, batch_id=batch["id"], cooperative_id=None, requested_by="cli:matrix")
    # Rendered here, or by the runner of an app a test has open (whichever claims it first).
    deadline = time.monotonic() + 60
    while labels.get(conn, job_id=job["id"], cooperative_id=None)["status"] != "done":
        assert time.monotonic() < deadline, "the matrix's label job was not rendered"
        if not labels.run_one(conn):
            time.sleep(0.05)
    return Tenant(
        coop["id"], name, gw, ch["id"], tok["id"], alert["id"], rule["id"],
        batch["id"], batch2["id"], batch["lot"], gtin, code["code"], job["id"],
    )  # fmt: skip


def make_world(conn: Conn, *, broker_clients: bool = False) -> World:
    a, b = make_tenant(conn, broker_client=broker_clients), make_tenant(conn, broker_client=broker_clients)
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


@pytest.fixture(scope="module", autouse=True)
def broker_clients() -> Iterator[None]:
    """One admin broker session for provisioning the tenants' gateways; removes them at the end."""
    with broker.admin_session() as dynsec:
        _DYNSEC.append(dynsec)
        try:
            yield
        finally:
            _DYNSEC.remove(dynsec)
            for gateway_id in _PROVISIONED:
                broker.remove_gateway(dynsec, gateway_id)
            _PROVISIONED.clear()


@pytest.fixture(scope="module", autouse=True)
def public_base_url() -> Iterator[None]:
    """EPCIS identifiers are minted under a public base URL (a local one is refused with 409)."""
    before = os.environ.get("AGRITRACE_PUBLIC_BASE_URL")
    os.environ["AGRITRACE_PUBLIC_BASE_URL"] = "https://trace.example.cn"
    get_settings.cache_clear()
    yield
    if before is None:
        os.environ.pop("AGRITRACE_PUBLIC_BASE_URL")
    else:
        os.environ["AGRITRACE_PUBLIC_BASE_URL"] = before
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app()
    # Hundreds of requests from one address, many with expired or revoked tokens: the rate limits
    # have tests of their own (tests/security/test_rate_limits.py).
    app.state.public_rate_limiter.burst = 1_000_000
    app.state.auth_failure_limiter.burst = 1_000_000
    with TestClient(app) as c:
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
    world = make_world(conn, broker_clients=case.broker)
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
        # Public routes (a code printed on a box) are open to anyone by design: the code is the key.
        if case.url(a) == case.url(b) or case.expect == public(case.expect["admin"]):
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
