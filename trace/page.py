"""The consumer's view of a code: one dict that the HTML page and `GET /api/v1/trace/{code}` both render."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import coldchain
from agritrace.trace import service as trace_service

DISPLAY_TZ = ZoneInfo("Asia/Shanghai")
CERTIFICATE_NAMES = {
    "pollution_free": {"zh": "无公害农产品", "en": "Pollution-free agricultural product"},
    "green_food": {"zh": "绿色食品", "en": "Green Food"},
    "organic": {"zh": "有机产品", "en": "Organic"},
    "geographical_indication": {"zh": "农产品地理标志", "en": "Geographical indication"},
}


def _plain(value: Any) -> Any:
    """JSON-friendly values (dates as ISO strings, decimals as numbers)."""
    if isinstance(value, datetime):
        # Consumers read local (China) time; the offset keeps the value exact.
        return value.astimezone(DISPLAY_TZ).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def trace_view(conn: Conn, *, code: dict[str, Any], scan: dict[str, Any]) -> dict[str, Any]:
    """Everything the page shows about a resolved code (after its scan was recorded)."""
    batch = trace_service.get_batch(conn, batch_id=code["batch_id"])
    sources = trace_service.upstream(conn, batch_id=batch["id"])
    # Harvest, storage and cold rooms of the source batches are part of this lot's story too.
    history_ids = [batch["id"], *(s["id"] for s in sources)]
    certificates = trace_service.certificates_for(conn, batch_id=batch["id"])
    compliance = conn.execute(
        "SELECT * FROM compliance_certificates WHERE batch_id = ANY(%s) ORDER BY batch_id = %s DESC LIMIT 1",
        (history_ids, batch["id"]),
    ).fetchone()
    recalls = trace_service.recalls_covering(conn, batch_id=batch["id"])
    cold = coldchain.summarize(conn, product=batch["product"], batch_ids=history_ids)
    inspections = trace_service.list_inspections(conn, batch_ids=history_ids)
    events = trace_service.list_events(conn, batch_ids=history_ids)
    lots = {batch["id"]: batch["lot"], **{s["id"]: s["lot"] for s in sources}}

    warnings = []
    if recalls:
        warnings.append("recalled")
    if any(c["status"] in ("expired", "revoked") for c in certificates):
        warnings.append("certificate_expired")
    if cold.verdict == "excursion":
        warnings.append("cold_chain_excursion")
    if any(not i["passed"] for i in inspections):
        warnings.append("inspection_failed")
    if scan.get("flagged_at"):
        warnings.append("possibly_counterfeit")

    view = {
        "code": code["serial"],
        "url": trace_codes.code_url(serial=code["serial"], gtin=batch["gtin"], lot=batch["lot"]),
        "batch": {
            "lot": batch["lot"],
            "product": batch["product"],
            "product_name": trace_codes.PRODUCT_NAMES[batch["product"]],
            "variety": batch["variety"],
            "gtin": batch["gtin"],
            "cooperative": batch["cooperative"],
            "origin": {
                "plot": batch["origin_plot"],
                "gi_area": batch["gi_area"],
                "latitude": batch["latitude"],
                "longitude": batch["longitude"],
            },
            "harvest_date": batch["harvest_date"],
            "quantity": batch["quantity"],
            "unit": batch["unit"],
            "sources": [s["lot"] for s in sources],
        },
        "recalled": bool(recalls),
        "recalls": [
            {
                "lot": r["lot"],
                "reason": r["reason"],
                "recalled_at": r["recalled_at"],
                "own": r["batch_id"] == batch["id"],
            }
            for r in recalls
        ],
        "certificates": [
            {
                "kind": c["kind"],
                "name": CERTIFICATE_NAMES[c["kind"]],
                "number": c["number"],
                "issuer": c["issuer"],
                "valid_from": c["valid_from"],
                "valid_to": c["valid_to"],
                "scope": c["scope"],
                "status": c["status"],
            }
            for c in certificates
        ],
        "compliance_certificate": (
            {
                k: compliance[k]
                for k in ("product_name", "quantity", "unit", "origin", "issued_at", "issuer", "contact")
            }
            if compliance
            else None
        ),
        "journey": [
            {
                "biz_step": e["biz_step"],
                "disposition": e["disposition"],
                "time": e["event_time"],
                "place": e["place"],
                "actor": e["actor"],
                "documents": e["documents"],
                "lot": lots.get(e["batch_id"]),
            }
            for e in events
        ],
        "cold_chain": cold.as_json(),
        "inspections": [
            {
                "kind": i["kind"],
                "inspected_at": i["inspected_at"],
                "standard": i["standard"],
                "laboratory": i["laboratory"],
                "passed": i["passed"],
                "details": i["details"],
            }
            for i in inspections
        ],
        "scans": {
            "count": scan["scan_count"],
            "first_scan_at": scan["first_scan_at"],
            "flagged": scan.get("flagged_at") is not None,
        },
        "warnings": warnings,
    }
    return {**_plain(view), "_chart_svg": coldchain.chart_svg(cold)}
