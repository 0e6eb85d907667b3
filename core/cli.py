"""The `agritrace` command: sub-commands come from the domains."""

from __future__ import annotations

import sys

import typer

from agritrace.api.cli import api_app, audit_app, token_app
from agritrace.coldchain.cli import alerts_app, channels_app
from agritrace.dashboards.cli import dashboards_app
from agritrace.db import migrate
from agritrace.devices.cli import broker_app, gateways_app
from agritrace.errors import AgriTraceError
from agritrace.ingest.cli import ingest_app, simulate
from agritrace.trace.cli import batches_app, codes_app, trace_app

app = typer.Typer(help="AgriTrace: agricultural traceability backend.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(api_app, name="api")
app.add_typer(token_app, name="token")
app.add_typer(broker_app, name="broker")
app.add_typer(audit_app, name="audit")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(channels_app, name="channels")
app.add_typer(alerts_app, name="alerts")
app.add_typer(gateways_app, name="gateways")
app.add_typer(ingest_app, name="ingest")
app.command("simulate")(simulate)
app.add_typer(batches_app, name="batches")
app.add_typer(codes_app, name="codes")
app.add_typer(trace_app, name="trace")


@db_app.command("migrate")
def db_migrate() -> None:
    """Applies pending schema migrations."""
    applied = migrate()
    typer.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def main() -> None:
    """Entry point; domain errors print one line and exit 1 instead of a traceback."""
    try:
        app()
    except AgriTraceError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        sys.exit(1)
