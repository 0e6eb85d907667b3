"""Export a batch's events as a GS1 EPCIS 2.0 JSON-LD document (ObjectEvents, plus TransformationEvents
for split and merge)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from agritrace.db import Conn
from agritrace.settings import get_settings
from agritrace.trace import service as trace_service

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# Our own terms (place and actor as free text) live under a namespace of their own, as EPCIS extensions do.
AGT_NS = "https://agritrace.dev/epcis/"
# CBV 2.0 business transaction types; anything else is exported as a generic purchase-order-free reference.
CBV_DOCUMENT_TYPES = {
    "po",
    "poc",
    "bol",
    "desadv",
    "inv",
    "pedigree",
    "prodorder",
    "recadv",
    "rma",
    "testprd",
    "testrsl",
    "upevt",
}
UNITS = {"kg": "KGM", "t": "TNE", "g": "GRM", "box": "XBX", "case": "XCS"}


def epc_class(batch: dict[str, Any]) -> str:
    """The lot's class identifier: a GS1 Digital Link URI with a GTIN, our own URI otherwise."""
    if batch["gtin"]:
        return f"https://id.gs1.org/01/{batch['gtin']}/10/{quote(batch['lot'], safe='')}"
    return f"{get_settings().public_base_url.rstrip('/')}/lots/{quote(batch['lot'], safe='')}"


def _quantity(batch: dict[str, Any], quantity: Any = None) -> dict[str, Any]:
    q: dict[str, Any] = {"epcClass": epc_class(batch)}
    amount = quantity if quantity is not None else batch["quantity"]
    if amount is not None:
        q["quantity"] = float(amount)
        if batch["unit"] in UNITS:
            q["uom"] = UNITS[batch["unit"]]
    return q


def _document(doc: dict[str, str]) -> dict[str, str]:
    kind = doc.get("type", "")
    ident = str(doc.get("id", ""))
    uri = (
        ident
        if ":" in ident
        else f"urn:agritrace:doc:{quote(kind or 'doc', safe='')}:{quote(ident, safe='')}"
    )
    out = {"bizTransaction": uri}
    if kind in CBV_DOCUMENT_TYPES:
        out["type"] = kind
    return out


def _time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def export_batch(conn: Conn, *, batch_id: int, cooperative_id: int | None = None) -> dict[str, Any]:
    """The EPCIS 2.0 document of a batch's events and of the transformations that made or used it."""
    batch = trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    events: list[dict[str, Any]] = []
    for e in trace_service.list_events(conn, batch_ids=[batch_id]):
        event: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventID": f"{get_settings().public_base_url.rstrip('/')}/events/{e['id']}",
            "eventTime": _time(e["event_time"]),
            "eventTimeZoneOffset": e["event_tz"],
            "action": "ADD" if e["biz_step"] == "commissioning" else "OBSERVE",
            "quantityList": [_quantity(batch)],
            "bizStep": e["biz_step"],
        }
        if e["disposition"]:
            event["disposition"] = e["disposition"]
        if e["documents"]:
            event["bizTransactionList"] = [_document(d) for d in e["documents"]]
        if e["place"]:
            event["agt:place"] = e["place"]
        if e["actor"]:
            event["agt:actor"] = e["actor"]
        events.append(event)
    # Split and merge are transformations: inputs -> outputs, with quantities where known.
    edges = conn.execute(
        """SELECT l.*, p.lot AS p_lot, p.gtin AS p_gtin, p.unit AS p_unit, p.quantity AS p_quantity,
                  c.lot AS c_lot, c.gtin AS c_gtin, c.unit AS c_unit, c.quantity AS c_quantity
             FROM batch_lineage l JOIN batches p ON p.id = l.parent_id JOIN batches c ON c.id = l.child_id
            WHERE l.parent_id = %s OR l.child_id = %s ORDER BY l.created_at""",
        (batch_id, batch_id),
    ).fetchall()
    for edge in edges:
        parent = {
            "lot": edge["p_lot"],
            "gtin": edge["p_gtin"],
            "unit": edge["p_unit"],
            "quantity": edge["p_quantity"],
        }
        child = {
            "lot": edge["c_lot"],
            "gtin": edge["c_gtin"],
            "unit": edge["c_unit"],
            "quantity": edge["c_quantity"],
        }
        events.append(
            {
                "type": "TransformationEvent",
                "eventTime": _time(edge["created_at"]),
                "eventTimeZoneOffset": "+08:00",
                "inputQuantityList": [_quantity(parent, edge["quantity"])],
                "outputQuantityList": [_quantity(child)],
                "bizStep": "packing",
            }
        )
    events.sort(key=lambda ev: ev["eventTime"])
    return {
        "@context": [EPCIS_CONTEXT, {"agt": AGT_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(datetime.now(UTC)),
        "epcisBody": {"eventList": events},
    }
