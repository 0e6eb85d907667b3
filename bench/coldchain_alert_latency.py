"""Benchmark: alert latency, from the commit of the reading that completes an excursion's delay to
the alert being visible in `GET /api/v1/alerts`, while other channels receive readings.

Until the ingest branch is merged this drives the database the way the ingest worker does (store
readings, set channels.last_ingested_at), so it measures evaluator + API, not MQTT + ingest. After the
merge, replace `load()` and `complete()` with publishes through the simulator to measure end to end.
Starts its own `agritrace alerts run` and `agritrace api run` (free port) on a database of its own.

    AGRITRACE_ENV_FILE=/work/main/.local/agritrace.env .venv/bin/python bench/coldchain_alert_latency.py \
        [--probes 20] [--load-channels 50] [--load-rate 500]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from agritrace import db
from agritrace.api import tokens
from agritrace.coldchain import profiles
from agritrace.settings import get_settings

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "agritrace"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def channel(conn: db.Conn, coop: int, gateway: str, profile: str = "mango") -> int:
    conn.execute("INSERT INTO gateways (id, cooperative_id) VALUES (%s, %s)", (gateway, coop))
    profiles.set_channel_profile(conn, gateway_id=gateway, channel="room/temp", profile=profile, unit="Cel")
    row = conn.execute("SELECT id FROM channels WHERE gateway_id = %s", (gateway,)).fetchone()
    assert row is not None
    return int(row["id"])


def store(conn: db.Conn, channel_id: int, points: list[tuple[datetime, float]]) -> None:
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (time, channel_id, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(t, channel_id, v) for t, v in points],
            )
        conn.execute("UPDATE channels SET last_ingested_at = clock_timestamp() WHERE id = %s", (channel_id,))


def load(url: str, channels: list[int], rate: int, stop: threading.Event, sent: list[int]) -> None:
    """In-band readings on the load channels at about `rate` readings/s, one commit per channel batch."""
    with db.connect(url, autocommit=True) as conn:
        t0 = datetime.now(UTC)
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            per = max(1, rate // len(channels) // 10)  # ten commits a second per channel
            for ch in channels:
                store(conn, ch, [(t0 + timedelta(seconds=i + k), 11.5) for k in range(per)])
            i += per
            sent[0] += per * len(channels)
            stop.wait(max(0.0, 0.1 - (time.perf_counter() - started)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--load-channels", type=int, default=50)
    parser.add_argument("--load-rate", type=int, default=500, help="background readings per second")
    args = parser.parse_args()
    base = get_settings().database_url.rsplit("/", 1)[0]
    admin = os.environ.get("AGRITRACE_DATABASE_ADMIN_URL") or base + "/postgres"
    name = f"agritrace_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template1").format(sql.Identifier(name)))
    url = f"{base}/{name}"
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    try:
        db.migrate(url)
        env = {**os.environ, "AGRITRACE_DATABASE_URL": url}
        port = free_port()
        with db.connect(url, autocommit=True) as conn:
            coop = conn.execute("INSERT INTO cooperatives (name) VALUES ('bench') RETURNING id").fetchone()
            assert coop is not None
            profiles.ensure_defaults(conn)
            loaders = [channel(conn, coop["id"], f"load-{i:04d}") for i in range(args.load_channels)]
            token = tokens.create(conn, role="regulator")
            procs.append(subprocess.Popen([str(BIN), "alerts", "run", "--interval", "0.2"], env=env))
            procs.append(subprocess.Popen([str(BIN), "api", "run", "--port", str(port)], env=env))
            http = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
            )
            for _ in range(100):
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            sent = [0]
            loader = threading.Thread(
                target=load, args=(url, loaders, args.load_rate, stop, sent), daemon=True
            )
            loader.start()
            latencies, ceiling = [], []
            load_t0 = time.perf_counter()
            for p in range(args.probes):
                gw = f"probe-{p:04d}"
                ch = channel(conn, coop["id"], gw)
                now = datetime.now(UTC).replace(microsecond=0)
                # 30 minutes at 6 °C already stored; the reading at minute 30 completes the delay.
                store(conn, ch, [(now - timedelta(minutes=30 - i), 6.0) for i in range(30)])
                time.sleep(0.5)  # let the evaluator see the partial run first, as it would live
                t = time.perf_counter()
                store(conn, ch, [(now, 6.0)])
                while True:
                    items = http.get("/api/v1/alerts", params={"status": "open", "gateway_id": gw}).json()[
                        "items"
                    ]
                    if items:
                        break
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - t)
                t = time.perf_counter()
                http.get("/api/v1/alerts", params={"status": "open", "gateway_id": gw})
                ceiling.append(time.perf_counter() - t)
            rate = sent[0] / (time.perf_counter() - load_t0)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"background load: {rate:.0f} readings/s on {args.load_channels} channels (DB commits as the ingest worker does)"
        )
        print(
            f"alert latency over {len(latencies)} probes: median {statistics.median(latencies) * 1000:.0f} ms,"
            f" p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms (evaluator poll interval 200 ms)"
        )
        print(f"ceiling (one GET /api/v1/alerts): median {statistics.median(ceiling) * 1000:.1f} ms")
    finally:
        stop.set()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
