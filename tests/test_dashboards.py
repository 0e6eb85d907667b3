"""Every panel of every exported dashboard, with Grafana's macros expanded, runs as the read-only role."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import factories
import psycopg
import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.postgres import types as pg_types

from agritrace import db, roles
from agritrace.coldchain import evaluator, profiles
from agritrace.dashboards import boards, provisioning, queries, rollup
from agritrace.dashboards.macros import Variable, expand, interval_for
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import page as trace_page
from agritrace.trace import service as trace_service

REPO = Path(__file__).resolve().parents[1]
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=7)
TIME_OID = pg_types["timestamptz"].oid
NUMERIC_OIDS = {pg_types[n].oid for n in ("int2", "int4", "int8", "float4", "float8", "numeric")}
TEXT_OIDS = {pg_types[n].oid for n in ("text", "varchar", "name")}


def _exported_panels() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, model in boards.build_all().items():
        for panel in json.loads(provisioning.dashboard_json(model))["panels"]:
            for inner in panel.get("panels", [panel]):
                out.append((name, inner))
    return out


PANELS = _exported_panels()


@pytest.fixture(scope="module")
def reader_url(database: str, roles_url: str) -> Iterator[str]:
    """A login role like the one Grafana uses: a member of agritrace_grafana and nothing more."""
    name = f"agritrace_grafana_t{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    with db.connect(roles_url, autocommit=True) as conn:
        roles.create_reader(conn, name=name, password=password)
    yield make_conninfo(database, user=name, password=password)
    with db.connect(roles_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def seed(conn: db.Conn) -> dict[str, Any]:
    """Two cooperatives with orchard, tea-garden, cold-room and truck sensors over the last 7 days."""
    coop_a = factories.cooperative(conn, name=factories.unique("百色芒果合作社"))
    coop_b = factories.cooperative(conn, name=factories.unique("tea-coop"))
    gw_farm = factories.gateway(conn, cooperative_id=coop_a["id"])
    gw_cold = factories.gateway(conn, cooperative_id=coop_a["id"])
    gw_tea = factories.gateway(conn, cooperative_id=coop_b["id"])
    conn.execute(
        "UPDATE gateways SET online = true, last_seen = now() WHERE id IN (%s, %s)",
        (gw_farm["id"], gw_cold["id"]),
    )
    specs: list[tuple[str, str, str, Callable[[int], float]]] = [
        (gw_farm["id"], "orchard-mango-1/air_temp", "Cel", lambda i: 28 + 4 * math.sin(i / 12)),
        (gw_farm["id"], "orchard-mango-1/humidity", "%RH", lambda i: 70 + 10 * math.cos(i / 12)),
        (gw_farm["id"], "orchard-mango-1/soil_moisture", "%", lambda i: 30 + (i % 10)),
        (gw_tea["id"], "teagarden-2/air_temp", "Cel", lambda i: 18 + 3 * math.sin(i / 12)),
        (gw_tea["id"], "teagarden-2/soil_moisture", "%VWC", lambda i: 40.0),
        # The mango cold room warms to 15 °C (band 10-13 °C) for its last 6 readings.
        (gw_cold["id"], "coldroom-mango/temp", "Cel", lambda i: 15.0 if i >= 498 else 12.0),
        (gw_cold["id"], "truck-citrus/temp", "Cel", lambda i: 6.5),
    ]
    # A truck registered whose sensor has never reported: a silent channel.
    factories.channel(conn, gateway_id=gw_cold["id"], name="truck-2/temp", unit="Cel")
    channels = {}
    step = timedelta(minutes=20)
    for gw, name, unit, value in specs:
        ch = factories.channel(conn, gateway_id=gw, name=name, unit=unit)
        points = [(START + i * step, float(value(i))) for i in range(504)]
        factories.readings(conn, channel_id=ch["id"], points=points)
        # What the ingest worker does with a batch: the latest value, and the rollup's mark.
        conn.execute(
            "UPDATE channels SET last_time = %s, last_value = %s, rollup_from = least(rollup_from, %s) WHERE id = %s",
            (points[-1][0], points[-1][1], points[0][0], ch["id"]),
        )
        channels[name] = ch
    seeded = {
        "coops": [coop_a, coop_b],
        "channels": channels,
        "step": step,
        **_seed_cold_chain(conn, gw_cold["id"], channels),
        **_seed_trace(conn, coop_a, coop_b, channels),
        "dead_letters": _seed_dead_letters(conn, gw_farm["id"]),
    }
    assert rollup.run_once(conn) == len(specs)
    return seeded


def _seed_cold_chain(conn: db.Conn, gateway_id: str, channels: dict[str, Any]) -> dict[str, Any]:
    """The cold rooms watched against the default profiles; the evaluator opens the mango room's alert."""
    profiles.ensure_defaults(conn)
    for name, profile in (("coldroom-mango/temp", "mango"), ("truck-citrus/temp", "citrus")):
        profiles.set_channel_profile(conn, gateway_id=gateway_id, channel=name, profile=profile)
    evaluator.evaluate_channel(conn, channel_id=channels["coldroom-mango/temp"]["id"], now=NOW)
    alerts = conn.execute(
        "SELECT id, status FROM alerts WHERE channel_id = %s", (channels["coldroom-mango/temp"]["id"],)
    ).fetchall()
    assert [a["status"] for a in alerts] == ["open"], alerts
    return {"alert_id": alerts[0]["id"]}


def _seed_trace(
    conn: db.Conn, coop_a: dict[str, Any], coop_b: dict[str, Any], channels: dict[str, Any]
) -> dict[str, Any]:
    """Batches with certificates, inspections, a recall, scanned codes and cold-room custody.

    Rows the trace domain stamps with now() are moved into the dashboards' range (it ends at NOW,
    taken when this module was imported, i.e. before the test's transaction started)."""
    today = NOW.date()
    mango = trace_service.create_batch(conn, product="mango", cooperative_id=coop_a["id"], variety="台农")
    mango_2 = trace_service.create_batch(conn, product="mango", cooperative_id=coop_a["id"], variety="贵妃")
    tea = trace_service.create_batch(conn, product="tea", cooperative_id=coop_b["id"], variety="绿茶")
    conn.execute(
        "UPDATE batches SET created_at = %s WHERE id IN (%s, %s, %s)",
        (NOW - timedelta(days=3), mango["id"], mango_2["id"], tea["id"]),
    )
    n = secrets.randbelow(10**6)
    trace_service.add_certificate(
        conn,
        kind="green_food",
        number=f"LB-45-2025{n:06d}A",
        issuer="中国绿色食品发展中心",
        valid_from=today - timedelta(days=300),
        valid_to=today + timedelta(days=45),
        batch_id=mango["id"],
    )
    trace_service.add_certificate(
        conn,
        kind="geographical_indication",
        number=f"AGI{n % 100000:05d}",
        issuer="农业农村部",
        valid_from=today - timedelta(days=30),
        valid_to=today + timedelta(days=3000),
        holder_cooperative_id=coop_a["id"],
    )
    trace_service.add_certificate(
        conn,
        kind="organic",
        number=f"124OP25{n:06d}",
        issuer="南京国环有机产品认证中心",
        valid_from=today - timedelta(days=400),
        valid_to=today + timedelta(days=20),
        batch_id=tea["id"],
    )
    trace_service.set_compliance_certificate(
        conn,
        batch_id=mango["id"],
        product_name="百色芒果",
        quantity=500,
        unit="kg",
        origin="广西百色",
        issued_at=NOW - timedelta(days=2),
        issuer="百色芒果合作社",
        contact="0776-1234567",
    )
    for batch, passed in ((mango, True), (mango_2, False), (tea, True)):
        trace_service.add_inspection(
            conn, batch_id=batch["id"], inspected_at=NOW - timedelta(days=2), kind="农药残留", passed=passed
        )
    trace_service.recall_batch(conn, batch_id=mango_2["id"], reason="农药残留超标", recalled_by="regulator")
    conn.execute(
        "UPDATE batch_recalls SET recalled_at = %s WHERE batch_id = %s",
        (NOW - timedelta(days=1), mango_2["id"]),
    )
    serials = [c["code"] for c in trace_codes.issue_codes(conn, batch_id=mango["id"], count=2)]
    for i in range(get_settings().counterfeit_networks + 2):
        trace_page.scan_view(
            conn, serial=serials[0], ip=f"203.0.{i}.7", user_agent="Mozilla/5.0 MicroMessenger/8.0"
        )
    trace_page.scan_view(conn, serial=serials[1], ip="198.51.100.9", user_agent="Mozilla/5.0 Chrome/120.0")
    conn.execute(
        "UPDATE code_scans SET time = %s WHERE serial = ANY(%s)", (NOW - timedelta(hours=5), serials)
    )
    # The mango batch spent two days in the cold room, its last day warm (the 15 °C spell).
    trace_service.add_custody(
        conn,
        batch_id=mango["id"],
        channel_id=channels["coldroom-mango/temp"]["id"],
        started_at=NOW - timedelta(days=2),
    )
    return {"batches": {"mango": mango, "mango_2": mango_2, "tea": tea}, "codes": serials}


def _seed_dead_letters(conn: db.Conn, gateway_id: str) -> int:
    conn.execute(
        """INSERT INTO dead_letters (received_at, topic, gateway_id, reason, detail, payload)
           VALUES (%s, %s, %s, 'bad-senml', 'secret detail', %s)""",
        (NOW - timedelta(hours=1), f"agritrace/v1/{gateway_id}/senml", gateway_id, b'{"pass": "s3cret"'),
    )
    return 1


@pytest.fixture
def seeded(conn: db.Conn) -> dict[str, Any]:
    return seed(conn)


def _selections(reader: psycopg.Connection[Any]) -> dict[str, dict[str, Variable]]:
    """All, one, and several values of each variable (the cooperative's values from its own query)."""
    coop_query = boards.cooperative_variable().build().query
    assert isinstance(coop_query, str)
    coop_ids = [str(r[1]) for r in reader.execute(coop_query).fetchall()]
    assert len(coop_ids) >= 2
    return {
        "all": {
            "cooperative": Variable(all_value=boards.COOP_ALL),
            "product": Variable(all_value=boards.PRODUCT_ALL),
        },
        "one": {"cooperative": Variable(values=coop_ids[:1]), "product": Variable(values=["mango"])},
        "several": {"cooperative": Variable(values=coop_ids), "product": Variable(values=["mango", "tea"])},
    }


def _run(
    reader: psycopg.Connection[Any], raw_sql: str, variables: dict[str, Variable]
) -> tuple[list[Any], list[Any]]:
    expanded = expand(raw_sql, start=START, end=NOW, interval=interval_for(START, NOW), variables=variables)
    cur = reader.execute(expanded)
    assert cur.description is not None
    return list(cur.description), cur.fetchall()


@pytest.mark.parametrize(("board", "panel"), PANELS, ids=[f"{b}:{p['title']}" for b, p in PANELS])
def test_every_panel_query_runs_as_the_grafana_reader_and_returns_its_shape(
    seeded: dict[str, Any], reader_url: str, board: str, panel: dict[str, Any]
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        for selection, variables in _selections(reader).items():
            for target in panel["targets"]:
                columns, rows = _run(reader, target["rawSql"], variables)
                names = [c.name for c in columns]
                oids = [c.type_code for c in columns]
                if selection == "all":
                    assert rows, f"{panel['title']}: no rows from the seeded data"
                if target["format"] == "time_series":
                    assert names[0] == "time" and oids[0] == TIME_OID, names
                    assert any(o in NUMERIC_OIDS for o in oids[1:]), names
                    assert all(
                        o in NUMERIC_OIDS or (n == "metric" and o in TEXT_OIDS)
                        for n, o in zip(names[1:], oids[1:], strict=True)
                    )
                    times = [r[0] for r in rows]
                    assert times == sorted(times), "Grafana needs long-format series in time order"
                elif panel["type"] == "stat":
                    assert len(rows) == 1 and all(o in NUMERIC_OIDS for o in oids), names
                else:
                    organize = next(t for t in panel["transformations"] if t["id"] == "organize")
                    index = organize["options"]["indexByName"]
                    assert names == sorted(index, key=index.get), names


def test_every_dashboard_offers_cooperative_and_time_range_and_the_farm_and_cold_chain_ones_product() -> None:
    for name, model in boards.build_all().items():
        data = json.loads(provisioning.dashboard_json(model))
        variables = {v["name"] for v in data["templating"]["list"]}
        assert "cooperative" in variables
        assert data["time"] == {"from": "now-7d", "to": "now"}
        if name != "fleet-health":
            assert "product" in variables


def _panel_sql(board: str, title: str) -> str:
    panel = next(p for b, p in PANELS if b == board and p["title"] == title)
    return str(panel["targets"][0]["rawSql"])


def _all() -> dict[str, Variable]:
    return {
        "cooperative": Variable(all_value=boards.COOP_ALL),
        "product": Variable(all_value=boards.PRODUCT_ALL),
    }


def test_regulator_sees_the_hours_a_mango_cold_room_spent_above_its_band(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, rows = _run(reader, _panel_sql("cold-chain", "Worst excursions"), _all())
    assert [r[2] for r in rows] == ["coldroom-mango/temp"]
    # Six readings at 15 °C, each standing for 20 minutes (the newest until the end of the range).
    hours, warmest, worst = float(rows[0][4]), rows[0][5], rows[0][7]
    assert hours == pytest.approx(6 * 20 / 60)
    assert warmest == 15.0 and worst == pytest.approx(2.0)


def test_mean_kinetic_temperature_of_a_steady_truck_is_its_temperature(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, rows = _run(reader, _panel_sql("cold-chain", "Mean kinetic temperature"), _all())
    by_channel = {r[2]: r for r in rows}
    assert by_channel["truck-citrus/temp"][4] == pytest.approx(6.5)
    # By hand, weighted by how long each reading stands (20 min; the newest, with no next one, 0 here):
    # 498 readings at 12 °C and 5 at 15 °C count.
    k = (498 * math.exp(-10000 / 285.15) + 5 * math.exp(-10000 / 288.15)) / 503
    assert by_channel["coldroom-mango/temp"][4] == pytest.approx(10000 / -math.log(k) - 273.15, abs=1e-9)


def test_fleet_health_counts_gateways_online_and_offline(seeded: dict[str, Any], reader_url: str) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, online = _run(reader, _panel_sql("fleet-health", "Gateways online"), _all())
        _, offline = _run(reader, _panel_sql("fleet-health", "Gateways offline"), _all())
        _, readings = _run(reader, _panel_sql("fleet-health", "Readings in range"), _all())
    assert (online[0][0], offline[0][0]) == (2, 1)
    assert readings[0][0] == 7 * 504


def test_a_cooperative_selection_shows_only_that_cooperatives_plots(
    seeded: dict[str, Any], reader_url: str
) -> None:
    coop_b = seeded["coops"][1]
    with psycopg.connect(reader_url, autocommit=True) as reader:
        variables = {
            "cooperative": Variable(values=[str(coop_b["id"])]),
            "product": Variable(all_value=boards.PRODUCT_ALL),
        }
        _, rows = _run(reader, _panel_sql("farm-environment", "Plots now"), variables)
    assert [(r[0], r[1], r[2]) for r in rows] == [(coop_b["name"], "teagarden-2", "tea")]


def test_alert_rules_fire_for_a_room_too_warm_and_a_truck_too_cold(
    conn: db.Conn, seeded: dict[str, Any], reader_url: str
) -> None:
    # The citrus truck (band 5-8 °C) now reads 3 °C: chilling injury risk.
    conn.execute(
        "UPDATE channels SET last_value = 3.0 WHERE id = %s", (seeded["channels"]["truck-citrus/temp"]["id"],)
    )
    with psycopg.connect(reader_url, autocommit=True) as reader:
        results = {
            title: reader.execute(q).fetchall()
            for title, q in provisioning.sql_of_alert_rules(provisioning.alert_rules())
        }
    out_of_band = results["冷库/冷藏车超温 Cold room or truck out of band"]
    # Both are 2 °C outside their band; the threshold (> 0) fires for each row.
    assert sorted((r[2], r[3]) for r in out_of_band) == [
        ("coldroom-mango/temp", 2.0),
        ("truck-citrus/temp", 2.0),
    ]


def test_exported_dashboards_round_trip_through_the_sdk_types(tmp_path: Path) -> None:
    plugins.register_default_plugins()
    queries.register()
    provisioning.export(tmp_path)
    files = sorted((tmp_path / "dashboards" / "agritrace").glob("*.json"))
    assert [f.stem for f in files] == sorted(boards.BOARDS)
    for path in files:
        data = json.loads(path.read_text())
        parsed = Dashboard.from_json(data)
        assert json.loads(json.dumps(parsed, cls=JSONEncoder)) == data
        assert parsed.panels
        for panel in parsed.panels:
            assert all(isinstance(t, queries.SqlQuery) for t in getattr(panel, "targets", None) or [])


def test_provisioning_files_are_in_grafanas_format(tmp_path: Path) -> None:
    provisioning.export(tmp_path)
    prov = tmp_path / "provisioning"
    ds = provisioning.DatasourcesFile.model_validate(
        yaml.safe_load((prov / "datasources/agritrace.yaml").read_text())
    )
    assert ds.datasources[0].uid == queries.DATASOURCE_UID and ds.datasources[0].jsonData.timescaledb
    assert "password" not in json.dumps(ds.model_dump()["datasources"][0]["jsonData"])
    providers = provisioning.DashboardsFile.model_validate(
        yaml.safe_load((prov / "dashboards/agritrace.yaml").read_text())
    )
    assert providers.providers[0].options.path == provisioning.GRAFANA_DASHBOARDS_PATH
    rules = provisioning.AlertingFile.model_validate(
        yaml.safe_load((prov / "alerting/agritrace-cold-chain.yaml").read_text())
    )
    uids = [r.uid for g in rules.groups for r in g.rules]
    assert len(uids) == len(set(uids)) == 2


def test_a_misspelt_provisioning_field_is_refused() -> None:
    data = provisioning.dashboard_providers().model_dump(by_alias=True)
    data["providers"][0]["disableDeleteion"] = True
    with pytest.raises(ValueError, match="disableDeleteion"):
        provisioning.DashboardsFile.model_validate(data)


def test_the_committed_grafana_provisioning_matches_the_code(tmp_path: Path) -> None:
    provisioning.export(tmp_path)
    committed = REPO / "deploy" / "grafana"
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    stored = {
        p.relative_to(committed): p.read_text()
        for p in committed.rglob("*")
        if p.is_file() and p.suffix != ".md"
    }
    assert stored == fresh, "run: .venv/bin/agritrace dashboards export deploy/grafana"


def test_every_panel_reads_only_reporting_views() -> None:
    panels = [json.loads(provisioning.dashboard_json(m))["panels"] for m in boards.build_all().values()]
    sources = {
        name
        for board in panels
        for panel in board
        for target in panel["targets"]
        for name in re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z_.]*)(?![a-z_.(])", target["rawSql"])
    }
    assert sources, "no FROM found"
    assert all(s.startswith("reporting.") or s == "cr" for s in sources), sources


def test_regulator_sees_a_refused_message_without_its_payload(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, rows = _run(reader, _panel_sql("fleet-health", "Dead letters (rejected messages)"), _all())
        columns = [
            c.name for c in reader.execute("SELECT * FROM reporting.dead_letters LIMIT 0").description or []
        ]
    assert [r[3] for r in rows] == ["bad-senml"]
    assert "payload" not in columns and "detail" not in columns
    assert "s3cret" not in repr(rows)


def test_open_cold_chain_alerts_come_from_the_cold_chain_domain_and_fire_the_grafana_rule(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, rows = _run(reader, _panel_sql("cold-chain", "Open alerts by severity and cooperative"), _all())
        results = {
            title: reader.execute(q).fetchall()
            for title, q in provisioning.sql_of_alert_rules(provisioning.alert_rules())
        }
    # The mango room's 2 h above 13 °C breaks the profile's "warm" rule (a warning after 1 h).
    assert [(r[0], r[1], r[2]) for r in rows] == [(seeded["coops"][0]["name"], "warning", 1)]
    open_alerts = next(v for k, v in results.items() if "Open cold-chain alerts" in k)
    assert [(r[0], r[2]) for r in open_alerts] == [("warning", 1.0)]


def test_certification_overview_counts_valid_certificates_and_batches_missing_their_compliance_certificate(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, valid = _run(reader, _panel_sql("certification", "Valid certificates by type"), _all())
        _, expiring = _run(
            reader, _panel_sql("certification", "Certificates expiring in 30 / 60 / 90 days"), _all()
        )
        _, missing = _run(
            reader, _panel_sql("certification", "Batches without a valid 承诺达标合格证"), _all()
        )
        _, recalled = _run(reader, _panel_sql("certification", "Recalled batches"), _all())
    assert {r[0] for r in valid} == {"compliance", "gi", "green", "organic"}
    # The organic certificate runs out in 20 days, the green-food one in 45.
    assert {r[0]: (r[1], r[2], r[3]) for r in expiring} == {"organic": (1, 1, 1), "green": (0, 1, 1)}
    batches = seeded["batches"]
    assert sorted(r[0] for r in missing) == sorted([batches["mango_2"]["id"], batches["tea"]["id"]])
    assert [r[4] for r in recalled] == [batches["mango_2"]["id"]]


def test_a_code_scanned_from_many_networks_is_flagged_on_the_consumer_scans_board(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, flagged = _run(
            reader, _panel_sql("consumer-scans", "Codes flagged as possibly counterfeit"), _all()
        )
        _, networks = _run(reader, _panel_sql("consumer-scans", "Where scans come from (networks)"), _all())
    assert [r[0] for r in flagged] == [seeded["codes"][0]]
    assert flagged[0][4] > 5 and "networks" in flagged[0][7]
    # Networks are short hashes, never addresses.
    assert all(len(r[0]) == 6 and "." not in r[0] for r in networks)


def test_mkt_per_shipment_covers_only_the_batchs_time_in_the_cold_room(
    seeded: dict[str, Any], reader_url: str
) -> None:
    with psycopg.connect(reader_url, autocommit=True) as reader:
        _, rows = _run(reader, _panel_sql("cold-chain", "Mean kinetic temperature per shipment"), _all())
    assert [(r[0], r[3]) for r in rows] == [(seeded["batches"]["mango"]["lot"], "coldroom-mango/temp")]
    # Two days at 20-minute steps; warmer than the room's 12 °C because of the 15 °C spell.
    assert rows[0][8] == 144 and 12.0 < rows[0][6] < 15.0 and rows[0][7] == 15.0
