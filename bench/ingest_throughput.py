"""Ingest throughput: raw COPY ceiling vs MQTT end-to-end, single-reading messages, latency, worker RSS.

Runs against the local stack's PostgreSQL and Mosquitto, in a database of its own (dropped at the end),
with its own gateways, shared-subscription group and worker client ids (removed at the end).

    AGRITRACE_ENV_FILE=.local/agritrace.env .venv/bin/python bench/ingest_throughput.py [--packs 200]

Prints each figure beside its ceiling or target, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from _stack import (
    CHANNELS,
    INSTANTS,
    count,
    gateways,
    ingest_workers,
    packs_for,
    process_env,
    publish_parallel,
    scratch_database,
    wait_count,
    wait_subscribed,
)

from agritrace import db
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import get_settings


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (a figure a busy machine does not skew)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    """Peak (VmHWM) or current (VmRSS) resident memory of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--packs", type=int, default=1000, help="packs of 50 per gateway")
    parser.add_argument("--singles", type=int, default=20000, help="single-reading messages in total")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the end-to-end phase (worker memory over a long run)"
    )
    args = parser.parse_args()

    tag = secrets.token_hex(3)
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(f"agritrace_bench_{tag}"))
        gws = stack.enter_context(gateways(url, [f"bench-{tag}-{i}" for i in range(args.gateways)]))
        start = time.time() - 20 * 86400  # inside the accepted window, clear of "now"
        total = args.gateways * args.packs * CHANNELS * INSTANTS

        # Raw ceiling: the same rows, binary COPY into the same hypertable, 10,000 rows per COPY.
        with db.connect(url) as conn:
            conn.execute(
                """INSERT INTO channels (gateway_id, name, unit)
                   SELECT g, g || '/room/t' || c, 'Cel' FROM unnest(%s::text[]) g, generate_series(0, %s) c""",
                ([g for g, _ in gws], CHANNELS - 1),
            )
            ids = {(r["gateway_id"], r["name"]): r["id"] for r in conn.execute("SELECT * FROM channels")}
            conn.commit()
            rows = [
                (datetime.fromtimestamp(start + p * INSTANTS + i, UTC), ids[(g, f"{g}/room/t{c}")], 10.0)
                for g, _ in gws
                for p in range(args.packs)
                for i in range(INSTANTS)
                for c in range(CHANNELS)
            ]
            t0 = time.perf_counter()
            for k in range(0, len(rows), 10_000):
                with (
                    conn.transaction(),
                    conn.cursor().copy(
                        "COPY readings (time, channel_id, value) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["timestamptz", "int4", "float8"])
                    for row in rows[k : k + 10_000]:
                        copy.write_row(row)
            ceiling = len(rows) / (time.perf_counter() - t0)
            conn.commit()
        # Emptying a table is the owner's right, not the application's (migration 0013).
        with db.connect(db.owner_url(url), autocommit=True) as owner:
            owner.execute("TRUNCATE readings")
        del rows

        env = process_env(url, tag)
        workers = stack.enter_context(ingest_workers(env, args.workers))
        wait_subscribed(url, gws[0], start)
        base_count = count(url)

        # End-to-end: packs of 50 from every gateway at once (each round later in time than the last).
        worker_pids = [w.pid for w in workers]
        rates: list[float] = []
        cpu: list[float] = []
        rss_rounds: list[list[int]] = []
        for r in range(args.rounds):
            jobs = [(gw, pw, packs_for(gw, args.packs, start + r * args.packs * INSTANTS)) for gw, pw in gws]
            cpu0 = cpu_seconds(worker_pids)
            t0 = time.perf_counter()
            publish_parallel(jobs, args.publishers)
            t1 = wait_count(url, base_count + (r + 1) * total, env=env, workers=args.workers)
            rates.append(total / (t1 - t0))
            cpu.append((cpu_seconds(worker_pids) - cpu0) / total * 1e6)
            rss_rounds.append([rss_kib(pid, "VmRSS") for pid in worker_pids])
            del jobs
        e2e, worker_us = statistics.median(rates), statistics.median(cpu)
        rss_warm = rss_rounds[0]

        # Single-reading messages.
        per_gw = args.singles // args.gateways
        singles = [
            (
                gw,
                pw,
                [
                    json.dumps([{"n": "single", "t": start + 86400 + k, "v": 1}]).encode()
                    for k in range(per_gw)
                ],
            )
            for gw, pw in gws
        ]
        before = count(url)
        t0 = time.perf_counter()
        publish_parallel(singles, args.publishers)
        t1 = wait_count(url, before + per_gw * args.gateways, env=env, workers=args.workers)
        msg_rate = per_gw * args.gateways / (t1 - t0)

        # Latency at half the single-message rate: each reading's time is its publish time and its
        # value its sequence number; a poller notes when each becomes visible (20 ms polls, included).
        half = msg_rate / 2
        n = int(half * args.latency_seconds)
        lat_gw, lat_pw = gws[1]
        visible: dict[float, float] = {}
        done = threading.Event()

        def poll() -> None:
            newest = datetime.fromtimestamp(0, UTC)
            with psycopg.connect(url, autocommit=True) as pconn:
                while not done.is_set() and len(visible) < n:
                    now = time.time()
                    rows = pconn.execute(
                        """SELECT r.value, r.time FROM readings r JOIN channels c ON c.id = r.channel_id
                            WHERE c.gateway_id = %s AND c.name = 'latency' AND r.time > %s - interval '2 s'""",
                        (lat_gw, newest),
                    ).fetchall()
                    for v, t in rows:
                        visible.setdefault(float(v), now - t.timestamp())
                        newest = max(newest, t)
                    time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        client = new_client(lat_gw, username=lat_gw, password=lat_pw)
        client.max_inflight_messages_set(1000)
        connect_blocking(client, get_settings())
        t_start = time.perf_counter()
        sent = []
        for k in range(n):
            delay = t_start + k / half - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            payload = json.dumps([{"n": "latency", "t": time.time(), "v": k}])
            sent.append(client.publish(f"agritrace/v1/{lat_gw}/senml", payload, qos=1))
        for info in sent:  # a disconnect with publishes still queued in paho would drop them
            info.wait_for_publish(60)
        client.disconnect()
        client.loop_stop()
        poller.join(30)
        done.set()
        poller.join()
        # A reading never seen by the poller counts as infinitely late (the figure stays honest).
        lat = sorted([*visible.values(), *[float("inf")] * (n - len(visible))])
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
        rss = [rss_kib(w.pid) for w in workers]
        rss_end = [rss_kib(w.pid, "VmRSS") for w in workers]
        with psycopg.connect(url) as cconn:
            stored = cconn.execute(
                "SELECT count(*) FROM readings r JOIN channels c ON c.id = r.channel_id WHERE c.name = 'latency'"
            ).fetchone()

        print(f"ingest benchmark: {args.gateways} gateways, {args.workers} workers, {os.cpu_count()} cores")
        print(f"  raw COPY ceiling          {ceiling:12,.0f} readings/s")
        print(
            f"  end-to-end (packs of 50)  {e2e:12,.0f} readings/s   ratio {e2e / ceiling:.2f} (target >= 0.5; >= 100,000/s)"
        )
        if args.rounds > 1:
            print(f"  rounds (readings/s)       {', '.join(f'{x:,.0f}' for x in rates)} (median above)")
            print(
                "  worker RSS after each round  "
                + "; ".join(", ".join(f"{k / 1024:.0f}" for k in rnd) for rnd in rss_rounds)
                + " MiB"
            )
        print(f"  worker CPU per reading    {worker_us:12.2f} us (both workers, packs of 50)")
        print(f"  single-reading messages   {msg_rate:12,.0f} messages/s (target >= 5,000)")
        print(
            f"  latency at {half:,.0f} msg/s  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {len(lat)} seen in time, {stored[0] if stored else 0} of {n} stored (target p99 < 1 s)"
        )
        print(f"  worker peak RSS           {', '.join(f'{r / 1024:.0f} MiB' for r in rss)}")
        # Flat memory: what each worker holds after the first million readings, and after the rest.
        print(
            "  worker RSS after packs / at the end  "
            + ", ".join(
                f"{a / 1024:.0f} / {b / 1024:.0f} MiB" for a, b in zip(rss_warm, rss_end, strict=True)
            )
        )
        print(f"  readings                  {total:,} in packs, {per_gw * args.gateways:,} single")


if __name__ == "__main__":
    main()
