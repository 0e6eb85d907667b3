"""Benchmark: cold-chain summary of one channel over 30 days of one-minute readings, and of a lot
whose 30 days of custody are split into several intervals across a cold room and a truck (the
consumer page's summary: carry-in, clipping, ~96 chart buckets; target < 100 ms).

Prints the summaries' times beside a trivial `SELECT count(*)` over the same rows (the ceiling: what
just reading the range costs). Runs in a database of its own, dropped at the end.

    AGRITRACE_ENV_FILE=/work/main/.local/agritrace.env .venv/bin/python bench/coldchain_summary.py [--days 30]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta

from agritrace import db
from agritrace.coldchain import profiles, summary
from agritrace.trace import coldchain_page


def timed(fn: object, repeat: int) -> list[float]:
    assert callable(fn)
    fn()  # warm the cache and the plan
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with db.scratch_database(f"agritrace_bench_{secrets.token_hex(4)}") as url:
        with db.connect(url, autocommit=True) as conn:
            coop = conn.execute("INSERT INTO cooperatives (name) VALUES ('bench') RETURNING id").fetchone()
            assert coop is not None
            conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES ('bench-gw', %s)", (coop["id"],))
            ch = conn.execute(
                "INSERT INTO channels (gateway_id, name, unit) VALUES ('bench-gw', 'room/temp', 'Cel') RETURNING id"
            ).fetchone()
            assert ch is not None
            profiles.ensure_defaults(conn)
            profiles.set_channel_profile(conn, gateway_id="bench-gw", channel="room/temp", profile="mango")
            end = datetime(2026, 7, 1, tzinfo=UTC)
            start = end - timedelta(days=args.days)
            n = args.days * 1440
            t = time.perf_counter()
            with conn.cursor().copy("COPY readings (time, channel_id, value) FROM STDIN") as copy:
                for i in range(n):
                    # A daily cycle around 11.5 °C that dips out of the 10-13 band for a while each day.
                    copy.write_row(
                        (start + timedelta(minutes=i), ch["id"], 11.5 + 2.5 * ((i % 1440) / 720 - 1))
                    )
            # The truck: the same days, a degree warmer (its readings are read only while it holds the lot).
            truck = conn.execute(
                "INSERT INTO channels (gateway_id, name, unit) VALUES ('bench-gw', 'truck/temp', 'Cel') RETURNING id"
            ).fetchone()
            assert truck is not None
            conn.execute(
                """INSERT INTO readings (time, channel_id, value)
                   SELECT time, %s, value + 1 FROM readings WHERE channel_id = %s""",
                (truck["id"], ch["id"]),
            )
            conn.execute("ANALYZE readings")
            lot = conn.execute(
                "INSERT INTO batches (lot, product, cooperative_id) VALUES ('BENCH-1', 'mango', %s) RETURNING id",
                (coop["id"],),
            ).fetchone()
            assert lot is not None
            # Six custody intervals, room and truck in turn, with edges between readings.
            edges = [start + timedelta(days=5 * k, seconds=37) for k in range(6)] + [end]
            for k in range(6):
                conn.execute(
                    """INSERT INTO batch_custody (batch_id, channel_id, started_at, ended_at)
                       VALUES (%s, %s, %s, %s)""",
                    (lot["id"], (ch, truck)[k % 2]["id"], edges[k], edges[k + 1]),
                )
            load_s = time.perf_counter() - t

            def ceiling() -> None:
                conn.execute(
                    "SELECT count(*) FROM readings WHERE channel_id = %s AND time >= %s AND time < %s",
                    (ch["id"], start, end),
                ).fetchone()

            def summarise() -> None:
                summary.summarize(conn, channel_id=ch["id"], start=start, end=end)

            def lot_summary() -> None:
                coldchain_page.page_summary(conn, product="mango", batch_ids=[lot["id"]])

            floor_ms = timed(ceiling, args.repeat)
            summary_ms = timed(summarise, args.repeat)
            lot_ms = timed(lot_summary, args.repeat)
            ls = coldchain_page.page_summary(conn, product="mango", batch_ids=[lot["id"]])
            s = summary.summarize(conn, channel_id=ch["id"], start=start, end=end)
        print(f"readings: {n} ({args.days} days, one a minute), loaded in {load_s:.1f} s")
        print(
            f"summary  (min/max/mean/band/excursions/MKT, {len(s['buckets'])} hourly buckets):"
            f" median {statistics.median(summary_ms):.1f} ms, max {max(summary_ms):.1f} ms"
        )
        print(
            f"lot      (6 custody intervals over {args.days} days, room and truck, {len(ls.buckets)} chart buckets):"
            f" median {statistics.median(lot_ms):.1f} ms, max {max(lot_ms):.1f} ms"
            f" ({ls.readings} readings, verdict {ls.verdict}, {ls.minutes_out_of_band:.0f} min out of band)"
        )
        print(
            f"ceiling  (SELECT count(*) over the same range):"
            f" median {statistics.median(floor_ms):.1f} ms, max {max(floor_ms):.1f} ms"
        )
        print(f"check: excursions={s['excursions']} mkt={s['mkt']:.2f} mean={s['mean']:.2f}")


if __name__ == "__main__":
    main()
