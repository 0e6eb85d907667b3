"""The consumer's view of a code: one dict that the HTML page and `GET /api/v1/trace/{code}` both render.

Built in PostgreSQL as JSON in the same statement that logs the scan, with the batch's stored cold-chain
summary, because round trips, not work, are what a page view costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agritrace.db import Conn
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import coldchain_page
from agritrace.trace.exceptions import BatchNotFound, CodeNotFound

CERTIFICATE_NAMES = {
    "pollution_free": {"zh": "无公害农产品", "en": "Pollution-free agricultural product"},
    "green_food": {"zh": "绿色食品", "en": "Green Food"},
    "organic": {"zh": "有机产品", "en": "Organic"},
    "geographical_indication": {"zh": "农产品地理标志", "en": "Geographical indication"},
}

# A page view is ONE statement (issue 5: round trips, not work, are what a view costs): count and log
# the scan, then read everything the page shows about the code's batch. `hist` is the batch and
# everything upstream of it: harvest, storage, certificates, inspections and recalls of the source
# batches are part of this lot's story. The cold chain comes from the batch's stored summary
# (`trace_coldchain_pages`) when one is there. Losing the last few scans in a database crash is
# harmless; waiting for a WAL flush on every page view is not, so the scan commits asynchronously
# (the statement runs in autocommit, or in the caller's transaction). A Digital Link scan must match
# the batch's GTIN and lot. The counterfeit-flag figure (distinct counted networks within the window,
# since the flag was last cleared) is read only for codes already scanned more
# times than the threshold; it does not see this scan's own row (a data-modifying CTE's rows are
# invisible to its statement), so that is added by hand when it counts (`counted_place`).
# `custody_ended`: whether every custody interval of the history has ended (none at all counts): only
# then may the summary be stored. The HTML page draws the stored chart and does not read the chart's
# series (`series`: reading and parsing them was a tenth of a view's cost).
_VIEW_SQL = """
WITH RECURSIVE cfg AS (SELECT set_config('synchronous_commit', 'off', true) AS v),
u AS (
    UPDATE codes c SET scan_count = c.scan_count + 1, last_scan_at = now(),
                       first_scan_at = coalesce(c.first_scan_at, now())
      FROM batches b
     WHERE c.serial = %(serial)s AND b.id = c.batch_id
       AND (%(gtin)s::text IS NULL OR (b.gtin = %(gtin)s AND b.lot = %(lot)s))
    RETURNING c.serial, c.batch_id, c.scan_count, c.first_scan_at, c.flagged_at, c.flag_reason,
              c.flag_cleared_at
), logged AS (
    INSERT INTO code_scans (serial, place_hash, ua_family) SELECT serial, %(place)s, %(ua)s FROM u
), up(id, depth) AS (
    SELECT parent_id, 1 FROM batch_lineage WHERE child_id = (SELECT batch_id FROM u)
    UNION
    SELECT l.parent_id, up.depth + 1 FROM batch_lineage l JOIN up ON l.child_id = up.id WHERE up.depth < 64
), hist AS (
    SELECT batch_id AS id FROM u UNION SELECT id FROM up
), b AS (
    SELECT b.*, c.name AS cooperative FROM batches b JOIN cooperatives c ON c.id = b.cooperative_id
     WHERE b.id = (SELECT batch_id FROM u)
)
SELECT u.*, (SELECT v FROM cfg) AS sync,
  CASE WHEN u.flagged_at IS NULL AND u.scan_count > %(flag_places)s THEN
    (SELECT count(DISTINCT p)
       FROM (SELECT place_hash AS p FROM code_scans
              WHERE serial = u.serial AND ua_family <> ALL(%(skip)s)
                AND time > greatest(%(flag_since)s, u.flag_cleared_at)
             UNION ALL SELECT %(counted_place)s) s)
  END AS flag_networks,
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
    ORDER BY k.batch_id = u.batch_id DESC LIMIT 1) AS compliance,
  (SELECT coalesce(json_agg(json_build_object('lot', rb.lot, 'reason', r.reason,
        'recalled_at', trace_cn_time(r.recalled_at), 'own', r.batch_id = u.batch_id) ORDER BY r.recalled_at), '[]')
     FROM batch_recalls r JOIN batches rb ON rb.id = r.batch_id WHERE r.batch_id IN (SELECT id FROM hist)) AS recalls,
  (SELECT coalesce(json_agg(json_build_object('biz_step', e.biz_step, 'disposition', e.disposition,
        'time', trace_cn_time(e.event_time), 'place', e.place, 'actor', e.actor, 'documents', e.documents,
        'lot', eb.lot) ORDER BY e.event_time, e.id), '[]')
     FROM trace_events e JOIN batches eb ON eb.id = e.batch_id WHERE e.batch_id IN (SELECT id FROM hist)) AS journey,
  (SELECT coalesce(json_agg(json_build_object('kind', i.kind, 'inspected_at', trace_cn_time(i.inspected_at),
        'standard', i.standard, 'laboratory', i.laboratory, 'passed', i.passed, 'details', i.details)
        ORDER BY i.inspected_at DESC), '[]')
     FROM inspections i WHERE i.batch_id IN (SELECT id FROM hist)) AS inspections,
  p.gen AS cold_gen, p.summary AS cold_summary, CASE WHEN %(series)s THEN p.series END AS cold_series,
  p.chart_svg AS cold_chart,
  NOT EXISTS (SELECT 1 FROM batch_custody k WHERE k.batch_id IN (SELECT id FROM hist)
                 AND (k.ended_at IS NULL OR k.ended_at > now())) AS custody_ended
  FROM u LEFT JOIN trace_coldchain_pages p ON p.batch_id = u.batch_id
"""
# psycopg caches the parsing of a query's placeholders only up to 4096 characters (parsing this
# one cost ~0.3 ms per view): the statement is sent with its whitespace collapsed (no -- comments in it).
_VIEW = " ".join(_VIEW_SQL.split())
assert "--" not in _VIEW and len(_VIEW) <= 4096, "the view statement outgrew psycopg's query cache"


def _local(value: datetime | None) -> str | None:
    return value.astimezone(coldchain_page.DISPLAY_TZ).isoformat() if value else None


def scan_view(
    conn: Conn,
    *,
    serial: str,
    ip: str | None,
    user_agent: str | None,
    gtin: str | None = None,
    lot: str | None = None,
    series: bool = True,
    staff: bool = False,
) -> dict[str, Any]:
    """Logs a scan of an issued code and returns everything the page shows about it (one statement).
    `staff`: the request carried a valid API token (its scan never counts towards the flag).

    `series=False` leaves the cold chain's chart series out (the HTML page draws the stored chart).

    CodeNotFound when the code was not issued (or, for a Digital Link, its GTIN and lot do not match);
    a code whose scans look copied is flagged."""
    canonical = trace_codes.normalize_scan(serial=serial, gtin=gtin, lot=lot)
    place = trace_codes.place_hash(ip)
    kind = trace_codes.scan_kind(ip, user_agent, staff=staff)
    row = conn.execute(
        _VIEW,
        {
            "serial": canonical,
            "gtin": gtin.zfill(14) if gtin is not None else None,
            "lot": lot,
            "place": place,
            "ua": kind,
            "counted_place": None if kind in trace_codes.NOT_COUNTED else place,
            "skip": list(trace_codes.NOT_COUNTED),
            "flag_places": get_settings().counterfeit_networks,
            "flag_since": datetime.now(UTC) - timedelta(hours=get_settings().counterfeit_window_hours),
            "series": series,
        },
    ).fetchone()
    if row is None:
        raise CodeNotFound("this is not a code we issued")
    if row["batch"] is None:
        raise BatchNotFound("the batch of this code is gone")
    if row["flag_networks"] is not None:
        reason = trace_codes.flag_reason(places=row["flag_networks"])
        if reason:
            row = {**row, **trace_codes.flag(conn, serial=canonical, reason=reason)}
    return _view(conn, row)


def _cold_chain(conn: Conn, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The stored summary when there is one; else computed, and stored when every custody has ended."""
    if row["cold_summary"] is not None:
        series = row["cold_series"]
        return (
            {**row["cold_summary"], "buckets": series} if series is not None else row["cold_summary"]
        ), row["cold_chart"]
    product, history = row["batch"]["product"], list(row["history_ids"])
    if not row["custody_ended"]:
        # Still in a cold room: changes with every reading; each process reuses it for a minute.
        return coldchain_page.summarize_cached(
            conn, product=product, batch_ids=history, batch_id=row["batch_id"]
        )
    # Computed from scratch (never from the in-process cache, which may predate an invalidation),
    # stored only if no invalidation came after the `gen` read by the view statement.
    summary, chart = coldchain_page.summarize_stored_or_live(
        conn, product=product, batch_ids=history, batch_id=row["batch_id"]
    )
    coldchain_page.store_page_summary(
        conn,
        batch_id=row["batch_id"],
        gen=row["cold_gen"] or 0,
        summary=summary,
        chart=chart,
    )
    return summary, chart


def _view(conn: Conn, row: dict[str, Any]) -> dict[str, Any]:
    batch = row["batch"]
    cold, chart = _cold_chain(conn, row)
    warnings = []
    if row["recalls"]:
        warnings.append("recalled")
    if any(c["status"] in ("expired", "revoked") for c in row["certificates"]):
        warnings.append("certificate_expired")
    if cold["verdict"] == "excursion":
        warnings.append("cold_chain_excursion")
    elif cold["verdict"] == "incomplete" and not cold.get("in_progress"):
        warnings.append("cold_chain_incomplete")
    if any(not i["passed"] for i in row["inspections"]):
        warnings.append("inspection_failed")
    if row.get("flagged_at"):
        warnings.append("possibly_counterfeit")
    return {
        "code": row["serial"],
        "url": trace_codes.code_url(serial=row["serial"], gtin=batch["gtin"], lot=batch["lot"]),
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
            "count": row["scan_count"],
            "first_scan_at": _local(row["first_scan_at"]),
            "flagged": row.get("flagged_at") is not None,
        },
        "warnings": warnings,
        "_chart_svg": chart,
    }
