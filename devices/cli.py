"""CLI for the device registry and the broker's accounts."""

from __future__ import annotations

import typer

from agritrace.devices import broker
from agritrace.settings import get_settings

broker_app = typer.Typer(help="The MQTT broker's accounts.", no_args_is_help=True)


@broker_app.command("setup")
def broker_setup() -> None:
    """Creates or refreshes the service accounts on the broker (idempotent)."""
    settings = get_settings()
    with broker.admin_session(settings) as dynsec:
        broker.ensure_ingest_account(dynsec, settings)
    typer.echo("broker accounts are set up")
