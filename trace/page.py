"""The consumer's view of a code: one dict that the HTML page and `GET /api/v1/trace/{code}` both render.

Built in PostgreSQL as JSON in one query (a page view is a scan, this query and, at most every minute
per lot, the cold-chain buckets), because round trips, not work, are what a page view costs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import coldchain
from agritrace.trace.exceptions import BatchNotFound

DISPLAY_TZ = ZoneInfo("Asia/Shanghai")
CERTIFICATE_NAMES = {
    "pollution_free": {"zh": "无公害农产品", "en": "Pollution-free agricultural product"},
    "green_food": {"zh": "绿色食品", "en": "Green Food"},
    "organic": {"zh": "有机产品", "en": "Organic"},
    "geographical_indication": {"zh": "农产品地理标志", "en": "Geographical indication"},
}

# `hist` is the batch and everything upstream of it: harvest, storage, certificates, inspections and
# recalls of the source batches are part of this lot's story.
_VIEW = """
WITH RECURSIVE up(id, depth) AS (
    SELECT parent_id, 1 FROM batch_lineage WHERE child_id = %(id)s
    UNION
    SELECT l.parent_id, up.depth + 1 FROM batch_lineage l JOIN up ON l.child_id = up.id WHERE up.depth < 64
), hist AS (
    SELECT %(id)s::bigint AS id UNION SELECT id FROM up
), b AS (
    SELECT b.*, c.name AS cooperative FROM batches b JOIN cooperatives c ON c.id = b.cooperative_id WHERE b.id = %(id)s
)
SELECT
  (SELECT json_build_object(
      'lot', lot, 'product', product, 'variety', variety, 'gtin', gtin, 'cooperative', cooperative,
      'origin', json_build_object('plot', origin_plot, 'gi_area', gi_area, 'latitude', latitude, 'longitude', longitude),
      'harvest_date', harvest_date, 'quantity', quantity, 'unit', unit) FROM b) AS batch,
  (SELECT coalesce(json_agg(x.lot ORDER BY x.depth, x.id), '[]')
     FROM (SELECT s.id, s.lot, min(up.depth) AS depth FROM up JOIN batches s ON s.id = up.id GROUP BY s.id) x) AS sources,
  (SELECT array_agg(id ORDER BY id) FROM hist) AS history_ids,
  (SELECT coalesce(json_agg(json_build_object(
        'kind', c.kind, 'number', c.number, 'issuer', c.issuer, 'valid_from', c.valid_from, 'valid_to', c.valid_to,
        'scope', c.scope,
        'status', CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN current_date > c.valid_to THEN 'expired'
                       WHEN current_date < c.valid_from THEN 'not_yet_valid'
                       ELSE 'valid' END) ORDER BY c.kind, c.valid_to DESC), '[]')
     FROM certificates c
    WHERE c.batch_id IN (SELECT id FROM hist) OR c.cooperative_id = (SELECT cooperative_id FROM b)) AS certificates,
  (SELECT json_build_object('product_name', k.product_name, 'quantity', k.quantity, 'unit', k.unit, 'origin', k.origin,
        'issued_at', trace_cn_time(k.issued_at), 'issuer', k.issuer, 'contact', k.contact)
     FROM compliance_certificates k WHERE k.batch_id IN (SELECT id FROM hist)
    ORDER BY k.batch_id = %(id)s DESC LIMIT 1) AS compliance,
  (SELECT coalesce(json_agg(json_build_object('lot', rb.lot, 'reason', r.reason,
        'recalled_at', trace_cn_time(r.recalled_at), 'own', r.batch_id = %(id)s) ORDER BY r.recalled_at), '[]')
     FROM batch_recalls r JOIN batches rb ON rb.id = r.batch_id WHERE r.batch_id IN (SELECT id FROM hist)) AS recalls,
  (SELECT coalesce(json_agg(json_build_object('biz_step', e.biz_step, 'disposition', e.disposition,
        'time', trace_cn_time(e.event_time), 'place', e.place, 'actor', e.actor, 'documents', e.documents,
        'lot', eb.lot) ORDER BY e.event_time, e.id), '[]')
     FROM trace_events e JOIN batches eb ON eb.id = e.batch_id WHERE e.batch_id IN (SELECT id FROM hist)) AS journey,
  (SELECT coalesce(json_agg(json_build_object('kind', i.kind, 'inspected_at', trace_cn_time(i.inspected_at),
        'standard', i.standard, 'laboratory', i.laboratory, 'passed', i.passed, 'details', i.details)
        ORDER BY i.inspected_at DESC), '[]')
     FROM inspections i WHERE i.batch_id IN (SELECT id FROM hist)) AS inspections
"""


def _local(value: datetime | None) -> str | None:
    return value.astimezone(DISPLAY_TZ).isoformat() if value else None


def trace_view(conn: Conn, *, code: dict[str, Any]) -> dict[str, Any]:
    """Everything the page shows about a scanned code (`code` is the row `codes.record_scan` returned)."""
    row = conn.execute(_VIEW, {"id": code["batch_id"]}).fetchone()
    if row is None or row["batch"] is None:
        raise BatchNotFound("the batch of this code is gone")
    batch = row["batch"]
    cold, chart = coldchain.summarize_cached(
        conn, product=batch["product"], batch_ids=list(row["history_ids"]), batch_id=code["batch_id"]
    )
    warnings = []
    if row["recalls"]:
        warnings.append("recalled")
    if any(c["status"] in ("expired", "revoked") for c in row["certificates"]):
        warnings.append("certificate_expired")
    if cold["verdict"] == "excursion":
        warnings.append("cold_chain_excursion")
    if any(not i["passed"] for i in row["inspections"]):
        warnings.append("inspection_failed")
    if code.get("flagged_at"):
        warnings.append("possibly_counterfeit")
    return {
        "code": code["serial"],
        "url": trace_codes.code_url(serial=code["serial"], gtin=batch["gtin"], lot=batch["lot"]),
        "batch": {
            **batch,
            "product_name": trace_codes.PRODUCT_NAMES[batch["product"]],
            "sources": row["sources"],
        },
        "recalled": bool(row["recalls"]),
        "recalls": row["recalls"],
        "certificates": [{**c, "name": CERTIFICATE_NAMES[c["kind"]]} for c in row["certificates"]],
        "compliance_certificate": row["compliance"],
        "journey": row["journey"],
        "cold_chain": cold,
        "inspections": row["inspections"],
        "scans": {
            "count": code["scan_count"],
            "first_scan_at": _local(code["first_scan_at"]),
            "flagged": code.get("flagged_at") is not None,
        },
        "warnings": warnings,
        "_chart_svg": chart,
    }
