"""CLI: set what a channel is watched against, run the alert evaluator, list alerts."""

from __future__ import annotations

import json
import logging

import typer

from agritrace.coldchain import profiles, service, worker
from agritrace.db import cli_connect
from agritrace.settings import get_settings

channels_app = typer.Typer(help="Sensor channels.", no_args_is_help=True)
alerts_app = typer.Typer(help="Cold-chain alerts.", no_args_is_help=True)


@channels_app.command("profile")
def channel_profile(
    gateway: str = typer.Option(..., "--gateway", help="The gateway id."),
    channel: str = typer.Option(..., "--channel", help="The channel's resolved SenML name."),
    profile: str = typer.Option(..., "--profile", help="mango, citrus, tea, or another profile's name."),
    unit: str = typer.Option(
        None, "--unit", help="Registers a channel not seen yet with this unit (Cel, %RH)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Sets the cold-chain profile a channel is watched against (a cold room holding mango, say)."""
    with cli_connect() as conn:
        result = profiles.set_channel_profile(
            conn, gateway_id=gateway, channel=channel, profile=profile, unit=unit
        )
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(f"{gateway} {channel}: watched as {profile}")


@alerts_app.command("run")
def alerts_run(
    interval: float = typer.Option(
        0.5,
        min=0.05,
        help="Longest wait between passes; a pass starts as soon as readings are committed.",
    ),
) -> None:
    """Runs the alert evaluator and notifier until stopped (SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker.run(get_settings(), interval=interval)


@alerts_app.command("list")
def alerts_list(
    status: str = typer.Option(None, help="open, acknowledged, resolved or withdrawn."),
) -> None:
    """Prints alerts as one JSON document."""
    with cli_connect() as conn:
        items = service.list_alerts(conn, cooperative_id=None, status=status)
    typer.echo(json.dumps({"items": items}, ensure_ascii=False, default=str))
