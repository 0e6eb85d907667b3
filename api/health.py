"""Liveness and readiness: is the database (with TimescaleDB) and the broker reachable."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from agritrace.api import problems
from agritrace.db import Conn

router = APIRouter(tags=["health"])


def _database(pool: ConnectionPool[Conn]) -> dict[str, Any]:
    try:
        with pool.connection(timeout=2) as conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    except Exception as exc:  # any failure means unhealthy; the reason is reported, not raised
        return {"ok": False, "error": type(exc).__name__}
    if row is None:
        return {"ok": False, "error": "timescaledb extension missing"}
    return {"ok": True, "timescaledb": row["extversion"]}


@router.get(
    "/healthz",
    summary="Health of the API, its database and its broker",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "ok": True,
                        "database": {"ok": True, "timescaledb": "2.19.3"},
                        "broker": {"ok": True},
                    }
                }
            }
        },
        503: {"description": "The database or the broker is unreachable (same body, ok false)"},
        **problems.responses(429),  # public routes share the per-client rate limit
    },
    openapi_extra={"security": []},  # public: load balancers and monitors call it without a token
)
def healthz(request: Request) -> JSONResponse:
    """200 when the database (with TimescaleDB) and the MQTT broker are reachable, else 503."""
    database = _database(request.app.state.pool)
    broker = {"ok": request.app.state.broker.is_connected()}
    body = {"ok": database["ok"] and broker["ok"], "database": database, "broker": broker}
    return JSONResponse(body, status_code=200 if body["ok"] else 503)
