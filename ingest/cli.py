"""CLI of the ingest domain: run a worker, enforce retention, simulate gateways."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from agritrace import db
from agritrace.errors import InvalidInput
from agritrace.ingest import retention
from agritrace.settings import get_settings
from agritrace.trace import coldchain_page as trace_coldchain

# What must be summarised before raw readings are dropped, handed to every retention run (worker 1's
# hourly one and `ingest retention`): the readings a consumer page's cold-chain history depends on
# are kept until the page's summary is stored.
RETENTION_GUARDS: tuple[retention.RetentionGuard, ...] = (trace_coldchain.retention_guard,)

ingest_app = typer.Typer(help="MQTT ingest workers and readings retention.", no_args_is_help=True)


@ingest_app.command("run")
def ingest_run(
    worker_id: Annotated[int, typer.Option(min=1, help="N: client id {prefix}-N, metrics on port+N-1.")] = 1,
) -> None:
    """Runs one ingest worker until SIGTERM (restart it with the same id: its session holds messages)."""
    from agritrace.ingest.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(get_settings(), worker_id=worker_id, retention_guards=RETENTION_GUARDS)


@ingest_app.command("retention")
def ingest_retention(
    days: Annotated[
        int | None, typer.Option(min=1, help="Keep this many days (default from settings).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the chunks that would go.")] = False,
) -> None:
    """Drops raw readings chunks older than the retention period (workers also do this hourly)."""
    settings = get_settings()
    with db.cli_connect(autocommit=True) as conn:
        chunks = retention.enforce(
            conn, days=days or settings.ingest_retention_days, guards=RETENTION_GUARDS, dry_run=dry_run
        )
        purged = 0 if dry_run else retention.purge_dead_letters(conn, days=settings.ingest_dead_letter_days)
    verb = "would drop" if dry_run else "dropped"
    typer.echo(f"{verb} {len(chunks)} chunk(s)" + "".join(f"\n  {c}" for c in chunks))
    if purged:
        typer.echo(f"deleted {purged} dead letter(s) older than {settings.ingest_dead_letter_days} days")


def simulate(
    demo: Annotated[
        bool, typer.Option("--demo", help="Provision demo gateways (idempotent) and run forever.")
    ] = False,
    gateways_file: Annotated[
        Path | None, typer.Option("--gateways", help="JSON list of `gateways create --json` outputs.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="mango-coldroom|mango-truck|citrus-orchard|tea-garden|tea-store")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.001, help="Seconds between readings.")] = 10.0,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many rounds (default: forever).")
    ] = None,
    excursion: Annotated[
        list[str] | None,
        typer.Option(help="GATEWAY:SIGNAL:DELTA:MINUTES, e.g. demo-mango-coldroom-1:temp:+6:30."),
    ] = None,
    dropout: Annotated[
        float, typer.Option(min=0, max=1, help="Chance per round that a gateway drops out.")
    ] = 0.005,
    seed: Annotated[int | None, typer.Option(help="Random seed, for repeatable runs.")] = None,
) -> None:
    """Simulates gateways: diurnal cycles, noise, dropouts with store-and-forward bursts, excursions."""
    import time

    from agritrace.ingest import simulate as sim

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if kind is not None and kind not in sim.KINDS:
        raise InvalidInput(f"--kind must be one of {', '.join(sorted(sim.KINDS))}")
    if demo == (gateways_file is not None):
        raise InvalidInput("give either --demo or --gateways FILE")
    gateways = sim.demo_gateways(settings) if demo else sim.load_gateways(Path(str(gateways_file)), kind)
    try:
        excursions = [sim.Excursion.parse(e, time.time()) for e in excursion or []]
    except ValueError:
        raise InvalidInput("an excursion is GATEWAY:SIGNAL:DELTA:MINUTES") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    typer.echo(f"simulating {len(gateways)} gateway(s) every {interval} s", err=True)
    sent = sim.run(
        gateways,
        settings,
        interval=interval,
        rounds=rounds,
        excursions=excursions,
        dropout=dropout,
        seed=seed,
        stop=stop,
    )
    typer.echo(f"published {sent} pack(s)", err=True)
