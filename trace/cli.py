"""CLI: `agritrace batches ...`, `agritrace codes ...`, `agritrace trace ...`."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from agritrace.db import cli_connect
from agritrace.ingest import simulate
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import demo, epcis
from agritrace.trace import service as trace_service

batches_app = typer.Typer(help="Batches: create, recall.", no_args_is_help=True)
codes_app = typer.Typer(help="Product codes: issue, label sheets.", no_args_is_help=True)
trace_app = typer.Typer(help="Trace: demo data, EPCIS export.", no_args_is_help=True)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@batches_app.command("create")
def batches_create(
    product: str = typer.Option(..., help="mango, citrus or tea."),
    cooperative: str = typer.Option(..., help="Cooperative name (created if new)."),
    gtin: str = typer.Option(None, help="GTIN-14 (or 8/12/13) with a valid check digit."),
    variety: str = typer.Option(None),
    lot: str = typer.Option(None, help="Lot number (default: generated)."),
    origin_plot: str = typer.Option(None),
    gi_area: str = typer.Option(None),
    harvest_date: str = typer.Option(None, help="YYYY-MM-DD"),
    quantity: float = typer.Option(None),
    unit: str = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Registers a batch and prints its id."""
    with cli_connect() as conn:
        coop_id = trace_service.ensure_cooperative(conn, name=cooperative)
        batch = trace_service.create_batch(
            conn,
            product=product,
            cooperative_id=coop_id,
            gtin=gtin,
            variety=variety,
            lot=lot,
            origin_plot=origin_plot,
            gi_area=gi_area,
            harvest_date=date.fromisoformat(harvest_date) if harvest_date else None,
            quantity=Decimal(str(quantity)) if quantity is not None else None,
            unit=unit,
        )
    if as_json:
        typer.echo(
            _dump({"batch_id": batch["id"], "lot": batch["lot"], "gtin": batch["gtin"], "product": product})
        )
    else:
        typer.echo(f"batch {batch['id']} lot {batch['lot']}")


@batches_app.command("recall")
def batches_recall(
    batch: int = typer.Option(..., help="Batch id."),
    reason: str = typer.Option(..., help="Why (shown to consumers)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recalls a batch and everything downstream of it."""
    with cli_connect() as conn:
        result = trace_service.recall_batch(conn, batch_id=batch, reason=reason, recalled_by="operator")
    typer.echo(
        _dump(result)
        if as_json
        else f"recalled; {len(result['affected_batches'])} downstream batch(es), {result['affected_codes']} code(s)"
    )


@codes_app.command("issue")
def codes_issue(
    batch: int = typer.Option(..., help="Batch id."),
    count: int = typer.Option(..., min=1, max=trace_codes.MAX_ISSUE),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Issues codes for a batch and prints them with their URLs."""
    step = get_settings().codes_per_request_max
    issued: list[dict[str, str]] = []
    with cli_connect() as conn:  # one transaction: all of them or none
        for done in range(0, count, step):
            issued += trace_codes.issue_codes(conn, batch_id=batch, count=min(step, count - done))
    if as_json:
        typer.echo(_dump(issued))
    else:
        for c in issued:
            typer.echo(f"{c['code']} {c['url']}")


@codes_app.command("labels")
def codes_labels(
    batch: int = typer.Option(..., help="Batch id."),
    out: Path = typer.Option(..., help="PDF file to write."),
) -> None:
    """Writes an A4 label sheet (QR, product name, code) for every code of a batch."""
    with cli_connect() as conn:
        row = trace_service.get_batch(conn, batch_id=batch)
        labels = trace_codes.list_codes(conn, batch_id=batch)
    with typer.progressbar(length=len(labels), label="labels", file=None) as bar:
        pdf = trace_codes.label_sheet_pdf(
            labels=labels, product_name=trace_codes.label_name(row), lot=row["lot"], progress=bar.update
        )
    out.write_bytes(pdf)
    typer.echo(f"{len(labels)} label(s) -> {out}")


@trace_app.command("demo")
def trace_demo(
    as_json: bool = typer.Option(False, "--json"),
    simulator: bool = typer.Option(
        False,
        "--simulator",
        help="Also provision the simulator's demo gateways (as `simulate --demo` does) and store a lot "
        "in its cold room, so that lot's page shows live readings.",
    ),
) -> None:
    """Creates demo batches with certificates, events, cold-chain readings and codes (idempotent)."""
    if simulator:
        simulate.demo_gateways(get_settings())
    with cli_connect() as conn:
        result = demo.load(conn)
    if as_json:
        typer.echo(_dump(result))
    else:
        for item in result["codes"]:
            typer.echo(f"{item['lot']}: {item['url']}")


@trace_app.command("epcis")
def trace_epcis(batch: int = typer.Option(..., help="Batch id.")) -> None:
    """Prints a batch's events as an EPCIS 2.0 JSON-LD document."""
    with cli_connect() as conn:
        typer.echo(_dump(epcis.export_batch(conn, batch_id=batch)))
