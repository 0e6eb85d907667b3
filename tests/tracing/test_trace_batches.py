"""Packing houses register batches, split and merge them, record events and certificates; regulators
follow lineage both ways; cooperatives only ever see their own batches."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from agritrace.db import Conn
from agritrace.errors import Conflict, InvalidInput
from agritrace.settings import get_settings
from agritrace.trace import epcis
from agritrace.trace import service as trace_service

from .conftest import cooperative_token

EPCIS_SCHEMA = Path("/work/shared/standards/epcis/EPCIS-JSON-Schema.json")


def test_packing_house_registers_a_batch_and_another_cooperative_gets_404(
    client: TestClient, conn: Conn
) -> None:
    mine = cooperative_token(conn, "右江芒果社")
    theirs = cooperative_token(conn, "田阳芒果社")
    resp = client.post(
        "/api/v1/batches",
        json={
            "product": "mango",
            "variety": "桂七",
            "harvest_date": "2026-07-01",
            "quantity": "120.5",
            "unit": "kg",
        },
        headers=mine,
    )
    assert resp.status_code == 201, resp.text
    batch_id = resp.json()["batch_id"]
    assert client.get(f"/api/v1/batches/{batch_id}", headers=mine).json()["cooperative"] == "右江芒果社"
    other = client.get(f"/api/v1/batches/{batch_id}", headers=theirs)
    assert other.status_code == 404 and other.headers["content-type"] == "application/problem+json"
    assert (
        client.post(f"/api/v1/batches/{batch_id}/codes", json={"count": 1}, headers=theirs).status_code == 404
    )
    assert client.get("/api/v1/batches", headers=theirs).json()["items"] == []
    assert client.get("/api/v1/batches").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"product": "durian", "cooperative": "x"},
        {"product": "mango", "cooperative": "x", "gtin": "06901234567891"},
        {"product": "mango", "cooperative": "x", "gtin": "12345"},
        {"product": "mango", "cooperative": "x", "lot": "has space"},
        {"product": "mango", "cooperative": "x", "quantity": -1},
        {"product": "mango"},
    ],
)
def test_bad_batches_are_refused_as_problem_json(
    client: TestClient, admin: dict[str, str], body: dict[str, Any]
) -> None:
    resp = client.post("/api/v1/batches", json=body, headers=admin)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"


def test_lineage_is_queryable_upstream_and_downstream(
    client: TestClient, admin: dict[str, str], conn: Conn
) -> None:
    coop = trace_service.ensure_cooperative(conn, name="砂糖橘社")
    a = trace_service.create_batch(conn, product="citrus", cooperative_id=coop, quantity=100, unit="kg")
    b = trace_service.create_batch(conn, product="citrus", cooperative_id=coop, quantity=50, unit="kg")
    resp = client.post("/api/v1/batches/merge", json={"batch_ids": [a["id"], b["id"]]}, headers=admin)
    assert resp.status_code == 201, resp.text
    mixed = resp.json()
    assert float(mixed["quantity"]) == 150
    parts = client.post(
        f"/api/v1/batches/{mixed['id']}/split",
        json={"parts": [{"quantity": 75}, {"quantity": 75}]},
        headers=admin,
    ).json()["items"]
    lineage = client.get(f"/api/v1/batches/{a['id']}/lineage", headers=admin).json()
    assert [x["id"] for x in lineage["downstream"]] == [mixed["id"], parts[0]["id"], parts[1]["id"]]
    up = client.get(f"/api/v1/batches/{parts[0]['id']}/lineage", headers=admin).json()["upstream"]
    assert {x["id"] for x in up} == {mixed["id"], a["id"], b["id"]}
    with pytest.raises(Conflict):
        trace_service._link(conn, parent_id=parts[0]["id"], child_id=a["id"], quantity=None)


def test_merging_different_products_is_refused(conn: Conn) -> None:
    coop = trace_service.ensure_cooperative(conn, name="mixed")
    a = trace_service.create_batch(conn, product="citrus", cooperative_id=coop)
    b = trace_service.create_batch(conn, product="tea", cooperative_id=coop)
    with pytest.raises(InvalidInput):
        trace_service.merge_batches(conn, batch_ids=[a["id"], b["id"]])


VALID_NUMBERS = {
    "pollution_free": "WGH-GX-20-01234",
    "green_food": "LB-15-20110112345A",
    "organic": "124OP2100123",
    "geographical_indication": "AGI01426",
}


@pytest.mark.parametrize(("kind", "number"), VALID_NUMBERS.items())
def test_each_certificate_kind_accepts_its_number_format(conn: Conn, kind: str, number: str) -> None:
    coop = trace_service.ensure_cooperative(conn, name=f"cert-{kind}")
    cert = trace_service.add_certificate(
        conn,
        kind=kind,
        number=number.lower(),
        issuer="x",
        valid_from=date(2025, 1, 1),
        valid_to=date(2027, 1, 1),
        holder_cooperative_id=coop,
    )
    assert cert["number"] == number


@given(kind=st.sampled_from(list(VALID_NUMBERS)), number=st.text(max_size=30))
def test_certificate_number_check_never_accepts_another_kinds_format_or_garbage(
    kind: str, number: str
) -> None:
    pattern = trace_service.CERTIFICATE_FORMATS[kind]
    for other, example in VALID_NUMBERS.items():
        assert bool(pattern.match(example)) == (other == kind)
    if pattern.match(number.strip().upper()):
        assert number.strip().upper()[:2] in ("WG", "LB", "AG") or "OP" in number.upper()


def test_certificate_valid_to_before_valid_from_is_refused(
    client: TestClient, admin: dict[str, str], conn: Conn
) -> None:
    coop = trace_service.ensure_cooperative(conn, name="dates")
    batch = trace_service.create_batch(conn, product="tea", cooperative_id=coop)
    resp = client.post(
        f"/api/v1/batches/{batch['id']}/certificates",
        json={
            "kind": "organic",
            "number": "124OP2100999",
            "issuer": "x",
            "valid_from": "2026-01-01",
            "valid_to": "2025-01-01",
        },
        headers=admin,
    )
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"


def test_compliance_certificate_needs_every_required_field(
    client: TestClient, admin: dict[str, str], conn: Conn
) -> None:
    coop = trace_service.ensure_cooperative(conn, name="合格证")
    batch = trace_service.create_batch(conn, product="tea", cooperative_id=coop)
    full = {
        "product_name": "六堡茶",
        "quantity": 20,
        "unit": "kg",
        "origin": "梧州市苍梧县",
        "issued_at": "2026-05-01T08:00:00+08:00",
        "issuer": "李四",
        "contact": "138 0000 0000",
    }
    for field in full:
        partial = {k: v for k, v in full.items() if k != field}
        resp = client.put(
            f"/api/v1/batches/{batch['id']}/compliance-certificate", json=partial, headers=admin
        )
        assert resp.status_code == 422, field
    bad_contact = client.put(
        f"/api/v1/batches/{batch['id']}/compliance-certificate",
        json={**full, "contact": "call me"},
        headers=admin,
    )
    assert bad_contact.status_code == 422
    ok = client.put(f"/api/v1/batches/{batch['id']}/compliance-certificate", json=full, headers=admin)
    assert ok.status_code == 200, ok.text


def test_events_export_as_valid_epcis_2_json_ld(
    client: TestClient,
    admin: dict[str, str],
    mango_lot: dict[str, Any],
    artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGRITRACE_PUBLIC_BASE_URL", "https://trace.example.cn")
    get_settings.cache_clear()
    child = mango_lot["child"]["id"]
    resp = client.post(
        f"/api/v1/batches/{child}/events",
        json={
            "biz_step": "shipping",
            "disposition": "in_transit",
            "event_time": "2026-07-12T09:00:00+08:00",
            "place": "田阳包装厂",
            "actor": "冷链物流",
            "documents": [{"type": "desadv", "id": "ASN-1"}],
        },
        headers=admin,
    )
    assert resp.status_code == 201, resp.text
    bad = client.post(
        f"/api/v1/batches/{child}/events",
        json={"biz_step": "teleporting", "event_time": "2026-07-12T09:00:00Z"},
        headers=admin,
    )
    assert bad.status_code == 422
    doc = client.get(f"/api/v1/batches/{child}/epcis", headers=admin)
    assert doc.status_code == 200 and doc.headers["content-type"] == "application/ld+json"
    body = doc.json()
    (artifacts / "epcis-mango-lot.jsonld").write_text(json.dumps(body, ensure_ascii=False, indent=2))
    schema = json.loads(EPCIS_SCHEMA.read_text())
    jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)
    kinds = {e["type"] for e in body["epcisBody"]["eventList"]}
    assert kinds == {"ObjectEvent", "TransformationEvent"}
    shipping = next(e for e in body["epcisBody"]["eventList"] if e.get("bizStep") == "shipping")
    assert shipping["bizStep"] == "shipping" and shipping["bizTransactionList"][0]["type"] == "desadv"
    assert shipping["quantityList"][0]["epcClass"].startswith("https://id.gs1.org/01/")
    # The schema bites: an ObjectEvent without its action is refused.
    del shipping["action"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)


def test_epcis_export_of_a_batch_without_gtin_uses_our_lot_uri(
    conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGRITRACE_PUBLIC_BASE_URL", "https://trace.example.cn")
    get_settings.cache_clear()
    coop = trace_service.ensure_cooperative(conn, name="no-gtin")
    batch = trace_service.create_batch(conn, product="tea", cooperative_id=coop, quantity=3, unit="kg")
    trace_service.add_event(
        conn, batch_id=batch["id"], biz_step="commissioning", event_time=datetime(2026, 4, 1, tzinfo=UTC)
    )
    doc = epcis.export_batch(conn, batch_id=batch["id"])
    jsonschema.validate(doc, json.loads(EPCIS_SCHEMA.read_text()), cls=jsonschema.Draft7Validator)
    assert doc["epcisBody"]["eventList"][0]["quantityList"][0]["uom"] == "KGM"
    assert doc["epcisBody"]["eventList"][0]["quantityList"][0]["epcClass"].startswith(
        "https://trace.example.cn/lots/"
    )


def test_custody_needs_a_channel_of_the_same_cooperative(
    client: TestClient, conn: Conn, mango_lot: dict[str, Any]
) -> None:
    other = cooperative_token(conn, "另一个社")
    other_batch = client.post("/api/v1/batches", json={"product": "mango"}, headers=other).json()
    resp = client.post(
        f"/api/v1/batches/{other_batch['batch_id']}/custody",
        json={"channel_id": mango_lot["channel_id"], "started_at": "2026-07-10T00:00:00Z"},
        headers=other,
    )
    assert resp.status_code == 404


def test_demo_data_loads_idempotently(conn: Conn) -> None:
    from agritrace.trace import demo

    first = demo.load(conn)
    second = demo.load(conn)
    assert first == second
    assert conn.execute("SELECT count(*) AS n FROM codes").fetchone() == {"n": 2}


def test_packing_more_than_a_batch_holds_is_refused(
    client: TestClient, admin: dict[str, str], mango_lot: dict[str, Any]
) -> None:
    parent = mango_lot["parent"]["id"]  # 2,000 kg, 500 kg already packed
    too_much = client.post(
        f"/api/v1/batches/{parent}/split",
        json={"parts": [{"quantity": 1000}, {"quantity": 600}]},
        headers=admin,
    )
    assert too_much.status_code == 422 and "do not fit" in too_much.json()["detail"]
    fits = client.post(
        f"/api/v1/batches/{parent}/split",
        json={"parts": [{"quantity": 1000}, {"quantity": 500}]},
        headers=admin,
    )
    assert fits.status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/events", {"biz_step": "packing", "event_time": "2026-07-12T09:00:00"}),
        (
            "post",
            "/custody",
            {"channel_id": 1, "started_at": "2026-07-12T09:00:00Z", "ended_at": "2026-07-12T10:00:00"},
        ),
        ("post", "/custody", {"channel_id": 2**40, "started_at": "2026-07-12T09:00:00Z"}),
        ("post", "/split", {"parts": []}),
        ("post", "/codes", {"count": 0}),
        ("post", "/codes", {"count": 10**9}),
        ("get", "/../../batches?limit=-1", None),
        ("get", "/../../codes/flagged?limit=0", None),
    ],
)
def test_bad_input_is_a_4xx_problem_never_a_500(
    client: TestClient,
    admin: dict[str, str],
    mango_lot: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    url = f"/api/v1/batches/{mango_lot['child']['id']}{path}"
    resp = client.request(method.upper(), url, json=body, headers=admin)
    assert 400 <= resp.status_code < 500, (url, resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/problem+json"


def test_a_given_lot_number_is_unique(client: TestClient, admin: dict[str, str]) -> None:
    body = {"product": "citrus", "cooperative": "沃柑社", "lot": "WOGAN-2026-01"}
    assert client.post("/api/v1/batches", json=body, headers=admin).status_code == 201
    again = client.post("/api/v1/batches", json=body, headers=admin)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"


def test_text_with_nul_characters_is_refused_not_a_500(client: TestClient, admin: dict[str, str]) -> None:
    resp = client.post("/api/v1/batches", json={"product": "tea", "cooperative": "茶\x00社"}, headers=admin)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
