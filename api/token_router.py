"""HTTP: create, list and revoke API tokens (admin only; a new token is shown once)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agritrace.api import problems, tokens
from agritrace.api.deps import AdminDep, ConnDep
from agritrace.api.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, decode_cursor, page

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], responses=problems.AUTH_RESPONSES)

_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "prefix": "agt_Xy12ab",
    "role": "cooperative",
    "cooperative_id": 3,
    "description": "packing house tablet",
    "created_at": "2026-05-01T08:00:00Z",
    "expires_at": "2026-08-01T08:00:00Z",
    "revoked_at": None,
}


class TokenCreate(BaseModel):
    """A token to create; a cooperative token names its cooperative."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"role": "regulator", "description": "市场监管局 dashboard"},
                {
                    "role": "cooperative",
                    "cooperative": "百色芒果合作社",
                    "expires_at": "2026-12-31T00:00:00Z",
                },
            ]
        },
    )

    role: Literal["admin", "regulator", "cooperative"]
    cooperative: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = Field(default=None, description="When it stops working (none: never).")

    @model_validator(mode="after")
    def _cooperative_only_for_cooperative_tokens(self) -> TokenCreate:
        if (self.role == "cooperative") != (self.cooperative is not None):
            raise ValueError("a cooperative token needs `cooperative`, and only it does")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone (e.g. Z)")
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return self


class TokenOut(BaseModel):
    """A token's record; never its value or hash."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: int
    prefix: str
    role: str
    cooperative_id: int | None
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    """The new token's record and the token itself, shown this one time only."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**_EXAMPLE, "token": "agt_Xy12ab…"}]})

    token: str


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API token (admin)",
    response_model=TokenCreated,
    responses=problems.responses(400, 404, 413),
)
def create_token(body: TokenCreate, conn: ConnDep, _admin: AdminDep) -> dict[str, Any]:
    """Returns the token once; only its keyed hash is stored."""
    return tokens.issue(
        conn,
        role=body.role,
        cooperative=body.cooperative,
        description=body.description,
        expires_at=body.expires_at,
    )


@router.get(
    "",
    summary="List API tokens (admin)",
    response_model=Page[TokenOut],
    responses={
        200: {"content": {"application/json": {"example": {"items": [_EXAMPLE], "next_cursor": "WzddXQ"}}}}
    },
)
def list_tokens(
    conn: ConnDep,
    _admin: AdminDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    include_revoked: Annotated[bool, Query(description="Also list revoked tokens.")] = False,
) -> dict[str, Any]:
    """Tokens by id, a page at a time."""
    after = decode_cursor(cursor)
    rows = tokens.list_tokens(
        conn, after_id=int(after[0]) if after else None, limit=limit, include_revoked=include_revoked
    )
    return page(rows, limit=limit, key=lambda r: [r["id"]])


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API token (admin)",
    responses=problems.responses(404),
)
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**63 - 1)], conn: ConnDep, _admin: AdminDep) -> None:
    """The token stops working at once; revoking twice is harmless."""
    tokens.revoke(conn, token_id=token_id)
