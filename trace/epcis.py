"""A lot's history as a GS1 EPCIS 2.0 JSON-LD document (docs/epcis.md).

What is in it, for the lot and every lot upstream of it (as on the consumer page):
- an ObjectEvent per recorded event (CBV 2.0 business steps only; a recall is disposition `recalled`),
  with the lot's quantity in UN/ECE Rec 20 units, places as SGLNs (the cooperative's GLN) or stable
  URIs under the public base URL, the event's own UTC offset, and `certificationInfo` (三品一标, 合格证);
- a TransformationEvent per split or merge (`transformationID`, inputs -> outputs with quantities) at
  the business time the cooperative gave;
- an ObjectEvent (ADD, commissioning) per issuance of serialized boxes: their SGTINs;
- an ObjectEvent per ended custody interval with a `sensorElementList`: min, max, mean, MKT and time
  out of band of the cold-chain summary (agritrace.coldchain.summary), the channel as device, a link
  to the raw series;
- `eventID` = the CBV 2.0 event hash (trace/epcis_hash.py), which anyone holding the event can recompute.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from agritrace.coldchain import summary as coldchain_summary
from agritrace.db import Conn
from agritrace.errors import Conflict
from agritrace.settings import get_settings
from agritrace.trace import epcis_hash
from agritrace.trace import service as trace_service

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# Our own terms live under a namespace of their own, as EPCIS extensions do.
AGT_NS = "https://agritrace.dev/epcis/"
NAMESPACES = {"agt": AGT_NS}
CONTEXT: list[Any] = [EPCIS_CONTEXT, NAMESPACES]
# CBV 2.0 business transaction types; anything else is exported without a type.
CBV_DOCUMENT_TYPES = {
    "po", "poc", "bol", "cert", "desadv", "inv", "pedigree", "prodorder", "recadv", "rma", "testprd",
    "testrsl", "upevt",
}  # fmt: skip
# Units as UN/ECE Recommendation 20 codes, with the factor to that unit: 斤 and 两 are converted to
# kilograms, not relabelled. A unit not listed here exports its quantity not at all (a bare number
# would mean a count of instances).
UNITS: dict[str, tuple[str, Decimal]] = {
    "kg": ("KGM", Decimal(1)),
    "公斤": ("KGM", Decimal(1)),
    "千克": ("KGM", Decimal(1)),
    "斤": ("KGM", Decimal("0.5")),
    "市斤": ("KGM", Decimal("0.5")),
    "两": ("KGM", Decimal("0.05")),
    "g": ("GRM", Decimal(1)),
    "克": ("GRM", Decimal(1)),
    "t": ("TNE", Decimal(1)),
    "吨": ("TNE", Decimal(1)),
    "lb": ("LBR", Decimal(1)),
    "box": ("XBX", Decimal(1)),
    "箱": ("XBX", Decimal(1)),
    "case": ("XCS", Decimal(1)),
}
CERTIFICATE_KINDS = ("pollution_free", "green_food", "organic", "geographical_indication")


def base_url() -> str:
    """The public base URL identifiers are minted under; a local address is refused (409)."""
    base = get_settings().public_base_url.rstrip("/")
    host = (urlsplit(base).hostname or "").lower()
    local = host in ("", "localhost") or host.endswith((".local", ".localhost", ".internal"))
    try:
        address = ipaddress.ip_address(host)
        local = local or not address.is_global
    except ValueError:
        pass
    if local:
        raise Conflict(
            f"AGRITRACE_PUBLIC_BASE_URL is {base!r}, a local address: EPCIS identifiers (lots, places, "
            "certificates) must be stable public URIs; set it to the deployment's public URL"
        )
    return base


def epc_class(batch: dict[str, Any], base: str) -> str:
    """The lot's class identifier: a GS1 Digital Link URI (LGTIN) with a GTIN, our own URI otherwise."""
    if batch["gtin"]:
        return f"https://id.gs1.org/01/{batch['gtin']}/10/{quote(batch['lot'], safe='')}"
    return f"{base}/lots/{quote(batch['lot'], safe='')}"


def quantity_element(epc: str, amount: Any, unit: str | None) -> dict[str, Any]:
    """A quantityElement; the amount converted to its Rec 20 unit, left out when the unit is unknown."""
    q: dict[str, Any] = {"epcClass": epc}
    known = UNITS.get((unit or "").strip().lower()) or UNITS.get((unit or "").strip())
    if amount is not None and known is not None:
        value = (Decimal(str(amount)) * known[1]).normalize()
        q["quantity"] = int(value) if value == value.to_integral_value() else float(value)
        q["uom"] = known[0]
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


def local_time(t: datetime, offset: str) -> str:
    """The time as the place it happened wrote it (`2026-07-12T09:00:00+08:00`), milliseconds kept."""
    sign = -1 if offset[0] == "-" else 1
    tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    text = t.astimezone(tz).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset in ("+00:00", "-00:00") else text


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def place_id(base: str, cooperative: dict[str, Any], place: str) -> str:
    """A place: an SGLN (the cooperative's GLN, the place as a GLN extension) or a stable URI of ours."""
    if cooperative.get("gln"):
        # AI 254 holds up to 20 characters of GS1's CSET 82: a digest of the place's name.
        extension = hashlib.sha256(place.encode()).hexdigest()[:12]
        return f"https://id.gs1.org/414/{cooperative['gln']}/254/{extension}"
    return f"{base}/cooperatives/{cooperative['id']}/places/{quote(place, safe='')}"


def _site(base: str, cooperative: dict[str, Any]) -> str:
    if cooperative.get("gln"):
        return f"https://id.gs1.org/414/{cooperative['gln']}"
    return f"{base}/cooperatives/{cooperative['id']}"


def certification_info(conn: Conn, base: str, batch_id: int) -> list[str]:
    """URIs of the 三品一标 certificates covering the lot and of its 承诺达标合格证."""
    out = [
        f"{base}/certificates/{c['kind']}/{quote(c['number'], safe='')}"
        for c in trace_service.certificates_for(conn, batch_id=batch_id)
        if c["status"] == "valid"
    ]
    compliance = conn.execute(
        """WITH RECURSIVE up(id) AS (SELECT %s::bigint
               UNION SELECT l.parent_id FROM batch_lineage l JOIN up ON l.child_id = up.id)
           SELECT b.lot FROM compliance_certificates c JOIN batches b ON b.id = c.batch_id
            WHERE c.batch_id IN (SELECT id FROM up) ORDER BY b.id""",
        (batch_id,),
    ).fetchall()
    out += [f"{base}/lots/{quote(r['lot'], safe='')}/compliance-certificate" for r in compliance]
    return sorted(set(out))


def finish(event: dict[str, Any]) -> dict[str, Any]:
    """Gives an event its eventID: the CBV 2.0 event hash of its content."""
    return {"eventID": epcis_hash.event_hash(event, NAMESPACES), **event}


def document(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _utc(datetime.now(UTC)),
        "epcisBody": {"eventList": events},
    }


_HISTORY = """
WITH RECURSIVE up(id) AS (SELECT %s::bigint UNION SELECT l.parent_id FROM batch_lineage l JOIN up ON l.child_id = up.id)
SELECT b.*, c.name AS cooperative, c.gln FROM batches b JOIN cooperatives c ON c.id = b.cooperative_id
 WHERE b.id IN (SELECT id FROM up) ORDER BY b.id
"""
_TRANSFORMATIONS = """
SELECT l.transformation_id, l.parent_id, l.child_id, l.quantity, l.event_time, l.event_tz
  FROM batch_lineage l
 WHERE l.transformation_id IN (SELECT transformation_id FROM batch_lineage
                                WHERE child_id = ANY(%(ids)s) OR parent_id = %(id)s)
 ORDER BY l.event_time, l.parent_id, l.child_id
"""
_CUSTODY = """
SELECT k.id, k.batch_id, k.channel_id, k.started_at, k.ended_at, ch.name, ch.asset_kind, ch.gateway_id,
       coalesce(ch.asset_name, ch.gateway_id || ' ' || ch.name) AS place, coldchain_metric(ch.unit) AS metric
  FROM batch_custody k JOIN channels ch ON ch.id = k.channel_id
 WHERE k.batch_id = ANY(%s) AND k.ended_at IS NOT NULL AND k.ended_at <= now()
 ORDER BY k.started_at, k.id
"""


def lot_events(conn: Conn, *, batch_id: int, cooperative_id: int | None = None) -> list[dict[str, Any]]:
    """Every EPCIS event of the lot and of the lots upstream of it, each with its eventID, in time order."""
    trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    base = base_url()
    batches = {b["id"]: b for b in conn.execute(_HISTORY, (batch_id,)).fetchall()}
    cooperatives = {
        b["cooperative_id"]: {"id": b["cooperative_id"], "gln": b["gln"]} for b in batches.values()
    }
    ids = list(batches)
    certificates = {i: certification_info(conn, base, i) for i in ids}
    timed: list[tuple[datetime, dict[str, Any]]] = []

    for e in trace_service.list_events(conn, batch_ids=ids):
        b = batches[e["batch_id"]]
        coop = cooperatives[b["cooperative_id"]]
        event: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventTime": local_time(e["event_time"], e["event_tz"]),
            "eventTimeZoneOffset": e["event_tz"],
        }
        if certificates[b["id"]]:
            event["certificationInfo"] = certificates[b["id"]]
        event["quantityList"] = [quantity_element(epc_class(b, base), b["quantity"], b["unit"])]
        event["action"] = "ADD" if e["biz_step"] == "commissioning" else "OBSERVE"
        event["bizStep"] = e["biz_step"]
        if e["disposition"]:
            event["disposition"] = e["disposition"]
        if e["place"]:
            event["readPoint"] = {"id": place_id(base, coop, e["place"])}
        event["bizLocation"] = {"id": _site(base, coop)}
        if e["documents"]:
            event["bizTransactionList"] = [_document(d) for d in e["documents"]]
        if e["place"]:
            event["agt:place"] = e["place"]
        if e["actor"]:
            event["agt:actor"] = e["actor"]
        timed.append((e["event_time"], event))

    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for edge in conn.execute(_TRANSFORMATIONS, {"ids": ids, "id": batch_id}).fetchall():
        groups[edge["transformation_id"]].append(edge)
    for transformation, edges in groups.items():
        inputs = sorted({e["parent_id"] for e in edges})
        outputs = sorted({e["child_id"] for e in edges})
        known = {**batches, **_missing(conn, [*inputs, *outputs], batches)}
        quantities = {e["parent_id"]: e["quantity"] for e in edges} if len(inputs) > 1 else {}
        parent_used = sum((Decimal(e["quantity"]) for e in edges if e["quantity"] is not None), Decimal(0))
        if len(inputs) == 1:
            quantities = {inputs[0]: parent_used or None}
        first, owner = edges[0], known[outputs[0]]["cooperative_id"]
        event = {
            "type": "TransformationEvent",
            "eventTime": local_time(first["event_time"], first["event_tz"]),
            "eventTimeZoneOffset": first["event_tz"],
            "inputQuantityList": [
                quantity_element(epc_class(known[i], base), quantities.get(i), known[i]["unit"])
                for i in inputs
            ],
            "outputQuantityList": [
                quantity_element(epc_class(known[o], base), known[o]["quantity"], known[o]["unit"])
                for o in outputs
            ],
            "transformationID": f"urn:uuid:{transformation}",
            "bizStep": "packing" if len(inputs) == 1 else "repackaging",
            "bizLocation": {"id": _site(base, cooperatives.get(owner, {"id": owner, "gln": None}))},
        }
        timed.append((first["event_time"], event))

    for issued in conn.execute(
        """SELECT batch_id, issued_at, array_agg(serial ORDER BY serial) AS serials FROM codes
            WHERE batch_id = ANY(%s) GROUP BY batch_id, issued_at ORDER BY issued_at""",
        (ids,),
    ).fetchall():
        b = batches[issued["batch_id"]]
        if b["gtin"]:
            epcs = [f"https://id.gs1.org/01/{b['gtin']}/21/{s}" for s in issued["serials"]]
        else:
            epcs = [f"{base}/t/{s}" for s in issued["serials"]]
        event = {
            "type": "ObjectEvent",
            "eventTime": local_time(issued["issued_at"], "+08:00"),
            "eventTimeZoneOffset": "+08:00",
            "epcList": epcs,
            "action": "ADD",
            "bizStep": "commissioning",
            "disposition": "active",
            "bizLocation": {"id": _site(base, cooperatives[b["cooperative_id"]])},
            "ilmd": {"agt:lot": b["lot"], "agt:lotClass": epc_class(b, base)},
        }
        timed.append((issued["issued_at"], event))

    for k in conn.execute(_CUSTODY, (ids,)).fetchall():
        if k["metric"] != "temperature":
            continue
        b = batches[k["batch_id"]]
        timed.append((k["ended_at"], _custody_event(conn, base, b, cooperatives[b["cooperative_id"]], k)))

    timed.sort(key=lambda te: te[0])
    return [finish(event) for _, event in timed]


def _missing(conn: Conn, ids: list[int], have: dict[int, Any]) -> dict[int, dict[str, Any]]:
    """Lots of a transformation outside the history (the other outputs of a split): read them too."""
    need = [i for i in ids if i not in have]
    if not need:
        return {}
    rows = conn.execute("SELECT * FROM batches WHERE id = ANY(%s)", (need,)).fetchall()
    return {r["id"]: r for r in rows}


def _custody_event(
    conn: Conn, base: str, batch: dict[str, Any], cooperative: dict[str, Any], k: dict[str, Any]
) -> dict[str, Any]:
    """One ended custody interval: what the cold-chain summary says about it, as a sensorElement."""
    profile_id, low, high = coldchain_summary.product_band(conn, product=batch["product"])
    s = coldchain_summary.summarize_windows(
        conn,
        windows=[(k["channel_id"], k["started_at"], k["ended_at"])],
        profile_id=profile_id,
        low=low,
        high=high,
        bucket=k["ended_at"] - k["started_at"] + timedelta(seconds=1),
    )
    raw = f"{base}/api/v1/channels/{k['channel_id']}/readings?" + urlencode(
        {"start": _utc(k["started_at"]), "end": _utc(k["ended_at"])}
    )
    report: dict[str, Any] = {"type": "Temperature"}
    if s.readings:
        report.update(
            {
                "minValue": round(float(s.min), 3) if s.min is not None else None,
                "maxValue": round(float(s.max), 3) if s.max is not None else None,
                "meanValue": round(float(s.mean), 3) if s.mean is not None else None,
            }
        )
    report = {key: v for key, v in report.items() if v is not None}
    report["uom"] = "CEL"
    if s.mkt is not None:
        report["agt:meanKineticTemperature"] = round(float(s.mkt), 3)
    report["agt:minutesOutOfBand"] = round(s.minutes_out_of_band, 1)
    report["agt:minutesNoData"] = round(s.minutes_no_data, 1)
    report["agt:verdict"] = s.verdict
    if low is not None:
        report["agt:bandLow"] = low
    if high is not None:
        report["agt:bandHigh"] = high
    tz = "+08:00"
    return {
        "type": "ObjectEvent",
        "eventTime": local_time(k["ended_at"], tz),
        "eventTimeZoneOffset": tz,
        "quantityList": [quantity_element(epc_class(batch, base), batch["quantity"], batch["unit"])],
        "action": "OBSERVE",
        "bizStep": "transporting" if k["asset_kind"] == "truck" else "storing",
        "readPoint": {"id": f"{base}/channels/{k['channel_id']}"},
        "bizLocation": {"id": _site(base, cooperative)},
        "sensorElementList": [
            {
                "sensorMetadata": {
                    "startTime": local_time(k["started_at"], tz),
                    "endTime": local_time(k["ended_at"], tz),
                    "deviceID": f"{base}/channels/{k['channel_id']}",
                    "rawData": raw,
                    "dataProcessingMethod": f"{base}/docs/coldchain#summary",
                },
                "sensorReport": [report],
            }
        ],
        "agt:place": k["place"],
    }


def export_batch(conn: Conn, *, batch_id: int, cooperative_id: int | None = None) -> dict[str, Any]:
    """The EPCIS 2.0 document of a lot (its events, its sources', the transformations between them)."""
    return document(lot_events(conn, batch_id=batch_id, cooperative_id=cooperative_id))
