"""Alert latency end to end (issue 4): from the MQTT publish of the reading that completes an
excursion's delay to the alert being visible in `GET /api/v1/alerts`, while ingest runs at half the
maximum rate measured in the same run. Target: p99 under 2 s.

In a database of its own (dropped at the end), with gateways provisioned on the broker (removed at
the end) and real processes: `agritrace ingest run` x 2 (own subscription group and client ids),
`agritrace alerts run` (the evaluator, product defaults) and `agritrace api run` on a free port.

1. Maximum ingest rate: a burst of packs of 50 (10 channels x 5 instants) from the load gateways,
   from 2 publisher processes, timed until every reading is committed (as bench/ingest_throughput.py).
2. Background load: the same packs at half that rate, paced, from the load gateways, for the whole
   measurement; plus `--watched` cold-room channels (mango profile, in band) at one reading a
   second each, so the evaluator has channels to re-evaluate on every pass.
3. Probes: each probe gateway's `room/temp` channel is watched against a bench profile whose one rule
   is "below 10 °C for `--delay` seconds". A probe publishes (QoS 1) readings at 6 °C spanning just
   less than the delay, waits until the evaluator has evaluated them (no alert yet), then at a
   measured instant publishes the reading that completes the delay. One poller asks
   `GET /api/v1/alerts?status=open&product=...` (regulator token) every `--poll` seconds; latency =
   when the probe's alert was first in a response - when its completing reading was published. A
   probe never seen within `--timeout` counts as infinitely late.

    AGRITRACE_ENV_FILE=/work/main/.local/agritrace.env .venv/bin/python bench/coldchain_alert_latency.py \
        [--probes 40] [--concurrency 4] [--gateways 10] [--burst-packs 200]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import random
import secrets
import statistics
import subprocess
import threading
import time
from contextlib import ExitStack
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
from _stack import (
    AGRITRACE,
    CHANNELS,
    INSTANTS,
    PACK,
    count,
    free_port,
    gateways,
    ingest_workers,
    packs_for,
    process_env,
    publish_parallel,
    scratch_database,
    stop_processes,
    wait_count,
    wait_subscribed,
)

from agritrace import db
from agritrace.api import tokens
from agritrace.coldchain import profiles
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import get_settings

PROFILE = "bench-probe"
TARGET_P99 = 2.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def background(
    jobs: list[tuple[str, str]],
    rate: float,
    start: float,
    stop: Any,
    sent: Synchronized[int],
) -> None:
    """Publishes packs of 50 at `rate` packs/s (QoS 1) round-robin from the gateways until `stop`;
    each gateway's packs advance 5 s of reading time, from `start`."""
    settings = get_settings()
    body = ",".join(
        json.dumps({"n": f"t{c}", "t": i, "v": 10 + ((i + c) % 30) / 10})
        for i in range(INSTANTS)
        for c in range(CHANNELS)
    )
    clients = []
    for gw, pw in jobs:
        c = new_client(f"{gw}-bg", username=gw, password=pw)
        c.max_inflight_messages_set(1000)
        connect_blocking(c, settings)
        clients.append(c)
    packs = [0] * len(jobs)
    infos = []
    began = time.perf_counter()
    n = 0
    while not stop.is_set():
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        k = n % len(jobs)
        gw = jobs[k][0]
        t = start + packs[k] * INSTANTS
        payload = f'[{{"bn":"{gw}/room/","bt":{t},"bu":"Cel"}},{body}]'
        infos.append(clients[k].publish(f"agritrace/v1/{gw}/senml", payload, qos=1))
        packs[k] += 1
        n += 1
        if n % 100 == 0:
            with sent.get_lock():
                sent.value += 100
    with sent.get_lock():
        sent.value += n % 100
    for info in infos[-5000:]:
        info.wait_for_publish(30)
    for c in clients:
        c.disconnect()
        c.loop_stop()


def rooms(gateway: tuple[str, str], channels: int, stop: threading.Event) -> None:
    """One cold-room gateway: every second, one in-band reading (11.5 °C) on each watched channel."""
    gw, pw = gateway
    client = new_client(gw, username=gw, password=pw)
    connect_blocking(client, get_settings())
    while not stop.is_set():
        pack: list[dict[str, Any]] = [{"bn": "room/", "bt": time.time(), "bu": "Cel"}]
        pack += [{"n": f"t{c}", "v": 11.5} for c in range(channels)]
        client.publish(f"agritrace/v1/{gw}/senml", json.dumps(pack), qos=1)
        stop.wait(1.0)
    client.disconnect()
    client.loop_stop()


def stored_count(conn: psycopg.Connection[Any], channel_id: int) -> int:
    row = conn.execute("SELECT count(*) FROM readings WHERE channel_id = %s", (channel_id,)).fetchone()
    return int(row[0]) if row else 0


def wait_healthy(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API at {base_url} did not become healthy in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=10, help="load gateways (packs of 50)")
    parser.add_argument("--burst-packs", type=int, default=200, help="packs per gateway in the burst")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes (burst and load)")
    parser.add_argument("--watched", type=int, default=20, help="watched cold-room channels, 1 reading/s")
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4, help="probes in flight at once")
    parser.add_argument(
        "--delay", type=int, default=60, help="the probe rule's delay, seconds of reading time"
    )
    parser.add_argument("--poll", type=float, default=0.03, help="seconds between GET /api/v1/alerts")
    parser.add_argument(
        "--timeout", type=float, default=30, help="a probe not seen by then is infinitely late"
    )
    parser.add_argument("--warmup", type=float, default=5, help="seconds of background load before probing")
    parser.add_argument("--log-dir", type=Path, help="keep the evaluator's and the API's output here")
    args = parser.parse_args()

    tag = secrets.token_hex(3)
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(f"agritrace_bench_{tag}"))
        load_ids = [f"bench-{tag}-{i}" for i in range(args.gateways)]
        probe_ids = [f"bench-{tag}-p{k}" for k in range(args.probes)]
        rooms_id = f"bench-{tag}-rooms"
        gws = stack.enter_context(gateways(url, [*load_ids, *probe_ids, rooms_id]))
        load_gws = gws[: args.gateways]
        probe_gws = gws[args.gateways : args.gateways + args.probes]
        rooms_gw = gws[-1]

        # What the evaluator watches: the probes against a bench profile with a short delay, the
        # cold rooms as mango. The load gateways' channels are watched by nothing (field sensors).
        with db.connect(url) as conn:
            profiles.ensure_defaults(conn)
            profiles.create_profile(
                conn,
                name=PROFILE,
                description="alert-latency benchmark probes",
                bands={"temp_low": 10.0, "temp_high": 13.0},
            )
            profiles.add_rule(
                conn,
                profile=PROFILE,
                rule={
                    "name": "chilling",
                    "metric": "temperature",
                    "direction": "below",
                    "threshold": 10.0,
                    "clear_margin": 0.5,
                    "delay_s": args.delay,
                    "mode": "single",
                    "severity": "critical",
                },
            )
            probe_channel = {
                gw: profiles.set_channel_profile(
                    conn, gateway_id=gw, channel="room/temp", profile=PROFILE, unit="Cel"
                )["channel_id"]
                for gw, _pw in probe_gws
            }
            for c in range(args.watched):
                profiles.set_channel_profile(
                    conn, gateway_id=rooms_id, channel=f"room/t{c}", profile="mango", unit="Cel"
                )
            token = tokens.create(conn, role="regulator")
            conn.commit()

        env = process_env(url, tag)
        stack.enter_context(ingest_workers(env, args.workers))
        start = time.time() - 20 * 86400  # load readings: inside the accepted window, clear of "now"
        wait_subscribed(url, load_gws[0], start - 3600)

        # 1. Maximum ingest rate: a burst of packs of 50 from every load gateway at once.
        jobs = [(gw, pw, packs_for(gw, args.burst_packs, start)) for gw, pw in load_gws]
        total = args.gateways * args.burst_packs * PACK
        before = count(url)
        t0 = time.perf_counter()
        publish_parallel(jobs, args.publishers)
        max_rate = total / (wait_count(url, before + total) - t0)
        del jobs

        # The evaluator and the API, started after the burst so it measured ingest alone.
        logs: list[IO[bytes]] = []
        out: dict[str, Any] = {}
        for name in ("alerts", "api"):
            if args.log_dir:
                args.log_dir.mkdir(parents=True, exist_ok=True)
                logs.append(stack.enter_context((args.log_dir / f"{name}-{tag}.log").open("wb")))
                out[name] = logs[-1]
            else:
                out[name] = subprocess.DEVNULL
        port = free_port()
        procs = [
            subprocess.Popen(
                [AGRITRACE, "alerts", "run"], env=env, stdout=out["alerts"], stderr=out["alerts"]
            ),
            subprocess.Popen(
                [AGRITRACE, "api", "run", "--port", str(port)], env=env, stdout=out["api"], stderr=out["api"]
            ),
        ]
        stack.callback(stop_processes, procs)
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url)

        # 2. Background load at half the maximum rate, for the whole measurement.
        half = max_rate / 2
        stop_bg = multiprocessing.Event()
        sent: Synchronized[int] = multiprocessing.Value("q", 0)
        shares = [load_gws[i :: args.publishers] for i in range(args.publishers)]
        shares = [s for s in shares if s]
        publishers = [
            multiprocessing.Process(
                target=background,
                args=(share, half / PACK * len(share) / args.gateways, start + 2 * 86400, stop_bg, sent),
            )
            for share in shares
        ]
        stop_rooms = threading.Event()
        rooms_thread = threading.Thread(target=rooms, args=(rooms_gw, args.watched, stop_rooms))

        def stop_load() -> None:
            stop_bg.set()
            stop_rooms.set()
            for p in publishers:
                p.join(60)
                if p.is_alive():
                    p.kill()
            if rooms_thread.is_alive():
                rooms_thread.join()

        stack.callback(stop_load)
        for p in publishers:
            p.start()
        rooms_thread.start()
        time.sleep(args.warmup)
        load_c0, load_t0, sent0 = count(url), time.perf_counter(), sent.value

        # 3. Probes.
        published: dict[str, float] = {}
        seen: dict[str, float] = {}
        early: list[str] = []
        events = {gw: threading.Event() for gw, _pw in probe_gws}
        done = threading.Event()
        lock = threading.Lock()
        http = stack.enter_context(
            httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        )
        polls: list[float] = []

        def poll() -> None:
            params = {"status": "open", "product": PROFILE, "limit": "200"}
            while not done.is_set():
                t = time.perf_counter()
                try:
                    items = http.get("/api/v1/alerts", params=params).json()["items"]
                except (httpx.HTTPError, KeyError, ValueError):
                    items = []
                now = time.time()
                polls.append(time.perf_counter() - t)
                with lock:
                    for item in items:
                        gw = item["gateway_id"]
                        if gw in seen or gw in early:
                            continue
                        if gw not in published:
                            early.append(gw)  # opened before its completing reading: a bench bug
                            continue
                        seen[gw] = now
                        events[gw].set()
                done.wait(args.poll)

        poller = threading.Thread(target=poll)
        poller.start()
        stack.callback(poller.join)
        stack.callback(done.set)

        work: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        for g in probe_gws:
            work.put(g)
        steps = max(1, args.delay // 6)
        offsets = [*range(0, args.delay - 1, steps), args.delay - 1]  # spans just less than the delay
        unevaluated = [0]
        stored: dict[str, float] = {}
        opened: dict[str, float] = {}

        def prober() -> None:
            settings = get_settings()
            with psycopg.connect(url, autocommit=True) as pconn:
                while True:
                    try:
                        gw, pw = work.get_nowait()
                    except queue.Empty:
                        return
                    client = new_client(gw, username=gw, password=pw)
                    connect_blocking(client, settings)
                    base = time.time() - 2 * args.delay
                    partial = [{"n": "room/temp", "u": "Cel", "t": base + s, "v": 6.0} for s in offsets]
                    client.publish(f"agritrace/v1/{gw}/senml", json.dumps(partial), qos=1).wait_for_publish(
                        10
                    )
                    # Wait until the partial run is stored and evaluated (no alert yet), as it would be
                    # in life, where those readings came in over the previous minute.
                    deadline = time.monotonic() + args.timeout
                    while time.monotonic() < deadline:
                        row = pconn.execute(
                            """SELECT s.evaluated_ingest >= c.last_ingested_at FROM channels c
                                 LEFT JOIN coldchain_eval_state s ON s.channel_id = c.id WHERE c.id = %s""",
                            (probe_channel[gw],),
                        ).fetchone()
                        if stored_count(pconn, probe_channel[gw]) == len(offsets) and row and row[0]:
                            break
                        time.sleep(0.05)
                    else:
                        unevaluated[0] += 1
                    # A random phase against the evaluator's poll cycle.
                    time.sleep(random.uniform(0, 1.0))
                    completing = json.dumps(
                        [{"n": "room/temp", "u": "Cel", "t": base + args.delay, "v": 6.0}]
                    )
                    with lock:
                        published[gw] = time.time()
                    client.publish(f"agritrace/v1/{gw}/senml", completing, qos=1)
                    # Where the time goes: when the reading is committed (10 ms polls) and when the
                    # evaluator's transaction that opened the alert began.
                    deadline = time.monotonic() + args.timeout
                    while time.monotonic() < deadline and stored_count(pconn, probe_channel[gw]) <= len(
                        offsets
                    ):
                        time.sleep(0.01)
                    stored[gw] = time.time()
                    if events[gw].wait(args.timeout):
                        row = pconn.execute(
                            "SELECT extract(epoch FROM min(opened_at)) FROM alerts WHERE channel_id = %s",
                            (probe_channel[gw],),
                        ).fetchone()
                        if row and row[0] is not None:
                            opened[gw] = float(row[0])
                    client.disconnect()
                    client.loop_stop()

        probers = [threading.Thread(target=prober) for _ in range(args.concurrency)]
        for t in probers:
            t.start()
        for t in probers:
            t.join()
        load_c1, load_t1, sent1 = count(url), time.perf_counter(), sent.value
        done.set()
        poller.join()

        latencies = sorted(seen[gw] - published[gw] if gw in seen else float("inf") for gw in published)
        achieved_stored = (load_c1 - load_c0) / (load_t1 - load_t0)
        achieved_sent = (sent1 - sent0) * PACK / (load_t1 - load_t0)
        p50, p95, p99 = (percentile(latencies, q) for q in (0.50, 0.95, 0.99))
        polls.sort()
        print(
            f"alert latency benchmark: {args.workers} ingest workers, {args.gateways} load gateways, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
        )
        print(f"  max ingest rate (burst of packs of 50)  {max_rate:12,.0f} readings/s")
        print(
            f"  background load, target half            {half:12,.0f} readings/s;"
            f" published {achieved_sent:,.0f}/s, stored {achieved_stored:,.0f}/s over {load_t1 - load_t0:.0f} s"
            f" (+ {args.watched} watched cold-room channels at 1 reading/s)"
        )
        missed = sum(1 for v in latencies if v == float("inf"))
        verdict = "met" if p99 < TARGET_P99 else "NOT met"
        print(
            f"  alert latency over {len(latencies)} probes (rule delay {args.delay} s, {args.concurrency} at once):"
            f" p50 {p50 * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms,"
            f" max {latencies[-1] * 1000:,.0f} ms; {missed} never seen (target p99 < {TARGET_P99:.0f} s: {verdict})"
        )
        print(
            f"  ceiling: one GET /api/v1/alerts       median {statistics.median(polls) * 1000:.1f} ms,"
            f" p99 {percentile(polls, 0.99) * 1000:.1f} ms over {len(polls)} polls every {args.poll * 1000:.0f} ms"
        )
        parts = [
            ("publish -> reading committed (ingest)", [stored[g] - published[g] for g in opened]),
            ("committed -> evaluation began (evaluator poll)", [opened[g] - stored[g] for g in opened]),
            (
                "evaluation began -> in the API (evaluate, commit, API poll)",
                [seen[g] - opened[g] for g in opened],
            ),
        ]
        for label, values in parts:
            if values:
                values.sort()
                print(
                    f"    {label:<60} p50 {statistics.median(values) * 1000:6,.0f} ms,"
                    f" p99 {percentile(values, 0.99) * 1000:6,.0f} ms"
                )
        if early or unevaluated[0]:
            print(
                f"  WARNING: {len(early)} alerts before their completing reading, {unevaluated[0]} partial runs not evaluated in time"
            )


if __name__ == "__main__":
    main()
