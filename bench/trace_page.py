"""Benchmark: `GET /t/{code}` under wrk with N batches / codes / readings loaded, beside a trivial
FastAPI endpoint served the same way (the ceiling).

    .venv/bin/python bench/trace_page.py                       # 100k batches, 1M codes, 10M readings
    .venv/bin/python bench/trace_page.py --batches 10000 --codes 100000 --readings 1000000 --duration 10

Uses a database of its own (dropped at the end unless --keep). Needs `wrk` (apt package).
Before the measured run each sampled lot is viewed once (its first view stores its cold-chain
summary: custody has ended); the warm-up's rate is printed too (`--no-warmup` skips it).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from _stack import free_port

from agritrace import db

HERE = Path(__file__).resolve().parent
UVICORN = Path(sys.executable).with_name("uvicorn")

LOAD_SQL = """
INSERT INTO cooperatives (name) SELECT 'bench-coop-' || i FROM generate_series(1, %(coops)s) i;
INSERT INTO gateways (id, cooperative_id) SELECT 'bench-gw-' || i, 1 + i %% %(coops)s FROM generate_series(1, %(channels)s) i;
INSERT INTO channels (gateway_id, name, unit) SELECT 'bench-gw-' || i, 'coldroom/temp', 'Cel' FROM generate_series(1, %(channels)s) i;
INSERT INTO batches (lot, cooperative_id, product, variety, gtin, origin_plot, gi_area, harvest_date, quantity, unit)
SELECT 'B' || lpad(i::text, 8, '0'), 1 + i %% %(coops)s, (ARRAY['mango', 'citrus', 'tea'])[1 + i %% 3], '台农一号',
       CASE WHEN i %% 2 = 0 THEN '06901234567892' END, '果园 ' || i, '百色芒果', DATE '2026-07-01' + (i %% 60), 100, 'kg'
  FROM generate_series(1, %(batches)s) i;
-- Every tenth batch is a lot packed from the batch before it, so lineage queries have work to do.
INSERT INTO batch_lineage (parent_id, child_id) SELECT i - 1, i FROM generate_series(10, %(batches)s, 10) i;
INSERT INTO trace_events (batch_id, biz_step, disposition, event_time, place)
SELECT i, s.step, 'active', TIMESTAMPTZ '2026-07-01' + (i %% 60) * interval '1 day' + s.h * interval '1 hour', '包装厂'
  FROM generate_series(1, %(batches)s) i, (VALUES ('commissioning', 0), ('packing', 5)) s(step, h);
INSERT INTO certificates (kind, number, issuer, valid_from, valid_to, cooperative_id)
SELECT 'geographical_indication', 'AGI' || lpad(i::text, 5, '0'), '农业农村部', DATE '2024-01-01', DATE '2029-12-31', i
  FROM generate_series(1, %(coops)s) i;
INSERT INTO inspections (batch_id, inspected_at, kind, passed)
SELECT i, TIMESTAMPTZ '2026-07-01' + (i %% 60) * interval '1 day', '农药残留', true FROM generate_series(1, %(batches)s) i;
-- Readings every 5 minutes per channel from 2026-07-01; custody: two days somewhere in that span.
INSERT INTO readings (time, channel_id, value)
SELECT TIMESTAMPTZ '2026-07-01' + j * interval '5 minutes', c, 11.5 + sin(j / 20.0)
  FROM generate_series(1, %(channels)s) c, generate_series(0, %(per_channel)s - 1) j;
INSERT INTO batch_custody (batch_id, channel_id, started_at, ended_at)
SELECT i, 1 + i %% %(channels)s, TIMESTAMPTZ '2026-07-01' + (i %% %(span_days)s) * interval '1 day',
       TIMESTAMPTZ '2026-07-03' + (i %% %(span_days)s) * interval '1 day'
  FROM generate_series(1, %(batches)s) i;
"""


def serial() -> str:
    return base64.b32encode(secrets.token_bytes(10)).decode().rstrip("=")


def load(url: str, *, batches: int, codes: int, readings: int, sample: int) -> list[str]:
    """Loads the data set; returns a sample of codes to request."""
    channels = max(10, batches // 100)
    per_channel = max(1, readings // channels)
    span_days = max(1, per_channel * 5 // (24 * 60) - 2)
    params = {
        "coops": max(1, batches // 1000),
        "channels": channels,
        "batches": batches,
        "per_channel": per_channel,
        "span_days": span_days,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for statement in LOAD_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)
        t1 = time.perf_counter()
        picked: list[str] = []
        with conn.cursor() as cur, cur.copy("COPY codes (serial, batch_id) FROM STDIN") as copy:
            for i in range(codes):
                s = serial()
                copy.write_row((s, 1 + i % batches))
                if i % max(1, codes // sample) == 0:
                    picked.append(s)
        conn.execute("ANALYZE")
        t2 = time.perf_counter()
    print(
        f"loaded {batches:,} batches, {channels:,} channels, {channels * per_channel:,} readings in {t1 - t0:.1f} s; "
        f"{codes:,} codes in {t2 - t1:.1f} s"
    )
    return picked


def serve(args: list[str], env: dict[str, str], port: int, probe: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            str(UVICORN),
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("server did not start")


def wrk(url: str, *, duration: int, connections: int, threads: int, script: Path | None) -> tuple[float, str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"  warning: {non2xx.group(1)} non-2xx responses")
    return rps, p99


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=100_000)
    ap.add_argument("--codes", type=int, default=1_000_000)
    ap.add_argument("--readings", type=int, default=10_000_000)
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (both servers)")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    ap.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="measure without first viewing each sampled lot once",
    )
    a = ap.parse_args()

    name = f"agritrace_bench_{secrets.token_hex(4)}"
    url = db.create_database(name)  # the same admin connection as the test fixtures
    procs: list[subprocess.Popen[bytes]] = []
    try:
        codes = load(url, batches=a.batches, codes=a.codes, readings=a.readings, sample=10_000)
        env = {
            **os.environ,
            "AGRITRACE_DATABASE_URL": url,
            "AGRITRACE_DATABASE_POOL_MAX": "16",
            # wrk is one client: without this the per-client limit answers 429s, and the figure
            # would measure the limiter instead of the page.
            "AGRITRACE_PUBLIC_RATE_PER_MINUTE": "1000000000",
            "AGRITRACE_PUBLIC_RATE_BURST": "1000000000",
        }
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "codes.lua"
            paths = ",".join(f'"/t/{c}"' for c in codes)
            script.write_text(
                f"local paths = {{{paths}}}\n"
                "math.randomseed(os.time())\n"
                "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
            )
            port = free_port()
            procs.append(
                serve(
                    ["--factory", "agritrace.api.app:create_app", "--workers", str(a.workers)],
                    env,
                    port,
                    f"/t/{codes[0]}",
                )
            )
            if a.warmup:
                # The first view of each lot computes its cold-chain summary from the readings and
                # stores it (custody has ended); every later view reads the stored one. The warm-up
                # is one view of one sampled code of each lot (real scans too), timed and printed.
                with psycopg.connect(url) as conn:
                    firsts = [
                        r[0]
                        for r in conn.execute(
                            "SELECT DISTINCT ON (batch_id) serial FROM codes WHERE serial = ANY(%s) ORDER BY batch_id",
                            (codes,),
                        )
                    ]
                started = time.perf_counter()
                with ThreadPoolExecutor(a.connections) as pool:
                    list(
                        pool.map(
                            lambda c: urllib.request.urlopen(
                                f"http://127.0.0.1:{port}/t/{c}", timeout=60
                            ).read(),
                            firsts,
                        )
                    )
                warm = (len(firsts), time.perf_counter() - started)
            page_rps, page_p99 = wrk(
                f"http://127.0.0.1:{port}",
                duration=a.duration,
                connections=a.connections,
                threads=a.threads,
                script=script,
            )
            procs.pop().terminate()
            port = free_port()
            procs.append(
                serve(
                    ["--app-dir", str(HERE), "_ceiling:app", "--workers", str(a.workers)], env, port, "/ping"
                )
            )
            ping_rps, ping_p99 = wrk(
                f"http://127.0.0.1:{port}/ping",
                duration=a.duration,
                connections=a.connections,
                threads=a.threads,
                script=None,
            )
        if a.warmup:
            print(
                f"warm-up: first views of {warm[0]:,} lots in {warm[1]:.1f} s ({warm[0] / warm[1]:.0f} views/s)"
            )
        print(f"GET /t/{{code}}  {page_rps:10.1f} req/s   p99 {page_p99}")
        print(f"GET /ping (ceiling) {ping_rps:7.1f} req/s   p99 {ping_p99}")
        print(f"ratio page / ceiling: {page_rps / ping_rps:.3f}")
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(summary) FROM trace_coldchain_pages").fetchone()
            stored = int(row[0]) if row else 0
        distinct = len({i % a.batches for i in range(0, a.codes, max(1, a.codes // 10_000))})
        print(
            f"(requests spread over {len(codes):,} codes of {distinct:,} batches; custody has ended, so each "
            f"batch's cold-chain summary is stored by its first view; stored: {stored:,})"
        )
        print(
            f"({a.batches:,} batches, {a.codes:,} codes, {a.readings:,} readings; wrk -t{a.threads} -c{a.connections} "
            f"-d{a.duration}s; uvicorn --workers {a.workers})"
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        if not a.keep:
            db.drop_database(name)
        else:
            print(f"kept database {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
