"""A throwaway PostgreSQL+TimescaleDB cluster, Mosquitto broker and ingest workers for fault injection.

Everything runs on its own free ports and temporary directories, so the faults (crashing the
database, restarting the broker, killing workers) never touch the local stack or other test runs.
The broker config is rendered from the same template as deploy/local and deploy/compose.yaml.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The broker's retain guard, built by deploy/local/install.sh (deploy/mosquitto/retain_guard.c).
RETAIN_PLUGIN = Path(
    os.environ.get("AGRITRACE_MQTT_RETAIN_PLUGIN", "/usr/local/lib/agritrace/mosquitto_retain_guard.so")
)
AGRITRACE = str(Path(sys.executable).parent / "agritrace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Polls `check` until true; returns the seconds it took, or raises after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (psycopg.Error, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args]


class FaultStack:
    """The whole ingest path on private instances, with handles to break each part."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agritrace-faults-"))
        self.dir.chmod(0o755)
        self.pg_port = free_port()
        self.mqtt_port = free_port()
        self.mqtt_tls_port = free_port()
        self.pgdata = self.dir / "pg"
        self.broker_dir = self.dir / "mosquitto"
        self.tls_dir = self.dir / "tls"
        self.broker: subprocess.Popen[bytes] | None = None
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.alerts: subprocess.Popen[bytes] | None = None
        # The superuser (for breaking things); the processes log in as the application's role.
        self.url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/agritrace"
        self.app_password = secrets.token_urlsafe(16)
        self.owner_password = secrets.token_urlsafe(16)
        self.admin_password = secrets.token_urlsafe(16)
        self.env = {
            **os.environ,
            "AGRITRACE_ENV_FILE": str(self.dir / "no-env-file"),
            "AGRITRACE_DATABASE_URL": f"postgresql://agritrace_app:{self.app_password}@127.0.0.1:{self.pg_port}/agritrace",
            "AGRITRACE_DATABASE_OWNER_PASSWORD": self.owner_password,
            "AGRITRACE_MQTT_HOST": "127.0.0.1",
            "AGRITRACE_MQTT_PORT": str(self.mqtt_port),
            "AGRITRACE_MQTT_TLS_PORT": str(self.mqtt_tls_port),
            "AGRITRACE_MQTT_TLS_CA_FILE": str(self.tls_dir / "ca.crt"),
            "AGRITRACE_MQTT_ADMIN_USERNAME": "agritrace-faults-admin",
            "AGRITRACE_MQTT_ADMIN_PASSWORD": self.admin_password,
            "AGRITRACE_INGEST_WORKERS": "4",
            "AGRITRACE_MQTT_INGEST_PASSWORD": secrets.token_urlsafe(16),
            "AGRITRACE_TOKEN_PEPPER": secrets.token_urlsafe(16),
            "AGRITRACE_INGEST_METRICS_PORT": "0",
            "AGRITRACE_INGEST_FLUSH_INTERVAL": "0.05",
            "AGRITRACE_INGEST_RETENTION_INTERVAL": "0",
        }
        self.log = self.dir / "agritrace.log"
        self.alerts_log = self.dir / "alerts.log"

    # --- PostgreSQL --------------------------------------------------------------------------
    def start_database(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir()
            shutil.chown(self.pgdata, "postgres", "postgres")
            subprocess.run(
                as_postgres(str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"),
                check=True, capture_output=True,
            )  # fmt: skip
            with (self.pgdata / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"port = {self.pg_port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.pgdata}'\n"
                    "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
                )
        subprocess.run(
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "log"),
                        "-w", "-t", "60", "start"),
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def crash_restart_database(self) -> None:
        """Stops PostgreSQL the way a power cut would (immediate: no checkpoint), then starts it."""
        subprocess.run(
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"),
            check=True, capture_output=True,
        )  # fmt: skip
        self.start_database()

    def sql(self, query: str, *, database: str = "agritrace") -> list[dict[str, Any]]:
        url = self.url.rsplit("/", 1)[0] + "/" + database
        with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []

    def refuse_connections(self, refuse: bool) -> None:
        """Makes the database refuse (or accept again) every new connection, and drops current ones."""
        self.sql(f"ALTER DATABASE agritrace WITH ALLOW_CONNECTIONS {'false' if refuse else 'true'}",
                 database="postgres")  # fmt: skip
        if refuse:
            self.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'agritrace'",
                database="postgres",
            )

    # --- Mosquitto ---------------------------------------------------------------------------
    def start_broker(self) -> None:
        plugin = next(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
        if not RETAIN_PLUGIN.is_file():
            raise RuntimeError(f"{RETAIN_PLUGIN} is missing: deploy/local/install.sh builds it")
        self.broker_dir.mkdir(exist_ok=True)
        subprocess.run(
            ["sh", str(REPO / "deploy/mosquitto/tls-certs.sh"), str(self.tls_dir), "mosquitto",
             "localhost", "127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        template = (REPO / "deploy/mosquitto/mosquitto.conf.in").read_text()
        conf = (
            template.replace("@MQTT_PORT@", str(self.mqtt_port))
            .replace("@MQTT_BIND@", "127.0.0.1")
            .replace("@MQTT_TLS_PORT@", str(self.mqtt_tls_port))
            .replace("@MQTT_TLS_BIND@", "127.0.0.1")
            .replace("@TLS_DIR@", str(self.tls_dir))
            .replace("@RETAIN_PLUGIN@", str(RETAIN_PLUGIN))
            .replace("@PERSIST_DIR@", str(self.broker_dir))
            .replace("@DYNSEC_PLUGIN@", str(plugin))
            .replace("@LOG_DEST@", f"file {self.broker_dir}/mosquitto.log")
        ) + "user mosquitto\n"
        (self.broker_dir / "mosquitto.conf").write_text(conf)
        dynsec = self.broker_dir / "dynamic-security.json"
        if not dynsec.exists():
            subprocess.run(
                ["mosquitto_ctrl", "dynsec", "init", str(dynsec), "agritrace-faults-admin", self.admin_password],
                check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(["chown", "-R", "mosquitto:", str(self.broker_dir)], check=True)
        dynsec.chmod(0o600)
        # umask 077 as deploy/local/stack.sh: whatever the broker creates is its alone.
        self.broker = subprocess.Popen(
            ["mosquitto", "-c", str(self.broker_dir / "mosquitto.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0o077,
        )  # fmt: skip

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=1):
                return True

        wait_until(listening, timeout=20, what="broker listening")

    def restart_broker(self) -> None:
        """A clean broker restart: Mosquitto writes its persistence file on the way down."""
        assert self.broker is not None
        self.broker.send_signal(signal.SIGTERM)
        self.broker.wait(30)
        self.start_broker()

    # --- application -------------------------------------------------------------------------
    def cli(self, *args: str) -> str:
        return subprocess.run(
            [AGRITRACE, *args], env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def setup(self) -> None:
        self.start_database()
        # The same roles and database as every deployment (deploy/postgres/roles.sql).
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url.rsplit("/", 1)[0] + "/postgres",
             "-v", f"ownerpw={self.owner_password}", "-v", f"apppw={self.app_password}",
             "-f", str(REPO / "deploy/postgres/roles.sql")],
            check=True, capture_output=True,
        )  # fmt: skip
        self.start_broker()
        self.cli("db", "migrate")
        self.cli("broker", "setup")

    def create_gateway(self, cooperative: str) -> tuple[str, str]:
        created = json.loads(self.cli("gateways", "create", "--cooperative", cooperative, "--json"))
        return created["gateway_id"], created["mqtt"]["password"]

    def start_worker(self, worker_id: int) -> None:
        with self.log.open("ab") as log:
            self.workers[worker_id] = subprocess.Popen(
                [AGRITRACE, "ingest", "run", "--worker-id", str(worker_id)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def kill_worker(self, worker_id: int) -> None:
        proc = self.workers[worker_id]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def workers_alive(self) -> bool:
        return all(p.poll() is None for p in self.workers.values())

    def start_alerts(self) -> None:
        """The cold-chain alert evaluator and notifier (`agritrace alerts run`), as `make up` runs it."""
        with self.alerts_log.open("ab") as log:
            self.alerts = subprocess.Popen(
                [AGRITRACE, "alerts", "run", "--interval", "0.2"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def alerts_alive(self) -> bool:
        return self.alerts is not None and self.alerts.poll() is None

    def close(self) -> None:
        for proc in [*self.workers.values(), *([self.alerts] if self.alerts else [])]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()
            self.broker.wait(10)
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(
                as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "stop"),
                check=False, capture_output=True,
            )  # fmt: skip
        # Keep the workers' and the evaluator's logs where a person can read them after a failed run.
        artifacts = REPO / "test-artifacts"
        for log, name in ((self.log, "faults-workers.log"), (self.alerts_log, "faults-alerts.log")):
            if log.exists():
                artifacts.mkdir(exist_ok=True)
                shutil.copy(log, artifacts / name)
        shutil.rmtree(self.dir, ignore_errors=True)
