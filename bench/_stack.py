"""What the end-to-end benchmarks share: a database of their own, gateways provisioned on the broker,
real `agritrace` processes (ingest workers with their own subscription group), SenML packs and
publishers. Every context manager here removes what it made (database, broker clients, sessions).

Used by bench/ingest_throughput.py and bench/coldchain_alert_latency.py (run as scripts, so
`import _stack` finds this file beside them).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from agritrace import db
from agritrace.devices import broker, service
from agritrace.mqtt import connect_blocking, connect_properties, new_client
from agritrace.settings import get_settings

AGRITRACE = str(Path(sys.executable).parent / "agritrace")
CHANNELS = 10  # a pack of 50 = 10 channels x 5 instants
INSTANTS = 5
PACK = CHANNELS * INSTANTS

Job = tuple[str, str, list[bytes]]  # gateway id, its password, the payloads it publishes


admin_url = db.admin_url
scratch_database = db.scratch_database


@contextmanager
def gateways(url: str, ids: Sequence[str], *, cooperative: str = "bench") -> Iterator[list[tuple[str, str]]]:
    """Registers gateways with their broker clients (dynamic security); removes the clients at the end.
    Yields (gateway id, password)."""
    made: list[tuple[str, str]] = []
    try:
        with db.connect(url) as conn, broker.admin_session() as dynsec:
            coop = service.get_or_create_cooperative(conn, name=cooperative)
            for gateway_id in ids:
                made.append(
                    service.create_gateway(conn, dynsec=dynsec, cooperative_id=coop, gateway_id=gateway_id)
                )
            conn.commit()
        yield made
    finally:
        if made:
            with broker.admin_session() as dynsec:
                for gw, _pw in made:
                    broker.remove_gateway(dynsec, gw)


def process_env(url: str, tag: str, **extra: str) -> dict[str, str]:
    """Environment for `agritrace` processes on the scratch database, with an ingest subscription
    group and client ids of their own (so the shared stack's workers never see the bench's messages)."""
    return dict(
        os.environ,
        AGRITRACE_DATABASE_URL=url,
        AGRITRACE_INGEST_GROUP=f"bench-{tag}",
        AGRITRACE_INGEST_CLIENT_PREFIX=f"agritrace-ingest-b{tag}",
        AGRITRACE_MQTT_ALERTS_USERNAME=f"agritrace-alerts-b{tag}",
        AGRITRACE_INGEST_SESSION_EXPIRY="60",
        # Their metrics tell cheaply how many readings they have committed (see wait_count).
        AGRITRACE_INGEST_METRICS_PORT=str(free_ports(8)),
        AGRITRACE_INGEST_RETENTION_INTERVAL="0",
        **extra,
    )


@contextmanager
def ingest_workers(env: dict[str, str], count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`agritrace ingest run` x count; at the end SIGTERM (kill after 20 s) and their broker sessions
    are cleared (a clean-start connect with each client id)."""
    workers: list[subprocess.Popen[bytes]] = []
    settings = get_settings().model_copy(
        update={
            "ingest_client_prefix": env["AGRITRACE_INGEST_CLIENT_PREFIX"],
            "mqtt_alerts_username": env["AGRITRACE_MQTT_ALERTS_USERNAME"],
        }
    )
    with broker.admin_session() as dynsec:  # their own accounts (client ids are pinned)
        broker.ensure_alerts_account(dynsec, settings)
        for worker_id in range(1, count + 1):
            broker.ensure_ingest_account(dynsec, settings, worker_id)
    try:
        for worker_id in range(1, count + 1):
            workers.append(
                subprocess.Popen(
                    [AGRITRACE, "ingest", "run", "--worker-id", str(worker_id)],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield workers
    finally:
        stop_processes(workers)
        for worker_id in range(1, count + 1):
            username = broker.ingest_username(settings, worker_id)
            c = new_client(
                username, username=username, password=settings.mqtt_ingest_password.get_secret_value()
            )
            try:
                connect_blocking(c, settings, clean_start=True, properties=connect_properties())
                c.disconnect()
                c.loop_stop()
            except ConnectionError:
                pass


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM each process, then wait; kill what has not exited after `timeout` seconds."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


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


def publish_all(jobs: list[Job], rate: float | None = None) -> None:
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


def publish_parallel(jobs: list[Job], processes: int) -> None:
    """Splits the gateways over publisher processes (one Python process cannot feed the workers)."""
    shares = [jobs[i::processes] for i in range(processes)]
    procs = [multiprocessing.Process(target=publish_all, args=(share,)) for share in shares if share]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def count(url: str) -> int:
    """Readings stored in the database."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server the benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of `n` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(100):
        base = random.randint(20000, 40000)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no free ports")


def committed(env: dict[str, str], workers: int) -> float:
    """Readings the ingest workers have committed, from their Prometheus metrics (a cheap read)."""
    base = int(env["AGRITRACE_INGEST_METRICS_PORT"])
    total = 0.0
    for port in range(base, base + workers):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("agritrace_ingest_readings_total "):
                    total += float(line.split()[1])
    return total


def wait_count(
    url: str, expected: int, timeout: float = 600, *, env: dict[str, str] | None = None, workers: int = 0
) -> float:
    """Polls until `expected` readings are stored; returns when that was seen (perf_counter).

    With the workers' `env` and number, their metrics are polled first (every 20 ms) and the table
    counted only once they report enough: a count(*) over millions of rows every 50 ms would take a
    core of PostgreSQL away from the ingest being measured. The count decides."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if env is not None and committed(env, workers) < expected:
            time.sleep(0.02)
            continue
        if count(url) >= expected:
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit(f"timed out: {count(url)} of {expected} readings stored")


def wait_subscribed(url: str, gateway: tuple[str, str], t: float) -> None:
    """Publishes a one-reading probe (SenML time `t`) until it is stored: the workers' shared
    subscriptions are live from then on."""
    gw, pw = gateway
    probe = json.dumps([{"n": "probe", "v": 0, "t": t}]).encode()
    before = count(url)
    while count(url) == before:
        publish_all([(gw, pw, [probe])])
        time.sleep(0.3)
