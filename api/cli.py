"""CLI: serve the API, manage API tokens, verify the audit trail."""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from agritrace import audit, checkpoint, outage
from agritrace.api import tokens
from agritrace.db import cli_connect
from agritrace.settings import get_settings
from agritrace.trace import coldchain_page as coldchain

api_app = typer.Typer(help="Serve the HTTP API.", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)


@api_app.command("run")
def run(
    host: str = typer.Option(None, help="Bind address (default from settings)."),
    port: int = typer.Option(None, help="Port (default from settings)."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
) -> None:
    """Serves the API with uvicorn."""
    import uvicorn  # here: the other commands (an ingest worker) need neither it nor FastAPI
    import uvicorn.config

    settings = get_settings()
    # Given to uvicorn, which applies it in every worker process too.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    if settings.access_log:
        # One JSON line per request, on its own: uvicorn's access log (off) would print query strings.
        log_config["formatters"]["agritrace_access"] = {"format": "%(message)s"}
        log_config["handlers"]["agritrace_access"] = {
            "class": "logging.StreamHandler",
            "formatter": "agritrace_access",
            "stream": "ext://sys.stderr",
        }
        log_config["loggers"]["agritrace.access"] = {
            "handlers": ["agritrace_access"],
            "level": "INFO",
            "propagate": False,
        }
    uvicorn.run(
        "agritrace.api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        proxy_headers=True,
        access_log=False,
        log_config=log_config,
    )


@token_app.command("create")
def create_token(
    role: str = typer.Option(..., help="admin, regulator or cooperative."),
    cooperative: str = typer.Option(None, help="The cooperative a cooperative token is bound to."),
    description: str = typer.Option(None, help="What the token is for."),
    expires: str = typer.Option(None, help="Lifetime (30d, 12h, 90m, 2w) or an ISO date; default never."),
) -> None:
    """Prints a new API token on one line (only its hash is stored)."""
    expires_at = tokens.parse_expiry(expires) if expires else None
    with cli_connect() as conn:
        token = tokens.create(
            conn, role=role, cooperative=cooperative, description=description, expires_at=expires_at
        )
    typer.echo(token)


@token_app.command("list")
def list_tokens(
    include_revoked: bool = typer.Option(False, "--all", help="Also list revoked tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Lists tokens (id, prefix, role, cooperative, expiry, revocation), never their values."""
    rows: list[dict[str, Any]] = []
    with cli_connect() as conn:
        after = None
        while True:
            batch = tokens.list_tokens(conn, after_id=after, limit=500, include_revoked=include_revoked)
            rows.extend(batch[:500])
            if len(batch) <= 500:
                break
            after = batch[499]["id"]
    if as_json:
        typer.echo(json.dumps(rows, default=str, ensure_ascii=False))
        return
    for r in rows:
        state = (
            "revoked"
            if r["revoked_at"]
            else f"expires {r['expires_at']:%Y-%m-%d %H:%M}"
            if r["expires_at"]
            else ""
        )
        coop = f"cooperative={r['cooperative_id']}" if r["cooperative_id"] else ""
        typer.echo(f"{r['id']}\t{r['prefix']}…\t{r['role']}\t{coop}\t{state}\t{r['description'] or ''}")


@token_app.command("revoke")
def revoke_token(token_id: int = typer.Argument(..., help="The token's id (from `token list`).")) -> None:
    """Revokes a token: it stops working at once."""
    with cli_connect() as conn:
        tokens.revoke(conn, token_id=token_id)
    typer.echo(f"token {token_id} revoked")


@audit_app.command("verify")
def audit_verify(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    checkpoints: list[Path] = typer.Option(
        [], "--checkpoint", help="A signed checkpoint file (repeatable): the chain must still contain it."
    ),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="The signer's public key (PEM); default: the configured signing key's."
    ),
) -> None:
    """Checks the hash chain and every audited row, and that each checkpoint given is still in the
    chain (a rewrite, truncation or deleted tail since then fails); exits 1 on any finding."""
    settings = get_settings()
    key = checkpoint.load_public_key(public_key or settings.audit_signing_key_path) if checkpoints else None
    with cli_connect() as conn:
        findings: list[Any] = list(audit.verify(conn))
        for path in checkpoints:
            assert key is not None
            findings += checkpoint.check(conn, checkpoint.read(path), key)
        top = audit.head(conn)
    if as_json:
        typer.echo(json.dumps({"ok": not findings, "head": top, "problems": [str(f) for f in findings]}))
    elif findings:
        for f in findings:
            typer.echo(f"FAIL {f}", err=True)
    else:
        covered = f", {len(checkpoints)} checkpoint(s) hold" if checkpoints else ""
        typer.echo(f"ok: {top['id']} entries, head {top['hash']}{covered}")
    if findings:
        sys.exit(1)


@audit_app.command("head")
def audit_head() -> None:
    """Prints the newest entry's id and hash (`audit checkpoint` signs and stores it for you)."""
    with cli_connect() as conn:
        top = audit.head(conn)
    typer.echo(f"{top['id']} {top['hash']}")


@audit_app.command("keygen")
def audit_keygen() -> None:
    """Creates the Ed25519 checkpoint signing key (AGRITRACE_AUDIT_SIGNING_KEY) unless it exists,
    and prints its public key: give that to the regulators who keep checkpoints."""
    path = get_settings().audit_signing_key_path
    if checkpoint.generate_key(path):
        typer.echo(f"wrote a new signing key to {path} (back it up; it never enters the database)", err=True)
    typer.echo(checkpoint.public_pem(checkpoint.load_public_key(path)), nl=False)


@audit_app.command("checkpoint")
def audit_checkpoint(
    every: float | None = typer.Option(
        None, "--every", min=1, help="Keep signing one every SECONDS (default: once and exit)."
    ),
    publish: bool = typer.Option(True, help="Also publish it as the retained MQTT message."),
) -> None:
    """Signs the chain head now, writes it to AGRITRACE_AUDIT_CHECKPOINT_DIR and publishes it
    (retained) on agritrace/v1/audit/checkpoint; prints the file's path."""
    settings = get_settings()
    key = checkpoint.load_private_key(settings.audit_signing_key_path)

    def one_checkpoint() -> None:
        with cli_connect() as conn:
            # Evidence first (summaries of ended custody), then the head that covers it.
            coldchain.record_evidence(conn)
            document = checkpoint.make(conn, key)
        path = checkpoint.write(document, settings.audit_checkpoint_path)
        if publish:
            checkpoint.publish(document, settings)
        typer.echo(f"{path}", err=every is not None)

    if every is None:
        one_checkpoint()
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A lost database (or broker, or checkpoint directory) is waited out as agritrace.outage says.
    outage.run_every(every, one_checkpoint, what="audit checkpoint", transient=(ConnectionError, OSError))
