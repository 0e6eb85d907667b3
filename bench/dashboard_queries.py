"""Times every dashboard panel query (and alert-rule query) over N readings and a 7-day range.

    AGRITRACE_ENV_FILE=.local/agritrace.env .venv/bin/python bench/dashboard_queries.py --readings 10000000

Builds a database of its own (dropped afterwards unless --keep), loads N readings with binary COPY
spread over `--channels` farm and cold-chain channels and 7 days, then runs each panel's SQL with
Grafana's macros expanded ("All" selected, the default 7-day range) as the read-only Grafana role.
Beside the figures it prints a ceiling measured in the same run: a bare count of the range's
readings, the least work any panel over the range can do.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from agritrace import db, roles
from agritrace.dashboards import boards, provisioning, rollup
from agritrace.dashboards.macros import Variable, expand, interval_for
from agritrace.settings import get_settings

BUDGET_MS = 500.0


def seed(conn: db.Conn, *, readings: int, channels: int, start: datetime, end: datetime) -> None:
    """Cooperatives, gateways and channels (half farm, half cold chain), then readings by COPY."""
    coops = [
        conn.execute("INSERT INTO cooperatives (name) VALUES (%s) RETURNING id", (f"coop-{i}",)).fetchone()
        for i in range(max(1, channels // 20))
    ]
    kinds = [
        ("orchard-mango-{n}/air_temp", "Cel"),
        ("orchard-mango-{n}/humidity", "%RH"),
        ("teagarden-{n}/soil_moisture", "%"),
        ("coldroom-mango-{n}/temp", "Cel"),
        ("truck-citrus-{n}/temp", "Cel"),
    ]
    ids = []
    for i in range(channels):
        coop = coops[i % len(coops)]
        assert coop is not None
        gw = f"gw-bench-{i // 5:04d}"
        conn.execute(
            "INSERT INTO gateways (id, cooperative_id, online, last_seen) VALUES (%s, %s, %s, now())"
            " ON CONFLICT DO NOTHING",
            (gw, coop["id"], i % 7 != 0),
        )
        name, unit = kinds[i % len(kinds)]
        row = conn.execute(
            "INSERT INTO channels (gateway_id, name, unit, last_time, last_value) VALUES (%s, %s, %s, %s, %s)"
            " RETURNING id",
            (gw, name.format(n=i), unit, end, 12.0),
        ).fetchone()
        assert row is not None
        ids.append(row["id"])
    per_channel = readings // channels
    step = (end - start) / per_channel
    with (
        conn.cursor() as cur,
        cur.copy("COPY readings (time, channel_id, value) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["timestamptz", "int4", "float8"])
        for k in range(per_channel):
            t = start + k * step
            for j, ch in enumerate(ids):
                # Mostly in band, with an excursion now and then so excursion panels have work.
                copy.write_row((t, ch, 11.5 + ((k + j) % 97 == 0) * 4.0 + (j % 3)))
    # What the ingest worker does: mark where the dashboards' rollup must re-aggregate from.
    conn.execute("UPDATE channels SET rollup_from = %s", (start,))
    conn.commit()


def roles_url() -> str:
    url = get_settings().database_roles_url
    if url is None:
        raise SystemExit("set AGRITRACE_DATABASE_ROLES_URL (a login that may create roles)")
    return url.get_secret_value()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=10_000_000)
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()

    reader_name = f"agritrace_grafana_b{secrets.token_hex(4)}"
    with db.scratch_database(f"agritrace_bench_{secrets.token_hex(4)}", keep=args.keep) as url:
        try:
            end = datetime.now(UTC).replace(microsecond=0)
            start = end - timedelta(days=args.days)
            t0 = time.perf_counter()
            with db.connect(url) as conn:
                seed(conn, readings=args.readings, channels=args.channels, start=start, end=end)
            load_s = time.perf_counter() - t0
            with db.connect(url, autocommit=True) as conn:
                t0 = time.perf_counter()
                rolled = rollup.run_once(conn)
                full_rollup_s = time.perf_counter() - t0
                # An incremental run as the job makes it every minute: one new reading per channel.
                conn.execute(
                    """INSERT INTO readings (time, channel_id, value) SELECT %s, id, 12.0 FROM channels""",
                    (end,),
                )
                conn.execute("UPDATE channels SET rollup_from = %s", (end,))
                t0 = time.perf_counter()
                rollup.run_once(conn)
                step_rollup_s = time.perf_counter() - t0
            password = secrets.token_urlsafe(16)
            with db.connect(db.owner_url(url), autocommit=True) as conn:
                conn.execute("ANALYZE")
            # Roles are made by the login that may (AGRITRACE_DATABASE_ROLES_URL, the local stack's).
            with db.connect(roles_url(), autocommit=True) as conn:
                roles.create_reader(conn, name=reader_name, password=password)
            print(f"loaded {args.readings:,} readings on {args.channels} channels in {load_s:.1f} s")
            print(
                f"rollup: {rolled} channels in full in {full_rollup_s:.1f} s; "
                f"incremental run (one new reading per channel) {step_rollup_s * 1000:.0f} ms"
            )

            variables = {
                "cooperative": Variable(all_value=boards.COOP_ALL),
                "product": Variable(all_value=boards.PRODUCT_ALL),
            }
            queries: list[tuple[str, str]] = []
            for board, model in boards.build_all().items():
                for panel in json.loads(provisioning.dashboard_json(model))["panels"]:
                    for target in panel["targets"]:
                        queries.append((f"{board}: {panel['title']}", target["rawSql"]))
            queries += [
                (f"alert rule: {t}", q)
                for t, q in provisioning.sql_of_alert_rules(provisioning.alert_rules())
            ]

            def timed(reader: psycopg.Connection[object], text: str) -> float:
                runs = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    reader.execute(text.encode()).fetchall()
                    runs.append((time.perf_counter() - t) * 1000)
                return statistics.median(runs)

            interval = interval_for(start, end)
            with psycopg.connect(
                make_conninfo(url, user=reader_name, password=password), autocommit=True
            ) as reader:
                ceiling = timed(
                    reader,
                    expand(
                        "SELECT count(*) FROM reporting.readings WHERE $__timeFilter(time)",
                        start=start,
                        end=end,
                    ),
                )
                print(f"ceiling (bare count of the range's readings): {ceiling:8.1f} ms")
                print(
                    f"{'median ms':>10}  {'budget':>6}  panel ({args.repeat} runs, $__interval={interval}, All selected)"
                )
                over = 0
                for title, raw in queries:
                    ms = timed(
                        reader, expand(raw, start=start, end=end, interval=interval, variables=variables)
                    )
                    verdict = "ok" if ms <= BUDGET_MS else "OVER"
                    over += verdict == "OVER"
                    print(f"{ms:10.1f}  {verdict:>6}  {title}")
            print(f"{len(queries)} queries, {over} over the {BUDGET_MS:.0f} ms budget")
        finally:
            with psycopg.connect(roles_url(), autocommit=True) as admin:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(reader_name)))


if __name__ == "__main__":
    main()
