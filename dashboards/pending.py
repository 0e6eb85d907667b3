"""Dashboards whose data comes from other domains' tables: written, waiting for their reporting views.

Each function states the `reporting` view columns it reads. Once a domain's migration defines
those views (owned by the migration role, so `agritrace_grafana` can read them through the
schema's default privileges), add the function to `boards.BOARDS` (or the panel to its board);
`tests/test_dashboards.py` then runs every new panel as the read-only role with no further change.
Seeding for those tests belongs with the domain's factories.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import table

from agritrace.dashboards.boards import (
    board,
    coop_filter,
    cooperative_variable,
    product_filter,
    product_variable,
    stat_panel,
    table_panel,
    ts_panel,
)

# reporting.dead_letters (received_at timestamptz, gateway_id text, cooperative_id bigint,
#                         topic text, reason text)  -- from the ingest domain (migration 0003)
DEAD_LETTERS_VIEW = "reporting.dead_letters"


def dead_letters_panel() -> table.Panel:
    """Fleet health: rejected MQTT messages in the range, newest first."""
    return table_panel(
        "Dead letters (rejected messages)",
        f"""SELECT d.received_at, d.gateway_id, d.topic, d.reason
              FROM {DEAD_LETTERS_VIEW} d
             WHERE $__timeFilter(d.received_at) AND {coop_filter("d.cooperative_id")}
             ORDER BY d.received_at DESC LIMIT 200""",
        ["received_at", "gateway_id", "topic", "reason"],
    )


# ---- 2. 三品一标 certification overview ----------------------------------------------------------
# reporting.certificates (certificate_id bigint, batch_id bigint, cooperative_id bigint, product text,
#     cert_type text  -- 'pollution_free' | 'green' | 'organic' | 'gi' | 'compliance' (承诺达标合格证)
#     number text, issuer text, valid_from date, valid_to date, revoked boolean)
# reporting.batches (batch_id bigint, cooperative_id bigint, product text, variety text,
#     harvest_date date, created_at timestamptz, disposition text, recalled_at timestamptz)
# reporting.inspections (batch_id bigint, cooperative_id bigint, product text,
#     inspected_at timestamptz, passed boolean)


def certification_overview() -> dash.Dashboard:
    """Certified cooperatives and batches by type, expiring certificates, 合格证 gaps, inspections, recalls."""
    coop = coop_filter("c.cooperative_id")
    prod = product_filter("c.product")
    coop_b = coop_filter("b.cooperative_id")
    prod_b = product_filter("b.product")
    return (
        board("agritrace-certification", "三品一标 Certification overview", ["certification"])
        .with_variable(cooperative_variable())
        .with_variable(product_variable())
        .with_panel(
            table_panel(
                "Valid certificates by type",
                f"""SELECT c.cert_type, count(DISTINCT c.cooperative_id) AS cooperatives,
                           count(DISTINCT c.batch_id) AS batches
                      FROM reporting.certificates c
                     WHERE NOT c.revoked AND current_date BETWEEN c.valid_from AND c.valid_to
                       AND {coop} AND {prod}
                     GROUP BY c.cert_type ORDER BY c.cert_type""",
                ["cert_type", "cooperatives", "batches"],
            ).span(12)
        )
        .with_panel(
            table_panel(
                "Certificates expiring in 30 / 60 / 90 days",
                f"""SELECT c.cert_type,
                           count(*) FILTER (WHERE c.valid_to < current_date + 30) AS within_30_days,
                           count(*) FILTER (WHERE c.valid_to < current_date + 60) AS within_60_days,
                           count(*) FILTER (WHERE c.valid_to < current_date + 90) AS within_90_days
                      FROM reporting.certificates c
                     WHERE NOT c.revoked AND c.valid_to >= current_date AND {coop} AND {prod}
                     GROUP BY c.cert_type ORDER BY c.cert_type""",
                ["cert_type", "within_30_days", "within_60_days", "within_90_days"],
            ).span(12)
        )
        .with_panel(
            table_panel(
                "Batches without a valid 承诺达标合格证",
                f"""SELECT b.batch_id, b.product, b.variety, b.harvest_date, b.created_at
                      FROM reporting.batches b
                     WHERE $__timeFilter(b.created_at) AND {coop_b} AND {prod_b}
                       AND NOT EXISTS (SELECT FROM reporting.certificates c
                                        WHERE c.batch_id = b.batch_id AND c.cert_type = 'compliance'
                                          AND NOT c.revoked AND current_date BETWEEN c.valid_from AND c.valid_to)
                     ORDER BY b.created_at DESC LIMIT 200""",
                ["batch_id", "product", "variety", "harvest_date", "created_at"],
            )
        )
        .with_panel(
            ts_panel(
                "Inspection pass rate",
                f"""SELECT $__timeGroupAlias(b.inspected_at, '1d'), b.product AS metric,
                           avg(b.passed::int) * 100 AS pass_rate_pct
                      FROM reporting.inspections b
                     WHERE $__timeFilter(b.inspected_at) AND {coop_b} AND {prod_b}
                     GROUP BY 1, 2 ORDER BY 1""",
                unit="percent",
            )
        )
        .with_panel(
            stat_panel(
                "Recalls in range",
                f"""SELECT count(*)::float8 AS recalls FROM reporting.batches b
                     WHERE $__timeFilter(b.recalled_at) AND {coop_b} AND {prod_b}""",
            )
        )
    )


# ---- 4. Consumer scans -----------------------------------------------------------------------------
# reporting.scans (scanned_at timestamptz, code text, batch_id bigint, cooperative_id bigint,
#     product text, region text, city text, suspicious boolean, reason text)
#     -- region/city from the scanner's IP (coarse), suspicious set by the trace domain's
#        counterfeit heuristics (e.g. one code scanned in distant cities within hours)


def consumer_scans() -> dash.Dashboard:
    """Scans per day and product, codes flagged as possibly counterfeit, where scans come from."""
    coop = coop_filter("s.cooperative_id")
    prod = product_filter("s.product")
    return (
        board("agritrace-consumer-scans", "扫码查询 Consumer scans", ["scans"])
        .with_variable(cooperative_variable())
        .with_variable(product_variable())
        .with_panel(
            ts_panel(
                "Scans per day and product",
                f"""SELECT $__timeGroupAlias(s.scanned_at, '1d'), s.product AS metric, count(*) AS scans
                      FROM reporting.scans s
                     WHERE $__timeFilter(s.scanned_at) AND {coop} AND {prod}
                     GROUP BY 1, 2 ORDER BY 1""",
                unit="short",
            ).span(24)
        )
        .with_panel(
            table_panel(
                "Codes flagged as possibly counterfeit",
                f"""SELECT s.code, s.product, count(*) AS scans, count(DISTINCT s.city) AS cities,
                           min(s.scanned_at) AS first_scan, max(s.scanned_at) AS last_scan,
                           string_agg(DISTINCT s.reason, '; ') AS reasons
                      FROM reporting.scans s
                     WHERE $__timeFilter(s.scanned_at) AND s.suspicious AND {coop} AND {prod}
                     GROUP BY s.code, s.product ORDER BY last_scan DESC LIMIT 200""",
                ["code", "product", "scans", "cities", "first_scan", "last_scan", "reasons"],
            )
        )
        .with_panel(
            table_panel(
                "Where scans come from",
                f"""SELECT s.region, s.city, count(*) AS scans, count(*) FILTER (WHERE s.suspicious) AS suspicious
                      FROM reporting.scans s
                     WHERE $__timeFilter(s.scanned_at) AND {coop} AND {prod}
                     GROUP BY s.region, s.city ORDER BY scans DESC LIMIT 100""",
                ["region", "city", "scans", "suspicious"],
            )
        )
    )
