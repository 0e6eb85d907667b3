"""CLI: export the dashboards and provisioning files, push them to a Grafana, create the reader role."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import typer

from agritrace import outage, roles
from agritrace.dashboards import provisioning, rollup
from agritrace.db import cli_connect
from agritrace.errors import AgriTraceError
from agritrace.settings import get_settings

dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)


@dashboards_app.command("export")
def export(
    directory: Path = typer.Argument(..., help="Where to write dashboards/ and provisioning/."),
) -> None:
    """Writes the dashboards (JSON) and Grafana provisioning files (YAML) under DIRECTORY."""
    for path in provisioning.export(directory):
        typer.echo(str(path))


@dashboards_app.command("push")
def push(
    url: str = typer.Option(..., help="Grafana's base URL, e.g. https://grafana.example.cn"),
    token: str = typer.Option(
        ...,
        envvar="AGRITRACE_GRAFANA_TOKEN",
        help="A Grafana service-account token (or set AGRITRACE_GRAFANA_TOKEN).",
    ),
) -> None:
    """Creates or updates every dashboard in a running Grafana (safe to repeat)."""
    # Imported here: grafana-client (and requests) would slow every other command's start-up.
    from agritrace.dashboards import push as push_service

    for uid in push_service.push(url=url, token=token):
        typer.echo(f"pushed {uid}")


@dashboards_app.command("reader")
def reader(
    name: str = typer.Argument("agritrace_grafana_reader", help="The login role Grafana connects as."),
) -> None:
    """Creates or updates the read-only login role for Grafana.

    The password comes from AGRITRACE_GRAFANA_DB_PASSWORD (kept out of the process list); without
    it a new one is generated and printed on one line.
    """
    settings = get_settings()
    if settings.database_roles_url is None:
        raise AgriTraceError("set AGRITRACE_DATABASE_ROLES_URL to a login that may create roles (CREATEROLE)")
    given = settings.grafana_db_password
    password = given.get_secret_value() if given else secrets.token_urlsafe(24)
    generated = given is None
    with cli_connect(settings.database_roles_url.get_secret_value(), autocommit=True) as conn:
        roles.create_reader(conn, name=name, password=password)
    if generated:
        typer.echo(password)


@dashboards_app.command("rollup")
def rollup_command(
    every: float = typer.Option(60.0, min=1.0, help="Seconds between runs."),
    once: bool = typer.Option(False, "--once", help="Run once and exit (e.g. from cron)."),
) -> None:
    """Keeps the 15-minute readings rollup the dashboards read up to date (re-rolls changed buckets)."""
    if once:
        with cli_connect(autocommit=True) as conn:
            rollup.run(conn, every=every, once=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def one_round() -> None:
        with cli_connect(autocommit=True) as conn:
            rollup.run(conn, every=every, once=True)

    # A lost database is waited out (agritrace.outage), where the loop used to end with it.
    outage.run_every(every, one_round, what="dashboards rollup")
