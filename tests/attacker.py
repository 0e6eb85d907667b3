"""Helpers for the attack tests (tests/security/): a real HTTP client, tokens, a tenant to attack."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

from agritrace import db
from agritrace.api import tokens
from agritrace.settings import get_settings
from agritrace.trace import service as trace_service


def curl(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    show_headers: bool = False,
) -> tuple[int, bytes]:
    """One request with curl; the body is sent byte for byte. Returns (status, body), the body
    preceded by the response headers with `show_headers`."""
    args = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"]
    if show_headers:
        args.append("-i")
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    out = subprocess.run([*args, url], input=body or b"", capture_output=True, check=True).stdout
    payload, _, status = out.rpartition(b"\n")
    return int(status), payload


def bearer(conn: db.Conn, role: str, cooperative: str | None = None) -> dict[str, str]:
    return {"Authorization": "Bearer " + tokens.create(conn, role=role, cooperative=cooperative)}


@dataclass
class Tenant:
    """A cooperative with one batch, and a token of each role (`own`: the cooperative's)."""

    cooperative: str
    cooperative_id: int
    batch_id: int
    admin: dict[str, str]
    regulator: dict[str, str]
    own: dict[str, str]


def make_tenant(conn: db.Conn) -> Tenant:
    name = "百色芒果合作社 " + str(time.monotonic_ns())[-8:]
    coop = trace_service.ensure_cooperative(conn, name=name)
    batch = trace_service.create_batch(
        conn, product="mango", cooperative_id=coop, harvest_date=date(2026, 7, 1)
    )
    return Tenant(
        name,
        coop,
        int(batch["id"]),
        bearer(conn, "admin"),
        bearer(conn, "regulator"),
        bearer(conn, "cooperative", name),
    )


@contextmanager
def server_settings(**values: str) -> Iterator[None]:
    """Runs with these AGRITRACE_* settings (an operator's environment), then restores the defaults."""
    names = {f"AGRITRACE_{k.upper()}": v for k, v in values.items()}
    os.environ.update(names)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name in names:
            del os.environ[name]
        get_settings.cache_clear()
