"""The FastAPI application: routers wired in one place, one pool, one broker connection."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from agritrace import __version__
from agritrace.api import audit_router, health, problems, protection, token_router
from agritrace.coldchain import router as coldchain_router
from agritrace.devices import router as devices_router
from agritrace.mqtt import new_client
from agritrace.settings import get_settings
from agritrace.trace import labels
from agritrace.trace import public as trace_public
from agritrace.trace import router as trace_router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Handlers are plain `def` (run in the thread pool) so the CLI, workers and API share one
    # set of synchronous service functions.
    pool = ConnectionPool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        kwargs={"row_factory": dict_row},
        open=False,
    )
    pool.open(wait=False)
    # One broker session per API process: health, gateway provisioning, notifications.
    broker = new_client(
        # Unique per lifespan, not just per process: two sessions with one client id would take
        # the broker connection from each other in turn (tests run overlapping lifespans).
        f"agritrace-api-{os.getpid()}-{secrets.token_hex(3)}",
        username=settings.mqtt_admin_username,
        password=settings.mqtt_admin_password.get_secret_value(),
    )
    broker.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=30)
    broker.loop_start()
    app.state.pool = pool
    app.state.broker = broker
    app.state.page_limiter = anyio.CapacityLimiter(settings.public_page_threads)
    app.state.label_jobs = labels.Runner(settings.database_url)
    app.state.label_jobs.start()
    try:
        yield
    finally:
        app.state.label_jobs.stop()
        broker.disconnect()
        broker.loop_stop()
        pool.close()


# What each OpenAPI tag groups (the routers name their tag).
TAGS = [
    {"name": "health", "description": "Liveness and readiness of the API and what it depends on."},
    {"name": "tokens", "description": "API tokens: who may call what (admin)."},
    {
        "name": "audit",
        "description": "The hash-chained audit trail of every change, and its signed checkpoints.",
    },
    {"name": "cold chain", "description": "Product profiles, excursion rules, alerts and webhooks."},
    {
        "name": "devices",
        "description": "Cooperatives' gateways, their channels and readings, MQTT credentials.",
    },
    {
        "name": "trace",
        "description": "Batches, lineage, custody, certificates, recalls, QR codes and label sheets.",
    },
    {"name": "trace (public)", "description": "What a consumer sees after scanning a QR code (no token)."},
]


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its function's name (`create_gateway`), not FastAPI's
    name-path-method (`create_gateway_api_v1_gateways_post`). Names are unique across routers."""
    return route.name


def create_app() -> FastAPI:
    """Builds the app with every router and the problem+json handlers."""
    app = FastAPI(
        title="AgriTrace",
        version=__version__,
        summary="Agricultural traceability: sensor readings, batches, QR trace pages, cold-chain alerts.",
        lifespan=lifespan,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
    )
    problems.install(app)
    app.include_router(health.router)
    protection.install(app)
    app.include_router(token_router.router)
    app.include_router(audit_router.router)
    app.include_router(coldchain_router.router)
    app.include_router(devices_router.router)
    app.include_router(trace_router.router)
    app.include_router(trace_public.router)
    # The consumer page's stylesheet: a file, not inline, so the page keeps a strict CSP. Symlinks are
    # followed because a development (strict editable) install links each package file.
    static = StaticFiles(directory=str(resources.files("agritrace.trace") / "static"), follow_symlink=True)
    app.mount("/static", static, name="static")
    return app
