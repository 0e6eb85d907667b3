"""CLI: serve the API, and manage API tokens."""

from __future__ import annotations

import typer
import uvicorn

from agritrace.api import tokens
from agritrace.db import connect
from agritrace.settings import get_settings

api_app = typer.Typer(help="Serve the HTTP API.", no_args_is_help=True)
token_app = typer.Typer(help="Create API tokens.", no_args_is_help=True)


@api_app.command("run")
def run(
    host: str = typer.Option(None, help="Bind address (default from settings)."),
    port: int = typer.Option(None, help="Port (default from settings)."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
) -> None:
    """Serves the API with uvicorn."""
    settings = get_settings()
    uvicorn.run(
        "agritrace.api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        proxy_headers=True,
        access_log=False,
    )


@token_app.command("create")
def create_token(
    role: str = typer.Option(..., help="admin, regulator or cooperative."),
    cooperative: str = typer.Option(None, help="The cooperative a cooperative token is bound to."),
    description: str = typer.Option(None, help="What the token is for."),
) -> None:
    """Prints a new API token on one line (only its hash is stored)."""
    with connect() as conn:
        token = tokens.create(conn, role=role, cooperative=cooperative, description=description)
    typer.echo(token)
