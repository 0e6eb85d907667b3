"""Ingest throughput: raw COPY ceiling vs MQTT end-to-end, single-reading messages, latency, worker RSS.

Runs against the local stack's PostgreSQL and Mosquitto, in a database of its own (dropped at the end),
with its own gateways, shared-subscription group and worker client ids (removed at the end).

    AGRITRACE_ENV_FILE=.local/agritrace.env .venv/bin/python bench/ingest_throughput.py [--packs 200]

Prints each figure beside its ceiling or target, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from agritrace import db
from agritrace.devices import broker, service
from agritrace.mqtt import connect_blocking, connect_properties, new_client
from agritrace.settings import get_settings

AGRITRACE = str(Path(sys.executable).parent / "agritrace")
CHANNELS = 10  # a pack of 50 = 10 channels x 5 instants
INSTANTS = 5


def packs_for(gateway: str, count: int, start: float) -> list[bytes]:
    """`count` packs of 50 readings (10 channels x 5 instants, one second apart)."""
    out = []
    for p in range(count):
        t0 = start + p * INSTANTS
        pack: list[dict[str, Any]] = [{"bn": f"{gateway}/room/", "bt": t0, "bu": "Cel"}]
        for i in range(INSTANTS):
            for c in range(CHANNELS):
                pack.append({"n": f"t{c}", "t": i, "v": 10 + ((p + i + c) % 30) / 10})
        out.append(json.dumps(pack).encode())
    return out


def publish_all(jobs: list[tuple[str, str, list[bytes]]], rate: float | None = None) -> None:
    """Publishes every payload at QoS 1 from each job's gateway; waits for all PUBACKs."""
    settings = get_settings()
    clients = []
    for gw, password, _payloads in jobs:
        c = new_client(f"{gw}", username=gw, password=password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        connect_blocking(c, settings)
        clients.append(c)
    infos = []
    n = max(len(p) for _g, _p, p in jobs)
    started = time.perf_counter()
    sent = 0
    for i in range(n):
        for (gw, _pw, payloads), c in zip(jobs, clients, strict=True):
            if i < len(payloads):
                if rate:
                    delay = started + sent / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                infos.append(c.publish(f"agritrace/v1/{gw}/senml", payloads[i], qos=1))
                sent += 1
    for info in infos:
        info.wait_for_publish(120)
    for c in clients:
        c.disconnect()
        c.loop_stop()


def publish_parallel(jobs: list[tuple[str, str, list[bytes]]], processes: int) -> None:
    """Splits the gateways over publisher processes (one Python process cannot feed the workers)."""
    shares = [jobs[i::processes] for i in range(processes)]
    procs = [multiprocessing.Process(target=publish_all, args=(share,)) for share in shares if share]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def wait_count(url: str, expected: int, timeout: float = 600) -> float:
    """Polls until `expected` readings are stored; returns when that was seen."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if count(url) >= expected:
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit(f"timed out: {count(url)} of {expected} readings stored")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (a figure a busy machine does not skew)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
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
    args = parser.parse_args()

    base = get_settings()
    tag = secrets.token_hex(3)
    name = f"agritrace_bench_{tag}"
    admin_url = (
        os.environ.get("AGRITRACE_DATABASE_ADMIN_URL") or base.database_url.rsplit("/", 1)[0] + "/postgres"
    )
    url = base.database_url.rsplit("/", 1)[0] + "/" + name
    for attempt in range(20):  # other runs copying template1 at the same moment make this fail
        try:
            with psycopg.connect(admin_url, autocommit=True) as aconn:
                aconn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template1").format(sql.Identifier(name)))
            break
        except psycopg.errors.ObjectInUse:
            if attempt == 19:
                raise
            time.sleep(0.5)
    env = dict(
        os.environ,
        AGRITRACE_DATABASE_URL=url,
        AGRITRACE_INGEST_GROUP=f"bench-{tag}",
        AGRITRACE_INGEST_CLIENT_PREFIX=f"bench-ingest-{tag}",
        AGRITRACE_INGEST_SESSION_EXPIRY="60",
        AGRITRACE_INGEST_METRICS_PORT="0",
        AGRITRACE_INGEST_RETENTION_INTERVAL="0",
    )
    gateways: list[tuple[str, str]] = []
    workers: list[subprocess.Popen[bytes]] = []
    try:
        db.migrate(url)
        with db.connect(url) as conn, broker.admin_session() as dynsec:
            coop = service.get_or_create_cooperative(conn, name="bench")
            for i in range(args.gateways):
                gateways.append(
                    service.create_gateway(
                        conn, dynsec=dynsec, cooperative_id=coop, gateway_id=f"bench-{tag}-{i}"
                    )
                )
            conn.commit()
        start = time.time() - 20 * 86400  # inside the accepted window, clear of "now"
        jobs = [(gw, pw, packs_for(gw, args.packs, start)) for gw, pw in gateways]
        total = args.gateways * args.packs * CHANNELS * INSTANTS

        # Raw ceiling: the same rows, binary COPY into the same hypertable, 10,000 rows per COPY.
        with db.connect(url) as conn:
            conn.execute(
                """INSERT INTO channels (gateway_id, name, unit)
                   SELECT g, g || '/room/t' || c, 'Cel' FROM unnest(%s::text[]) g, generate_series(0, %s) c""",
                ([g for g, _ in gateways], CHANNELS - 1),
            )
            ids = {(r["gateway_id"], r["name"]): r["id"] for r in conn.execute("SELECT * FROM channels")}
            conn.commit()
            rows = [
                (datetime.fromtimestamp(start + p * INSTANTS + i, UTC), ids[(g, f"{g}/room/t{c}")], 10.0)
                for g, _ in gateways
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
            conn.execute("TRUNCATE readings")
            conn.commit()
        del rows

        for worker_id in range(1, args.workers + 1):
            workers.append(
                subprocess.Popen(
                    [AGRITRACE, "ingest", "run", "--worker-id", str(worker_id)],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
        probe_gw, probe_pw = gateways[0]
        probe = json.dumps([{"n": "probe", "v": 0, "t": start}]).encode()
        while count(url) == 0:  # until the workers' subscriptions are live
            publish_all([(probe_gw, probe_pw, [probe])])
            time.sleep(0.3)
        base_count = count(url)

        # End-to-end: packs of 50 from every gateway at once.
        worker_pids = [w.pid for w in workers]
        cpu0 = cpu_seconds(worker_pids)
        t0 = time.perf_counter()
        publish_parallel(jobs, args.publishers)
        t1 = wait_count(url, base_count + total)
        e2e = total / (t1 - t0)
        worker_us = (cpu_seconds(worker_pids) - cpu0) / total * 1e6
        del jobs

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
            for gw, pw in gateways
        ]
        before = count(url)
        t0 = time.perf_counter()
        publish_parallel(singles, args.publishers)
        t1 = wait_count(url, before + per_gw * args.gateways)
        msg_rate = per_gw * args.gateways / (t1 - t0)

        # Latency at half the single-message rate: each reading's time is its publish time and its
        # value its sequence number; a poller notes when each becomes visible (20 ms polls, included).
        half = msg_rate / 2
        n = int(half * args.latency_seconds)
        lat_gw, lat_pw = gateways[1]
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
        rss = [rss_peak_kib(w.pid) for w in workers]
        with psycopg.connect(url) as cconn:
            stored = cconn.execute(
                "SELECT count(*) FROM readings r JOIN channels c ON c.id = r.channel_id WHERE c.name = 'latency'"
            ).fetchone()

        print(f"ingest benchmark: {args.gateways} gateways, {args.workers} workers, {os.cpu_count()} cores")
        print(f"  raw COPY ceiling          {ceiling:12,.0f} readings/s")
        print(
            f"  end-to-end (packs of 50)  {e2e:12,.0f} readings/s   ratio {e2e / ceiling:.2f} (target >= 0.5; >= 100,000/s)"
        )
        print(f"  worker CPU per reading    {worker_us:12.2f} us (both workers, packs of 50)")
        print(f"  single-reading messages   {msg_rate:12,.0f} messages/s (target >= 5,000)")
        print(
            f"  latency at {half:,.0f} msg/s  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {len(lat)} seen in time, {stored[0] if stored else 0} of {n} stored (target p99 < 1 s)"
        )
        print(f"  worker peak RSS           {', '.join(f'{r / 1024:.0f} MiB' for r in rss)}")
        print(f"  readings                  {total:,} in packs, {per_gw * args.gateways:,} single")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        settings = get_settings()
        for i in range(1, args.workers + 1):
            c = new_client(f"bench-ingest-{tag}-{i}", username=settings.mqtt_ingest_username,
                           password=settings.mqtt_ingest_password.get_secret_value())  # fmt: skip
            try:
                connect_blocking(c, settings, clean_start=True, properties=connect_properties())
                c.disconnect()
                c.loop_stop()
            except ConnectionError:
                pass
        with broker.admin_session() as dynsec:
            for gw, _pw in gateways:
                broker.remove_gateway(dynsec, gw)
        with psycopg.connect(admin_url, autocommit=True) as aconn:
            aconn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
