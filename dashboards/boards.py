"""The supervision dashboards, built as code with the Grafana foundation SDK over the `reporting` views.

Every query reads only `reporting.*` (the read-only role can read nothing else). Variables:
`cooperative` (query, multi, All = -1) and `product` (mango/citrus/tea, multi, All = '__all__');
"All" uses a custom all-value so one SQL test covers every selection, and the time range is the
dashboard's own time picker.
"""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
from grafana_foundation_sdk.models.dashboard import (
    DataTransformerConfig,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from agritrace.dashboards.queries import DATASOURCE, Sql

FOLDER_UID = "agritrace"
FOLDER_TITLE = "AgriTrace"
PRODUCTS = ("mango", "citrus", "tea")

# Filters for the variables. Grafana quotes each selected value ('3','5'); "All" is inserted raw.
COOP_ALL = "-1"
PRODUCT_ALL = "'__all__'"


def coop_filter(column: str) -> str:
    return f"({COOP_ALL} IN ($cooperative) OR {column} IN ($cooperative))"


def product_filter(column: str) -> str:
    return f"({PRODUCT_ALL} IN ($product) OR {column} IN ($product))"


# Panels over a time range read the 15-minute rollup (dashboards/rollup.py), not raw readings:
# a week is ~700 buckets per channel instead of every reading. A bucket is taken when it overlaps
# the range, and a panel's interval is never finer than the rollup's 15 minutes.
ROLLUP_RANGE = "r.bucket > $__timeFrom()::timestamptz - interval '15 minutes' AND r.bucket <= $__timeTo()"
ROLLUP_GROUP = (
    "time_bucket(greatest($__interval_ms * interval '1 millisecond', interval '15 minutes'), r.bucket)"
)


def cooperative_variable() -> dash.QueryVariable:
    return (
        dash.QueryVariable("cooperative")
        .label("合作社 Cooperative")
        .datasource(DATASOURCE)
        .query(
            "SELECT cooperative AS __text, cooperative_id::text AS __value"
            " FROM reporting.cooperatives ORDER BY cooperative"
        )
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(COOP_ALL)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def product_variable() -> dash.CustomVariable:
    return (
        dash.CustomVariable("product")
        .label("产品 Product")
        .values(",".join(PRODUCTS))
        .multi(True)
        .include_all(True)
        .all_value(PRODUCT_ALL)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def ts_panel(title: str, sql: str, *, unit: str, description: str = "") -> timeseries.Panel:
    """A time series panel: the query returns `time`, optionally `metric`, then numbers."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Sql(sql).time_series())
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .height(8)
        .span(12)
    )


def table_panel(title: str, sql: str, columns: list[str], *, description: str = "") -> table.Panel:
    """A table; `columns` fixes their order in Grafana and is the shape the query must return."""
    organize = DataTransformerConfig(
        id_val="organize", options={"indexByName": {name: i for i, name in enumerate(columns)}}
    )
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Sql(sql).table())
        .with_transformation(organize)
        .height(9)
        .span(24)
    )


def stat_panel(title: str, sql: str, *, unit: str = "none", description: str = "") -> stat.Panel:
    """A single number: the query returns one row of numbers."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Sql(sql).table())
        .unit(unit)
        .height(4)
        .span(6)
    )


def board(uid: str, title: str, tags: list[str]) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .tags(["agritrace", *tags])
        .timezone("browser")
        .time("now-7d", "now")
        .refresh("1m")
        .readonly()
    )


# ---- 5. Fleet health ---------------------------------------------------------------------------


def fleet_health() -> dash.Dashboard:
    """Gateways online/offline, last seen, ingest rate, silent channels."""
    coop_g = coop_filter("g.cooperative_id")
    coop_c = coop_filter("c.cooperative_id")
    return (
        board("agritrace-fleet-health", "设备状态 Fleet health", ["fleet"])
        .with_variable(cooperative_variable())
        .with_panel(
            stat_panel(
                "Gateways online",
                f"""SELECT count(*)::float8 AS gateways FROM reporting.gateways g
                     WHERE g.online AND NOT g.disabled AND {coop_g}""",
            )
        )
        .with_panel(
            stat_panel(
                "Gateways offline",
                f"""SELECT count(*)::float8 AS gateways FROM reporting.gateways g
                     WHERE NOT g.online AND NOT g.disabled AND {coop_g}""",
            )
        )
        .with_panel(
            stat_panel(
                "Readings in range",
                f"""SELECT coalesce(sum(r.n), 0)::float8 AS readings
                      FROM reporting.readings_15m r JOIN reporting.channels c USING (channel_id)
                     WHERE {ROLLUP_RANGE} AND {coop_c}""",
                description="From the 15-minute rollup: the buckets at the range's edges count whole.",
            )
        )
        .with_panel(
            stat_panel(
                "Channels silent for over 1 h",
                f"""SELECT count(*)::float8 AS channels FROM reporting.channels c
                     WHERE (c.last_time IS NULL OR c.last_time < now() - interval '1 hour') AND {coop_c}""",
            )
        )
        .with_panel(
            ts_panel(
                "Ingest rate per cooperative",
                f"""SELECT x.time, c.cooperative AS metric,
                           sum(x.n) / (greatest($__interval_ms, 900000) / 1000.0) AS readings_per_s
                      FROM (SELECT {ROLLUP_GROUP} AS time, r.channel_id, sum(r.n) AS n
                              FROM reporting.readings_15m r
                             WHERE {ROLLUP_RANGE}
                             GROUP BY 1, 2) x
                      JOIN reporting.channels c USING (channel_id)
                     WHERE {coop_c}
                     GROUP BY 1, 2 ORDER BY 1""",
                unit="reqps",
                description="Readings per second by reading time (late, stored-and-forwarded readings count when they were measured).",
            ).span(24)
        )
        .with_panel(
            table_panel(
                "Gateways",
                f"""SELECT g.gateway_id, g.cooperative,
                           CASE WHEN g.disabled THEN 'disabled' WHEN g.online THEN 'online' ELSE 'offline' END AS state,
                           g.last_seen, g.status_at, count(c.channel_id) AS channels
                      FROM reporting.gateways g LEFT JOIN reporting.channels c USING (gateway_id)
                     WHERE {coop_g}
                     GROUP BY g.gateway_id, g.cooperative, g.disabled, g.online, g.last_seen, g.status_at
                     ORDER BY g.online, g.last_seen NULLS FIRST""",
                ["gateway_id", "cooperative", "state", "last_seen", "status_at", "channels"],
            )
        )
        .with_panel(
            table_panel(
                "Silent channels (no reading for over 1 h)",
                f"""SELECT c.cooperative, c.gateway_id, c.channel, c.unit, c.last_time
                      FROM reporting.channels c
                     WHERE (c.last_time IS NULL OR c.last_time < now() - interval '1 hour') AND {coop_c}
                     ORDER BY c.last_time NULLS FIRST LIMIT 200""",
                ["cooperative", "gateway_id", "channel", "unit", "last_time"],
            )
        )
        .with_panel(
            table_panel(
                "Dead letters (rejected messages)",
                f"""SELECT d.received_at, d.gateway_id, d.topic, d.reason
                      FROM reporting.dead_letters d
                     WHERE $__timeFilter(d.received_at) AND {coop_filter("d.cooperative_id")}
                     ORDER BY d.received_at DESC LIMIT 200""",
                ["received_at", "gateway_id", "topic", "reason"],
                description="Messages the ingest worker refused, newest first (payloads are never shown). "
                "A message naming an unknown gateway has no cooperative and shows under All only.",
            )
        )
    )


# ---- 3. Farm environment -----------------------------------------------------------------------


def _farm_series(title: str, quantity: str, unit: str) -> timeseries.Panel:
    return ts_panel(
        title,
        f"""SELECT x.time, c.cooperative || ' / ' || c.plot AS metric, sum(x.total) / sum(x.n) AS value
              FROM (SELECT {ROLLUP_GROUP} AS time, r.channel_id,
                           sum(r.total) AS total, sum(r.n) AS n
                      FROM reporting.readings_15m r
                     WHERE {ROLLUP_RANGE} AND r.channel_id IN (
                           SELECT c.channel_id FROM reporting.channels c
                            WHERE c.setting = 'farm' AND c.quantity = '{quantity}'
                              AND {coop_filter("c.cooperative_id")} AND {product_filter("c.product")})
                     GROUP BY 1, 2) x
              JOIN reporting.channels c USING (channel_id)
             GROUP BY 1, 2 ORDER BY 1""",
        unit=unit,
        description="Mean per plot and interval (a plot is the channel name up to its last '/').",
    )


def farm_environment() -> dash.Dashboard:
    """Orchard and tea-garden temperature, humidity and soil moisture per plot."""
    return (
        board("agritrace-farm-environment", "果园茶园环境 Farm environment", ["farm"])
        .with_variable(cooperative_variable())
        .with_variable(product_variable())
        .with_panel(_farm_series("Air temperature per plot", "temperature", "celsius"))
        .with_panel(_farm_series("Relative humidity per plot", "humidity", "humidity"))
        .with_panel(_farm_series("Soil moisture per plot", "soil_moisture", "percent").span(24))
        .with_panel(
            table_panel(
                "Plots now",
                f"""SELECT c.cooperative, c.plot, c.product,
                           max(c.last_value) FILTER (WHERE c.quantity = 'temperature') AS temperature_c,
                           max(c.last_value) FILTER (WHERE c.quantity = 'humidity') AS humidity_rh,
                           max(c.last_value) FILTER (WHERE c.quantity = 'soil_moisture') AS soil_moisture_pct,
                           max(c.last_time) AS last_time
                      FROM reporting.channels c
                     WHERE c.setting = 'farm' AND {coop_filter("c.cooperative_id")}
                       AND {product_filter("c.product")}
                     GROUP BY c.cooperative, c.plot, c.product
                     ORDER BY c.cooperative, c.plot""",
                [
                    "cooperative",
                    "plot",
                    "product",
                    "temperature_c",
                    "humidity_rh",
                    "soil_moisture_pct",
                    "last_time",
                ],
            )
        )
    )


# ---- 1. Cold-chain supervision -----------------------------------------------------------------

# Aggregation is per channel id first and names are joined last: grouping hundreds of thousands of
# readings by integer is cheaper than by text columns.
# Cold-room and truck temperature channels per rollup bucket: seconds out of their product's band
# (each reading stands until the next one, at most one hour, so a gateway's offline gap is not
# counted) and the worst deviations. A channel's newest reading stands until the end of the range
# (or now); the rollup cannot know that, so it is added from the channel's latest value.
_COLD_READINGS = """
WITH cr AS (
    SELECT r.channel_id, r.bucket AS time, r.seconds_out, r.max_value, r.min_value, r.max_above, r.max_below
      FROM reporting.readings_15m r
     WHERE {rollup_range} AND r.channel_id IN (
           SELECT c.channel_id FROM reporting.channels c
            WHERE c.setting = 'cold_chain' AND c.quantity = 'temperature' AND {coop} AND {product})
    UNION ALL
    SELECT c.channel_id, c.last_time,
           CASE WHEN c.last_value > b.temp_max OR c.last_value < b.temp_min
                THEN least(extract(epoch FROM least($__timeTo()::timestamptz, now()) - c.last_time), 3600)
                ELSE 0 END,
           c.last_value, c.last_value, c.last_value - b.temp_max, b.temp_min - c.last_value
      FROM reporting.channels c JOIN reporting.product_bands b USING (product)
     WHERE $__timeFilter(c.last_time) AND c.setting = 'cold_chain' AND c.quantity = 'temperature'
       AND {coop} AND {product}
)"""


def _cold(sql: str) -> str:
    head = _COLD_READINGS.format(
        rollup_range=ROLLUP_RANGE, coop=coop_filter("c.cooperative_id"), product=product_filter("c.product")
    )
    return head + "\n" + sql


def cold_chain() -> dash.Dashboard:
    """Open alerts, cold rooms and trucks against their band, time out of band, worst excursions, MKT."""
    coop_a = coop_filter("a.cooperative_id")
    coop_c = coop_filter("c.cooperative_id")
    prod_c = product_filter("c.product")
    return (
        board("agritrace-cold-chain", "冷链监管 Cold-chain supervision", ["cold-chain"])
        .with_variable(cooperative_variable())
        .with_variable(product_variable())
        .with_panel(
            stat_panel(
                "Open alerts",
                f"SELECT count(*)::float8 AS open_alerts FROM reporting.open_alerts a WHERE {coop_a}",
            )
        )
        .with_panel(
            stat_panel(
                "Cold rooms and trucks out of band now",
                f"""SELECT count(*)::float8 AS channels
                      FROM reporting.channels c JOIN reporting.product_bands b USING (product)
                     WHERE c.setting = 'cold_chain' AND c.quantity = 'temperature'
                       AND (c.last_value > b.temp_max OR c.last_value < b.temp_min) AND {coop_c} AND {prod_c}""",
            ).span(6)
        )
        .with_panel(
            table_panel(
                "Open alerts by severity and cooperative",
                f"""SELECT co.cooperative, a.severity, count(*) AS open_alerts
                      FROM reporting.open_alerts a JOIN reporting.cooperatives co USING (cooperative_id)
                     WHERE {coop_a}
                     GROUP BY co.cooperative, a.severity ORDER BY open_alerts DESC""",
                ["cooperative", "severity", "open_alerts"],
            ).span(12)
        )
        .with_panel(
            table_panel(
                "Open alerts",
                f"""SELECT a.opened_at, co.cooperative, a.gateway_id, a.channel, a.severity, a.id AS alert_id
                      FROM reporting.open_alerts a JOIN reporting.cooperatives co USING (cooperative_id)
                     WHERE {coop_a}
                     ORDER BY a.opened_at DESC LIMIT 200""",
                ["opened_at", "cooperative", "gateway_id", "channel", "severity", "alert_id"],
            )
        )
        .with_panel(
            table_panel(
                "Cold rooms and trucks: temperature now vs band",
                f"""SELECT c.cooperative, c.gateway_id, c.channel, c.product, c.last_time,
                           c.last_value AS temperature_c, b.temp_min AS band_min_c, b.temp_max AS band_max_c,
                           CASE WHEN b.product IS NULL THEN 'no band'
                                WHEN c.last_value > b.temp_max THEN 'too warm'
                                WHEN c.last_value < b.temp_min THEN 'too cold'
                                ELSE 'in band' END AS state
                      FROM reporting.channels c LEFT JOIN reporting.product_bands b USING (product)
                     WHERE c.setting = 'cold_chain' AND c.quantity = 'temperature' AND {coop_c} AND {prod_c}
                     ORDER BY state DESC, c.cooperative, c.gateway_id, c.channel""",
                [
                    "cooperative",
                    "gateway_id",
                    "channel",
                    "product",
                    "last_time",
                    "temperature_c",
                    "band_min_c",
                    "band_max_c",
                    "state",
                ],
            )
        )
        .with_panel(
            ts_panel(
                "Cold-chain temperature",
                f"""SELECT x.time, c.gateway_id || ' ' || c.channel AS metric, x.temperature_c
                      FROM (SELECT {ROLLUP_GROUP} AS time, r.channel_id, sum(r.total) / sum(r.n) AS temperature_c
                              FROM reporting.readings_15m r
                             WHERE {ROLLUP_RANGE} AND r.channel_id IN (
                                   SELECT c.channel_id FROM reporting.channels c
                                    WHERE c.setting = 'cold_chain' AND c.quantity = 'temperature'
                                      AND {coop_c} AND {prod_c})
                             GROUP BY 1, 2) x
                      JOIN reporting.channels c USING (channel_id)
                     ORDER BY 1""",
                unit="celsius",
            )
        )
        .with_panel(
            ts_panel(
                "Time out of band per day",
                _cold(
                    """SELECT x.time, c.gateway_id || ' ' || c.channel AS metric, x.hours_out_of_band
                         FROM (SELECT time_bucket('1 day', time, TIMESTAMPTZ '2000-01-01 00:00+08') AS time, channel_id,
                                      sum(seconds_out) / 3600.0 AS hours_out_of_band
                                 FROM cr GROUP BY 1, 2) x
                         JOIN reporting.channels c USING (channel_id)
                        ORDER BY 1"""
                ),
                unit="h",
                # Days start at midnight China Standard Time: a fixed +08 origin (China keeps no
                # daylight saving), much cheaper per row than bucketing in a named time zone.
                description="Hours per day (China Standard Time) a channel read outside its product's band.",
            )
        )
        .with_panel(
            table_panel(
                "Worst excursions",
                _cold(
                    """SELECT c.cooperative, c.gateway_id, c.channel, c.product, x.hours_out_of_band,
                              x.warmest_c, x.coldest_c, x.worst_deviation_c
                         FROM (SELECT channel_id,
                                      sum(seconds_out) / 3600.0 AS hours_out_of_band,
                                      max(max_value) AS warmest_c, min(min_value) AS coldest_c,
                                      greatest(max(max_above), max(max_below)) AS worst_deviation_c
                                 FROM cr GROUP BY channel_id
                               HAVING greatest(max(max_above), max(max_below)) > 0) x
                         JOIN reporting.channels c USING (channel_id)
                        ORDER BY x.worst_deviation_c DESC NULLS LAST LIMIT 20"""
                ),
                [
                    "cooperative",
                    "gateway_id",
                    "channel",
                    "product",
                    "hours_out_of_band",
                    "warmest_c",
                    "coldest_c",
                    "worst_deviation_c",
                ],
            )
        )
        .with_panel(
            table_panel(
                "Mean kinetic temperature",
                f"""SELECT c.cooperative, c.gateway_id, c.channel, c.product,
                           mkt_celsius(x.mk, x.mk_seconds) AS mkt_c, x.total / x.n AS mean_c, x.n AS readings
                      FROM (SELECT r.channel_id, sum(r.mk) AS mk, sum(r.mk_seconds) AS mk_seconds,
                                   sum(r.total) AS total, sum(r.n) AS n
                              FROM reporting.readings_15m r
                             WHERE {ROLLUP_RANGE} AND r.channel_id IN (
                                   SELECT c.channel_id FROM reporting.channels c
                                    WHERE c.setting = 'cold_chain' AND c.quantity = 'temperature'
                                      AND {coop_c} AND {prod_c})
                             GROUP BY r.channel_id) x
                      JOIN reporting.channels c USING (channel_id)
                     ORDER BY mkt_c DESC""",
                ["cooperative", "gateway_id", "channel", "product", "mkt_c", "mean_c", "readings"],
                description="MKT over the time range per cold room or truck, weighted by how long each reading "
                "stands (ΔH/R = 10,000 K).",
            )
        )
        .with_panel(
            table_panel(
                "Mean kinetic temperature per shipment",
                f"""SELECT s.lot, s.product, c.gateway_id, c.channel, s.started_at, s.ended_at,
                           mkt_celsius(sum(s.seconds * mkt_arrhenius(s.value)),
                                       sum(s.seconds) FILTER (WHERE mkt_arrhenius(s.value) IS NOT NULL)) AS mkt_c,
                           max(s.value) AS warmest_c, count(*) AS readings
                      FROM reporting.shipment_spans s JOIN reporting.channels c USING (channel_id)
                     WHERE $__timeFilter(s.time) AND c.quantity = 'temperature'
                       AND {coop_filter("s.cooperative_id")} AND {product_filter("s.product")}
                     GROUP BY s.shipment_id, s.lot, s.product, c.gateway_id, c.channel, s.started_at, s.ended_at
                     ORDER BY mkt_c DESC LIMIT 200""",
                [
                    "lot",
                    "product",
                    "gateway_id",
                    "channel",
                    "started_at",
                    "ended_at",
                    "mkt_c",
                    "warmest_c",
                    "readings",
                ],
                description="MKT of the readings while each batch was in a cold room or truck, the reading standing "
                "at custody start included and each weighted by how long it stands (one row per custody "
                "interval, within the time range; ΔH/R = 10,000 K).",
            )
        )
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
    # A certificate held by a cooperative covers all its products (product is NULL).
    prod = f"(c.product IS NULL OR {product_filter('c.product')})"
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
                     WHERE c.status = 'valid' AND {coop} AND {prod}
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
                     WHERE c.status IN ('valid', 'not_yet_valid') AND c.valid_to IS NOT NULL
                       AND c.valid_to < current_date + 90 AND {coop} AND {prod}
                     GROUP BY c.cert_type ORDER BY c.cert_type""",
                ["cert_type", "within_30_days", "within_60_days", "within_90_days"],
            ).span(12)
        )
        .with_panel(
            table_panel(
                "Batches without a valid 承诺达标合格证",
                f"""SELECT b.batch_id, b.lot, b.product, b.variety, b.harvest_date, b.created_at
                      FROM reporting.batches b
                     WHERE $__timeFilter(b.created_at) AND {coop_b} AND {prod_b}
                       AND NOT EXISTS (SELECT FROM reporting.certificates c
                                        WHERE c.batch_id = b.batch_id AND c.cert_type = 'compliance'
                                          AND c.status = 'valid')
                     ORDER BY b.created_at DESC LIMIT 200""",
                ["batch_id", "lot", "product", "variety", "harvest_date", "created_at"],
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
                f"""SELECT count(DISTINCT b.recall_id)::float8 AS recalls FROM reporting.recalls b
                     WHERE $__timeFilter(b.recalled_at) AND {coop_b} AND {prod_b}""",
            )
        )
        .with_panel(
            table_panel(
                "Recalled batches",
                f"""SELECT b.recalled_at, b.lot, b.product, b.recalled_batch_id, b.batch_id, b.reason
                      FROM reporting.recalls b
                     WHERE $__timeFilter(b.recalled_at) AND {coop_b} AND {prod_b}
                     ORDER BY b.recalled_at DESC, b.batch_id LIMIT 200""",
                ["recalled_at", "lot", "product", "recalled_batch_id", "batch_id", "reason"],
                description="Every batch a recall covers: the recalled batch and everything downstream in its lineage.",
            )
        )
    )


# ---- 4. Consumer scans -----------------------------------------------------------------------------
# reporting.scans (scanned_at, code, batch_id, lot, cooperative_id, product, network, browser,
#     suspicious, reason): network is a short prefix of the keyed hash of the scanner's network
#     (/24, /48), never an address; suspicious is the trace domain's counterfeit flag on the code.


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
                f"""SELECT s.code, s.lot, s.product, count(*) AS scans, count(DISTINCT s.network) AS networks,
                           min(s.scanned_at) AS first_scan, max(s.scanned_at) AS last_scan,
                           string_agg(DISTINCT s.reason, '; ') AS reasons
                      FROM reporting.scans s
                     WHERE $__timeFilter(s.scanned_at) AND s.suspicious AND {coop} AND {prod}
                     GROUP BY s.code, s.lot, s.product ORDER BY last_scan DESC LIMIT 200""",
                ["code", "lot", "product", "scans", "networks", "first_scan", "last_scan", "reasons"],
            )
        )
        .with_panel(
            table_panel(
                "Where scans come from (networks)",
                f"""SELECT s.network, count(*) AS scans, count(DISTINCT s.code) AS codes,
                           count(*) FILTER (WHERE s.suspicious) AS suspicious,
                           string_agg(DISTINCT s.browser, ', ') AS browsers
                      FROM reporting.scans s
                     WHERE $__timeFilter(s.scanned_at) AND {coop} AND {prod}
                     GROUP BY s.network ORDER BY scans DESC, s.network LIMIT 100""",
                ["network", "scans", "codes", "suspicious", "browsers"],
                description="Scans keep no personal data: a network is a short keyed hash of its /24 (/48) prefix, "
                "so regions and cities are not known.",
            )
        )
    )


BOARDS: dict[str, Callable[[], cogbuilder.Builder[DashboardModel]]] = {
    "cold-chain": cold_chain,
    "farm-environment": farm_environment,
    "fleet-health": fleet_health,
    "certification": certification_overview,
    "consumer-scans": consumer_scans,
}


def build_all() -> dict[str, DashboardModel]:
    """Every dashboard, by file stem."""
    return {name: make().build() for name, make in BOARDS.items()}
