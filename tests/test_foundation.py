"""The skeleton works end to end: schema, health, errors, tokens, and the packaged wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.db import Conn
from agritrace.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["api", "devices", "ingest", "trace", "dashboards", "coldchain"]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def test_migrations_create_timescaledb_and_the_readings_hypertable(conn: Conn) -> None:
    ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    assert ext is not None and ext["extversion"]
    hyper = conn.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"
    ).fetchone()
    assert hyper is not None
    cols = conn.execute(
        """SELECT column_name, data_type FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = 'readings' ORDER BY ordinal_position"""
    ).fetchall()
    assert [(c["column_name"], c["data_type"]) for c in cols] == [
        ("time", "timestamp with time zone"),
        ("channel_id", "integer"),
        ("value", "double precision"),
    ]


def test_healthz_reports_database_and_broker(client: TestClient) -> None:
    for _ in range(50):  # the broker session connects in the background
        body = client.get("/healthz").json()
        if body["broker"]["ok"]:
            break
        import time

        time.sleep(0.1)
    resp = client.get("/healthz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["database"]["ok"] is True
    assert body["database"]["timescaledb"].count(".") == 2
    assert body["broker"] == {"ok": True}


def test_unknown_path_is_problem_json_404(client: TestClient) -> None:
    resp = client.get("/api/v1/no-such-thing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"].endswith("/not-found")


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/healthz" in spec["paths"]


def test_token_is_shown_once_and_stored_only_as_hash(conn: Conn) -> None:
    token = tokens.create(conn, role="admin")
    rows = conn.execute("SELECT token_hash, prefix, role FROM api_tokens").fetchall()
    assert len(rows) == 1
    assert token.encode() not in bytes(rows[0]["token_hash"])
    assert bytes(rows[0]["token_hash"]) == tokens.hash_token(token)
    assert token.startswith(rows[0]["prefix"]) and len(token) > 40


def test_cli_token_create_prints_one_line(database: str) -> None:
    out = subprocess.run(
        [str(REPO / ".venv/bin/agritrace"), "token", "create", "--role", "admin"],
        check=True,
        capture_output=True,
        text=True,
        env={
            "AGRITRACE_DATABASE_URL": database,
            "AGRITRACE_ENV_FILE": str(REPO / ".local/agritrace.env"),
            "PATH": "/usr/bin:/bin",
        },
    ).stdout
    assert out.count("\n") == 1 and out.startswith(tokens.TOKEN_PREFIX)


def test_cooperative_token_needs_an_existing_cooperative(conn: Conn) -> None:
    from agritrace.errors import InvalidInput, NotFound

    with pytest.raises(InvalidInput):
        tokens.create(conn, role="cooperative")
    with pytest.raises(NotFound):
        tokens.create(conn, role="cooperative", cooperative="nobody")


def test_placeholder_secrets_are_refused_outside_local_mode() -> None:
    with pytest.raises(ValueError, match="placeholder secrets"):
        Settings(mode="production", _env_file=None)
    Settings(
        mode="production",
        mqtt_admin_password="x" * 24,
        mqtt_ingest_password="y" * 24,
        mqtt_alerts_password="w" * 24,
        mqtt_audit_password="v" * 24,
        token_pepper="z" * 24,
        _env_file=None,
    )


@pytest.mark.slow
def test_built_wheel_installs_and_imports_every_subpackage(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("agritrace-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "agritrace/migrations/0001.foundation.sql" in names
    assert "agritrace/trace/static/trace.css" in names and "agritrace/trace/templates/trace.html" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
        check=True,
    )
    # Dependencies come from the project's venv (a plain path entry: its editable-install hook
    # is not run), so only the wheel's own files provide `agritrace`.
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next((REPO / ".venv/lib").glob("python3*/site-packages"))
    (site / "zz_project_deps.pth").write_text(str(deps) + "\n")
    imports = "; ".join(f"import agritrace.{p}" for p in SUBPACKAGES) + "; import agritrace.cli"
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", imports + "; print(agritrace.api.__file__)"],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout
    assert out.startswith(str(site)), out
    assert (venv / "bin/agritrace").exists()
