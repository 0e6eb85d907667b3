"""No one gets in with a default password or none, no secret is stored readable, no page runs a stranger's script."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pydantic
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from test_ingest import Stack, wait_for

from agritrace import db
from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.mqtt import connect_blocking
from agritrace.settings import Settings, get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service

# Chromium is given a page: wait, by the element it builds last, so a script would have run.
CHROMIUM = [
    "/usr/bin/chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
XSS_VARIETY = "<script>document.title='pwned'</script>"
XSS_ORIGIN = '"><img src=x onerror="document.title=\'pwned\'">'
XSS_COOP = "<svg onload=alert(1)>合作社"


@pytest.mark.parametrize("secret", ["local", "changethis", "", "password", "  Secret "])
def test_production_refuses_default_or_placeholder_credentials(secret: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="placeholder secrets are refused"):
        Settings(
            _env_file=None,
            mode="production",
            mqtt_admin_password=secret,
            mqtt_ingest_password="a-real-long-ingest-password",
            mqtt_alerts_password="a-real-long-alerts-password",
            mqtt_audit_password="a-real-long-audit-password",
            token_pepper="a-real-long-pepper-value",
        )


def test_production_starts_with_chosen_secrets_and_local_mode_keeps_its_defaults() -> None:
    chosen = Settings(
        _env_file=None,
        mode="production",
        mqtt_admin_password="a-real-admin-password",
        mqtt_ingest_password="a-real-ingest-password",
        mqtt_alerts_password="a-real-alerts-password",
        mqtt_audit_password="a-real-audit-password",
        token_pepper="a-real-long-pepper-value",
    )
    assert chosen.mode == "production"
    assert Settings(_env_file=None, mode="local").mqtt_admin_password.get_secret_value() == "local"


def test_broker_refuses_anonymous_clients() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anonymous-probe", protocol=mqtt.MQTTv5)
    with pytest.raises(ConnectionError):
        connect_blocking(client, get_settings())


def _all_text(database: str) -> str:
    """Every row of every table of ours, as JSON text: where a leaked secret would show."""
    with db.connect(database, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%'"
        ).fetchall()
        out = []
        for t in tables:
            query = sql.SQL("SELECT coalesce(json_agg(x)::text, '') AS j FROM {} x").format(
                sql.Identifier(t["tablename"])
            )
            row = conn.execute(query).fetchone()
            out.append(str(row["j"]) if row else "")
    return "\n".join(out)


def test_tokens_and_gateway_passwords_are_stored_only_as_hashes(database: str) -> None:
    with db.connect(database, autocommit=True) as conn:
        token = tokens.create(conn, role="admin")
        row = conn.execute("SELECT token_hash FROM api_tokens").fetchone()
        secret_columns = conn.execute(
            """SELECT table_name, column_name FROM information_schema.columns
                WHERE table_schema = 'public' AND column_name ~* '(password|secret|passwd)'"""
        ).fetchall()
    assert row is not None and bytes(row["token_hash"]) == tokens.hash_token(token)
    # Gateway passwords live in the broker only. A webhook's secret is the key we sign its calls
    # with: it must be readable to be used, and it opens nothing here.
    assert [(c["table_name"], c["column_name"]) for c in secret_columns] == [("coldchain_webhooks", "secret")]
    stack = Stack(database)
    try:
        gateway, password = stack.gateway()
        other, other_password = stack.gateway()
        stored = _all_text(database)
        assert token not in stored and token[8:] not in stored
        assert password not in stored and other_password not in stored
        # Mosquitto's dynamic-security file: salted, iterated hashes, never the password itself.
        dynsec = Path(os.environ["AGRITRACE_ENV_FILE"]).parent / "data/mosquitto/dynamic-security.json"

        def clients() -> dict[str, dict[str, Any]]:
            doc = json.loads(dynsec.read_text())
            return {c["username"]: c for c in doc["clients"]}

        wait_for(lambda: gateway in clients() and other in clients(), timeout=20)
        text = dynsec.read_text()
        assert password not in text and other_password not in text
        ours = clients()
        for name in (gateway, other):
            assert set(ours[name]) >= {"password", "salt", "iterations"}
            # Mosquitto's own default is 101 PBKDF2 rounds: weak for a person's password, enough
            # for our generated ones (random, 128 bits and more), which no dictionary holds.
            assert ours[name]["iterations"] >= 100
            assert len(base64.b64decode(ours[name]["password"])) == 64  # PBKDF2-SHA512
        assert ours[gateway]["salt"] != ours[other]["salt"]
    finally:
        stack.close()


@pytest.fixture
def live_server() -> Iterator[str]:
    """The real app under uvicorn on a free port, for the browser (as in tests/tracing/)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def hostile_lot(conn: db.Conn) -> dict[str, Any]:
    """A lot whose cooperative, variety and origin carry markup, with one issued code."""
    coop = trace_service.ensure_cooperative(conn, name=XSS_COOP)
    batch = trace_service.create_batch(
        conn,
        product="mango",
        cooperative_id=coop,
        variety=XSS_VARIETY,
        origin_plot=XSS_ORIGIN,
        gi_area=XSS_ORIGIN,
        harvest_date=date(2026, 7, 10),
        gtin="06901234567892",
    )
    return trace_codes.issue_codes(conn, batch_id=batch["id"], count=1)[0]


@pytest.mark.slow
def test_markup_in_a_batch_renders_as_text_on_the_consumer_page_in_a_real_browser(
    hostile_lot: dict[str, Any], live_server: str, tmp_path: Path
) -> None:
    url = live_server + urlsplit(hostile_lot["url"]).path
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src" in csp or "default-src" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[-1].split(";")[0]
    dom = subprocess.run(
        [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        check=True, capture_output=True, text=True, timeout=90,
    ).stdout  # fmt: skip
    # The text is there, escaped; the elements it describes are not, and no script changed the page.
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;svg onload=alert(1)&gt;合作社" in dom
    # (A serialized DOM escapes "<" in text, so a raw "<img" or "<svg" is an element.)
    assert "<script>document.title" not in dom
    assert re.search(r"<img[^>]*onerror", dom) is None and re.search(r"<svg[^>]*onload", dom) is None
    assert "pwned</title>" not in dom
