"""EPCIS 2.0 export (issue 17): documents GS1's schema and SHACL shapes accept, events that say what
happened, and eventIDs an independent implementation of the CBV 2.0 hash recomputes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agritrace.db import Conn
from agritrace.settings import get_settings
from agritrace.trace import epcis, epcis_hash
from agritrace.trace import service as trace_service

from .conftest import GTIN
from .epcis_validators import STANDARDS, assert_valid, reference_hashes, schema_errors, shacl_report

BASE = "https://trace.example.cn"


@pytest.fixture(autouse=True)
def public_base_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AGRITRACE_PUBLIC_BASE_URL", BASE)
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("AGRITRACE_PUBLIC_BASE_URL")
    get_settings.cache_clear()


def _events(doc: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in doc["epcisBody"]["eventList"] if kind is None or e["type"] == kind]


@pytest.fixture
def merged_lot(
    client: TestClient, admin: dict[str, str], conn: Conn, mango_lot: dict[str, Any]
) -> dict[str, Any]:
    """The mango lot's 500 kg child merged with another 400 kg lot at a given business time, shipped
    (an offset of +07:00 and no event_tz), the harvest batch recalled afterwards."""
    other = trace_service.create_batch(
        conn, product="mango", cooperative_id=mango_lot["cooperative_id"], quantity=Decimal(400), unit="kg"
    )
    merged = client.post(
        "/api/v1/batches/merge",
        json={
            "batch_ids": [mango_lot["child"]["id"], other["id"]],
            "event_time": "2026-07-13T08:30:00+08:00",
        },
        headers=admin,
    )
    assert merged.status_code == 201, merged.text
    lot = merged.json()
    shipped = client.post(
        f"/api/v1/batches/{lot['id']}/events",
        json={
            "biz_step": "shipping",
            "disposition": "in_transit",
            "event_time": "2026-07-14T09:00:00+07:00",
            "place": "田阳包装厂",
            "documents": [{"type": "desadv", "id": "ASN-1"}],
        },
        headers=admin,
    )
    assert shipped.status_code == 201, shipped.text
    assert shipped.json()["event_tz"] == "+07:00"
    trace_service.recall_batch(
        conn, batch_id=mango_lot["parent"]["id"], reason="农药残留超标", recalled_by="regulator"
    )
    return {**mango_lot, "merged": lot, "other": other}


def test_a_lot_with_split_merge_recall_custody_and_certificates_is_valid_and_says_what_happened(
    client: TestClient, admin: dict[str, str], merged_lot: dict[str, Any], artifacts: Path
) -> None:
    resp = client.get(f"/api/v1/batches/{merged_lot['merged']['id']}/epcis", headers=admin)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/ld+json"
    doc = resp.json()
    (artifacts / "epcis-merged-lot.jsonld").write_text(json.dumps(doc, ensure_ascii=False, indent=2))
    assert_valid(doc)
    assert "127.0.0.1" not in resp.text and "localhost" not in resp.text

    # One TransformationEvent per split and per merge, at the business time, with quantities.
    transformations = _events(doc, "TransformationEvent")
    assert len(transformations) == 2
    merge = next(t for t in transformations if len(t["inputQuantityList"]) == 2)
    assert merge["eventTime"] == "2026-07-13T08:30:00.000+08:00" and merge["eventTimeZoneOffset"] == "+08:00"
    assert sorted(q["quantity"] for q in merge["inputQuantityList"]) == [400, 500]
    assert merge["outputQuantityList"] == [
        {"epcClass": f"{BASE}/lots/{merged_lot['merged']['lot']}", "quantity": 900, "uom": "KGM"}
    ]
    assert merge["transformationID"].startswith("urn:uuid:")
    split = next(t for t in transformations if t is not merge)
    assert split["outputQuantityList"][0]["epcClass"].startswith(f"https://id.gs1.org/01/{GTIN}/10/")
    assert split["transformationID"] != merge["transformationID"]

    # CBV vocabulary only: the recall is a disposition on a standard step.
    steps = {e.get("bizStep") for e in doc["epcisBody"]["eventList"]}
    assert not steps & {"recalling", "transforming"}
    recall = next(e for e in _events(doc) if e.get("disposition") == "recalled")
    assert recall["bizStep"] == "holding"

    shipping = next(e for e in _events(doc) if e.get("bizStep") == "shipping")
    assert shipping["eventTimeZoneOffset"] == "+07:00" and shipping["eventTime"].endswith("+07:00")
    assert shipping["readPoint"]["id"].startswith(f"{BASE}/cooperatives/")
    assert shipping["bizTransactionList"] == [
        {"bizTransaction": "urn:agritrace:doc:desadv:ASN-1", "type": "desadv"}
    ]
    # Certificates of the lot and its sources (三品一标 and the 合格证).
    assert any("/certificates/green_food/" in c for c in shipping["certificationInfo"])
    assert any(c.endswith("/compliance-certificate") for c in shipping["certificationInfo"])

    # The serialized box: commissioned as an SGTIN.
    commissioned = [e for e in _events(doc) if e.get("epcList")]
    assert commissioned[0]["action"] == "ADD" and commissioned[0]["bizStep"] == "commissioning"
    assert commissioned[0]["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/{merged_lot['code']}"]

    # Custody: the cold room's summary as a sensor element.
    sensed = [e for e in _events(doc) if e.get("sensorElementList")]
    assert len(sensed) == 1
    element = sensed[0]["sensorElementList"][0]
    report = element["sensorReport"][0]
    assert report["type"] == "Temperature" and report["uom"] == "CEL"
    assert 10.7 <= report["minValue"] <= report["meanValue"] <= report["maxValue"] <= 12.3
    assert 10.7 <= report["agt:meanKineticTemperature"] <= 12.3
    assert element["sensorMetadata"]["deviceID"] == f"{BASE}/channels/{merged_lot['channel_id']}"
    assert "/readings?start=" in element["sensorMetadata"]["rawData"]

    # eventIDs: the CBV 2.0 hash, as the reference implementation recomputes it.
    assert [e["eventID"] for e in doc["epcisBody"]["eventList"]] == reference_hashes(doc)
    times = [datetime.fromisoformat(e["eventTime"]) for e in doc["epcisBody"]["eventList"]]
    assert times == sorted(times)


def test_the_validators_bite(client: TestClient, admin: dict[str, str], merged_lot: dict[str, Any]) -> None:
    doc = client.get(f"/api/v1/batches/{merged_lot['merged']['id']}/epcis", headers=admin).json()
    merge = next(e for e in _events(doc, "TransformationEvent") if len(e["inputQuantityList"]) == 2)
    shipping = next(e for e in _events(doc) if e.get("bizStep") == "shipping")
    shipping["bizStep"] = "recalling"  # what the export used to say
    assert schema_errors(doc)
    shipping["bizStep"] = "shipping"
    del merge["eventTime"]
    assert not shacl_report(doc)[0]
    changed = _events(doc, "ObjectEvent")[0]
    changed["eventTimeZoneOffset"] = "+09:00"
    assert epcis_hash.event_hash(changed, epcis.NAMESPACES) != changed["eventID"]


def test_units_are_rec20_and_jin_is_converted(conn: Conn) -> None:
    coop = trace_service.ensure_cooperative(conn, name=f"茶叶社-{time.monotonic_ns() % 10**9}")
    batch = trace_service.create_batch(conn, product="tea", cooperative_id=coop, quantity=600, unit="斤")
    odd = trace_service.create_batch(conn, product="tea", cooperative_id=coop, quantity=3, unit="筐")
    for b in (batch, odd):
        trace_service.add_event(
            conn, batch_id=b["id"], biz_step="commissioning", event_time=datetime(2026, 4, 1, 1, tzinfo=UTC)
        )
    doc = epcis.export_batch(conn, batch_id=batch["id"])
    assert_valid(doc)
    assert _events(doc)[0]["quantityList"] == [
        {"epcClass": f"{BASE}/lots/{batch['lot']}", "quantity": 300, "uom": "KGM"}
    ]
    # A unit without a Rec 20 code: no number that would read as a count of instances.
    assert _events(epcis.export_batch(conn, batch_id=odd["id"]))[0]["quantityList"] == [
        {"epcClass": f"{BASE}/lots/{odd['lot']}"}
    ]


def test_a_cooperative_with_a_gln_has_its_places_as_sglns(conn: Conn) -> None:
    coop = trace_service.ensure_cooperative(conn, name=f"GLN社-{time.monotonic_ns() % 10**9}")
    conn.execute("UPDATE cooperatives SET gln = '6901234000017' WHERE id = %s", (coop,))
    batch = trace_service.create_batch(conn, product="citrus", cooperative_id=coop, quantity=1, unit="t")
    trace_service.add_event(
        conn,
        batch_id=batch["id"],
        biz_step="storing",
        place="1号冷库",
        event_time=datetime(2026, 4, 1, tzinfo=UTC),
    )
    event = _events(epcis.export_batch(conn, batch_id=batch["id"]))[0]
    assert event["readPoint"]["id"].startswith("https://id.gs1.org/414/6901234000017/254/")
    assert event["bizLocation"]["id"] == "https://id.gs1.org/414/6901234000017"
    assert event["quantityList"][0]["uom"] == "TNE"


@pytest.mark.parametrize(
    "body",
    [
        {"biz_step": "recalling", "event_time": "2026-07-12T09:00:00Z"},
        {"biz_step": "transforming", "event_time": "2026-07-12T09:00:00Z"},
        {"biz_step": "storing", "event_time": "2026-07-12T09:00:00Z", "event_tz": "+25:00"},
        {"biz_step": "storing", "event_time": "2026-07-12T09:00:00Z", "event_tz": "+08:75"},
        {"biz_step": "storing", "event_time": "2026-07-12T09:00:00Z", "event_tz": "08:00"},
    ],
)
def test_non_cbv_steps_and_impossible_offsets_are_refused(
    client: TestClient, admin: dict[str, str], mango_lot: dict[str, Any], body: dict[str, Any]
) -> None:
    resp = client.post(f"/api/v1/batches/{mango_lot['child']['id']}/events", json=body, headers=admin)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"


def test_a_local_base_url_is_refused_not_exported(
    client: TestClient, admin: dict[str, str], mango_lot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGRITRACE_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    get_settings.cache_clear()
    resp = client.get(f"/api/v1/batches/{mango_lot['child']['id']}/epcis", headers=admin)
    assert resp.status_code == 409 and resp.headers["content-type"] == "application/problem+json"
    assert "AGRITRACE_PUBLIC_BASE_URL" in resp.json()["detail"]


@pytest.mark.parametrize("name", ["SensorDataExample1.jsonld", "Example_9.6.4-TransformationEvent.jsonld"])
def test_gs1_examples_hash_alike_in_both_implementations(name: str) -> None:
    doc = json.loads((STANDARDS / name).read_text())
    assert_valid(doc)
    ours = [epcis_hash.event_hash(e, epcis_hash.context_namespaces(doc["@context"])) for e in _events(doc)]
    assert ours == reference_hashes(doc)
    # GS1's documents carry eventIDs that neither implementation reproduces (they predate the
    # algorithm's final form); see docs/epcis.md. Recorded, so a corrected file is noticed.
    assert all(e["eventID"] not in ours for e in _events(doc))
