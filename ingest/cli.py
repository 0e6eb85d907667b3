"""CLI of the ingest domain: run a worker, enforce retention, simulate gateways."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from agritrace import db
from agritrace.ingest import retention
from agritrace.settings import get_settings

ingest_app = typer.Typer(help="MQTT ingest workers and readings retention.", no_args_is_help=True)


@ingest_app.command("run")
def ingest_run(
    worker_id: Annotated[int, typer.Option(min=1, help="N: client id {prefix}-N, metrics on port+N-1.")] = 1,
) -> None:
    """Runs one ingest worker until SIGTERM (restart it with the same id: its session holds messages)."""
    from agritrace.ingest.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(get_settings(), worker_id=worker_id)


@ingest_app.command("retention")
def ingest_retention(
    days: Annotated[
        int | None, typer.Option(min=1, help="Keep this many days (default from settings).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the chunks that would go.")] = False,
) -> None:
    """Drops raw readings chunks older than the retention period (workers also do this hourly)."""
    settings = get_settings()
    with db.connect(autocommit=True) as conn:
        chunks = retention.enforce(conn, days=days or settings.ingest_retention_days, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    typer.echo(f"{verb} {len(chunks)} chunk(s)" + "".join(f"\n  {c}" for c in chunks))
