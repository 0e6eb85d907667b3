"""CLI for the device registry and the broker's accounts."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agritrace import db
from agritrace.coldchain import feeds
from agritrace.devices import broker, service
from agritrace.devices.exceptions import GatewayNotFound
from agritrace.settings import get_settings

broker_app = typer.Typer(help="The MQTT broker's accounts.", no_args_is_help=True)


@broker_app.command("setup")
def broker_setup(
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Ingest worker accounts (default AGRITRACE_INGEST_WORKERS)."),
    ] = None,
) -> None:
    """Creates or refreshes the service accounts and brings every registered gateway's client up to
    today's rules (pinned client id, exact topics); idempotent."""
    settings = get_settings()
    with db.cli_connect() as conn, broker.admin_session(settings) as dynsec:
        for worker_id in range(1, (workers or settings.ingest_workers) + 1):
            broker.ensure_ingest_account(dynsec, settings, worker_id)
        broker.ensure_alerts_account(dynsec, settings)
        broker.ensure_audit_account(dynsec, settings)
        # The single shared ingest account of earlier releases could connect with any client id.
        dynsec.run(
            {"command": "deleteClient", "username": settings.ingest_client_prefix}, tolerate=("not found",)
        )
        gateways = [r["gateway_id"] for r in service.list_gateways(conn)]
        missing = [gw for gw in gateways if not broker.pin_gateway(dynsec, gw)]
        feeds.sync_all(dynsec, conn)  # alert feeds: each cooperative's role reads exactly its gateways
    typer.echo(f"broker accounts are set up ({len(gateways)} gateways checked)")
    if missing:
        typer.echo(
            f"no broker client for {len(missing)} registered gateway(s), e.g. {missing[0]}: "
            "`agritrace gateways rotate ID` issues one",
            err=True,
        )


@broker_app.command("audit-reader")
def broker_audit_reader(
    name: Annotated[
        str, typer.Argument(help="Who reads: e.g. the regulator's archiver, 'city-market-bureau'.")
    ],
) -> None:
    """Creates a broker account that may only read the retained signed audit checkpoint (topic
    agritrace/v1/audit/checkpoint); prints its username, password and topic as JSON, once."""
    settings = get_settings()
    connection = service.mqtt_connection(settings)
    with broker.admin_session(settings) as dynsec:
        username, password = broker.create_audit_reader(dynsec, name)
    typer.echo(
        json.dumps(
            {
                "username": username,
                "client_id": username,
                "password": password,
                "topic": broker.AUDIT_TOPIC,
                **connection,
            }
        )
    )


@broker_app.command("alert-feed")
def broker_alert_feed(
    regulator: Annotated[
        str | None, typer.Option(help="A regulator's feed (every alert), e.g. 'city-market-bureau'.")
    ] = None,
    cooperative: Annotated[
        str | None, typer.Option(help="A cooperative's feed (its gateways' alerts).")
    ] = None,
) -> None:
    """Creates a read-only broker account for alerts (topic agritrace/v1/alerts/{gateway_id}/{alert_id}):
    a regulator's reads every alert, a cooperative's only its own gateways' (later ones included).
    Prints its username, client id, password and topic as JSON, once."""
    if (regulator is None) == (cooperative is None):
        raise typer.BadParameter("give exactly one of --regulator NAME or --cooperative NAME")
    settings = get_settings()
    connection = service.mqtt_connection(settings)
    with db.cli_connect() as conn, broker.admin_session(settings) as dynsec:
        if regulator is not None:
            feed = feeds.create_regulator_feed(dynsec, regulator)
        else:
            coop_id = feeds.cooperative_id(conn, name=str(cooperative))
            feed = feeds.create_cooperative_feed(dynsec, conn, cooperative_id=coop_id)
    typer.echo(json.dumps({**feed, **connection}))


@broker_app.command("ca")
def broker_ca() -> None:
    """Prints the CA certificate (PEM) gateways verify the broker's TLS listener with."""
    ca = service.mqtt_connection(get_settings())["ca_certificate"]
    if ca is None:
        raise typer.BadParameter(
            "AGRITRACE_MQTT_TLS_CA_FILE is not set: the broker's certificate is from a CA gateways already trust"
        )
    typer.echo(ca, nl=False)


@broker_app.command("remove-orphan")
def broker_remove_orphan(username: str) -> None:
    """Deletes a broker client that no registered gateway owns (left by a failed registration);
    refuses a registered gateway or a service account."""
    with db.cli_connect() as conn, broker.admin_session() as dynsec:
        try:
            service.get_gateway(conn, gateway_id=username)
        except GatewayNotFound:
            broker.remove_gateway(dynsec, username)
        else:
            raise typer.BadParameter(f"{username!r} is a registered gateway: disable or rotate it instead")
    typer.echo(f"broker client {username} removed")


gateways_app = typer.Typer(help="Sensor gateways and their MQTT credentials.", no_args_is_help=True)


def _print_credentials(connection: dict[str, Any], gateway_id: str, password: str, as_json: bool) -> None:
    mqtt = service.mqtt_credentials(connection, gateway_id=gateway_id, password=password)
    if as_json:
        typer.echo(json.dumps({"gateway_id": gateway_id, "mqtt": mqtt}))
        return
    typer.echo(f"gateway {gateway_id}: mqtts://{mqtt['host']}:{mqtt['port']}")
    typer.echo(f"  client id {gateway_id}\n  username  {gateway_id}\n  password  {password}   (shown once)")
    if mqtt["ca_certificate"]:
        typer.echo("  CA certificate (save as ca.pem; also `agritrace broker ca`):")
        typer.echo(mqtt["ca_certificate"].rstrip("\n"))


@gateways_app.command("create")
def gateways_create(
    cooperative: Annotated[str, typer.Option(help="Cooperative name (created if new).")],
    gateway_id: Annotated[str | None, typer.Option("--id", help="Gateway id (default: generated).")] = None,
    description: Annotated[str | None, typer.Option(help="Where it is, what it watches.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Registers a gateway and prints its MQTT credentials (the password is shown only now) with the
    broker's TLS host, port and CA certificate."""
    connection = service.mqtt_connection(get_settings())
    with db.cli_connect() as conn, broker.admin_session() as dynsec:
        coop_id = service.get_or_create_cooperative(conn, name=cooperative)
        gw, password = service.create_gateway(
            conn, dynsec=dynsec, cooperative_id=coop_id, gateway_id=gateway_id, description=description
        )
        conn.commit()
    _print_credentials(connection, gw, password, as_json)


@gateways_app.command("list")
def gateways_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Lists gateways with their online state and last-seen time."""
    with db.cli_connect() as conn:
        rows = service.list_gateways(conn)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        state = "disabled" if r["disabled_at"] else ("online" if r["online"] else "offline")
        typer.echo(f"{r['gateway_id']}\t{r['cooperative']}\t{state}\tlast seen {r['last_seen'] or '-'}")


@gateways_app.command("disable")
def gateways_disable(gateway_id: str) -> None:
    """Refuses the gateway at the broker from now on (and disconnects it)."""
    with db.cli_connect() as conn, broker.admin_session() as dynsec:
        service.set_gateway_enabled(conn, dynsec=dynsec, gateway_id=gateway_id, enabled=False)
        conn.commit()
    typer.echo(f"gateway {gateway_id} disabled")


@gateways_app.command("enable")
def gateways_enable(gateway_id: str) -> None:
    """Lets a disabled gateway connect again."""
    with db.cli_connect() as conn, broker.admin_session() as dynsec:
        service.set_gateway_enabled(conn, dynsec=dynsec, gateway_id=gateway_id, enabled=True)
        conn.commit()
    typer.echo(f"gateway {gateway_id} enabled")


@gateways_app.command("rotate")
def gateways_rotate(
    gateway_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False
) -> None:
    """Issues a new password (the old one stops working) and prints the credentials."""
    connection = service.mqtt_connection(get_settings())
    with db.cli_connect() as conn, broker.admin_session() as dynsec:
        password = service.rotate_credentials(conn, dynsec=dynsec, gateway_id=gateway_id)
        conn.commit()
    _print_credentials(connection, gateway_id, password, as_json)
