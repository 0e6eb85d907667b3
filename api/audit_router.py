"""HTTP: an entity's audit history with the hashes that prove it is unaltered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from agritrace import audit
from agritrace.api import problems
from agritrace.api.deps import ConnDep, PrincipalDep, ScopeDep

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=problems.AUTH_RESPONSES)


class AuditEntry(BaseModel):
    """One recorded change. `hash` = sha256(prev_hash ‖ UTF-8 of `canonical`), hex."""

    id: int
    action: str = Field(examples=["update"])
    actor: str = Field(examples=["token:7:cooperative:cooperative=3"])
    at: datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str
    canonical: str | None = Field(description="The hashed text; withheld when something is redacted.")
    valid: bool = Field(description="The hash matches the content and links to the entry before it.")
    redacted: list[str] = Field(
        default_factory=list,
        description="What was cut from this view (non-admins): secret-bearing values such as a webhook "
        "URL's path and query, e.g. `after.url`, and then `canonical`.",
        examples=[["after.url", "canonical"]],
    )


class ChainHead(BaseModel):
    id: int
    hash: str


class AuditHistory(BaseModel):
    """An entity's history and the current head of the chain (publish it to anchor the log)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "table": "gateways",
                    "key": "coldroom-1",
                    "entries": [
                        {
                            "id": 12,
                            "action": "insert",
                            "actor": "token:1:admin",
                            "at": "2026-05-01T08:00:00Z",
                            "before": None,
                            "after": {"id": "coldroom-1", "cooperative_id": 3},
                            "prev_hash": "9f…",
                            "hash": "4a…",
                            "canonical": '{"at": "2026-05-01T08:00:00.000000Z", …}',
                            "valid": True,
                            "redacted": [],
                        }
                    ],
                    "head": {"id": 40, "hash": "c3…"},
                }
            ]
        }
    )

    table: str
    key: str
    entries: list[AuditEntry]
    head: ChainHead


@router.get(
    "/{table}/{key}",
    summary="Audit history of one entity, with its hash-chain proof",
    response_model=AuditHistory,
    responses=problems.responses(404),
)
def entity_history(
    table: Annotated[str, Path(max_length=63, pattern=r"^[a-z_][a-z0-9_]*$", examples=["batches"])],
    key: Annotated[str, Path(max_length=200, examples=["42"])],
    conn: ConnDep,
    scope: ScopeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Admins and regulators see any entity; a cooperative sees only its own (not webhooks).
    Secret-bearing values (a webhook's URL beyond its origin) are shown to admins only."""
    if scope.cooperative_id is not None:
        scope.check(audit.entity_owner(conn, table=table, key=key), "audited entity")
    return audit.history(conn, table=table, key=key, reveal_secrets=principal.role == "admin")
