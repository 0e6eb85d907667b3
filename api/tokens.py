"""API tokens: random bearer secrets, kept only as a keyed hash, bound to a role."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agritrace.db import Conn
from agritrace.errors import InvalidInput, NotFound
from agritrace.settings import get_settings

ROLES = ("admin", "regulator", "cooperative")
TOKEN_PREFIX = "agt_"  # noqa: S105 - a visible prefix, not a secret
# What may be shown about a token: everything but its hash.
_PUBLIC_COLUMNS = "id, prefix, role, cooperative_id, description, created_at, expires_at, revoked_at"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's role, and for a cooperative token, which cooperative."""

    token_id: int
    role: str
    cooperative_id: int | None

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        suffix = f":cooperative={self.cooperative_id}" if self.cooperative_id is not None else ""
        return f"token:{self.token_id}:{self.role}{suffix}"


def hash_token(token: str) -> bytes:
    """Keyed hash of a token (HMAC-SHA256 with the server's pepper)."""
    pepper = get_settings().token_pepper.get_secret_value().encode()
    return hmac.new(pepper, token.encode(), hashlib.sha256).digest()


def create(
    conn: Conn,
    *,
    role: str,
    cooperative: str | None = None,
    description: str | None = None,
    expires_at: datetime | None = None,
) -> str:
    """Creates a token and returns it; only its hash is stored."""
    return str(
        issue(conn, role=role, cooperative=cooperative, description=description, expires_at=expires_at)[
            "token"
        ]
    )


def issue(
    conn: Conn,
    *,
    role: str,
    cooperative: str | None = None,
    description: str | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Creates a token; returns its record with the token itself (the only time it is shown)."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    if (role == "cooperative") != (cooperative is not None):
        raise InvalidInput("a cooperative token needs a cooperative, and only it does")
    cooperative_id = None
    if cooperative is not None:
        row = conn.execute("SELECT id FROM cooperatives WHERE name = %s", (cooperative,)).fetchone()
        if row is None:
            raise NotFound(f"no cooperative named {cooperative!r}")
        cooperative_id = row["id"]
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = conn.execute(
        f"""INSERT INTO api_tokens (token_hash, prefix, role, cooperative_id, description, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_PUBLIC_COLUMNS}""",  # noqa: S608 - constant
        (hash_token(token), token[: len(TOKEN_PREFIX) + 6], role, cooperative_id, description, expires_at),
    ).fetchone()
    assert row is not None
    return {**row, "token": token}


def list_tokens(
    conn: Conn, *, after_id: int | None = None, limit: int = 50, include_revoked: bool = False
) -> list[dict[str, Any]]:
    """Tokens by id (never their hashes), `limit + 1` rows for keyset pagination."""
    return conn.execute(
        f"""SELECT {_PUBLIC_COLUMNS} FROM api_tokens t
             WHERE id > %s AND (%s OR revoked_at IS NULL)
             ORDER BY id LIMIT %s""",  # noqa: S608 - constant
        (after_id or 0, include_revoked, limit + 1),
    ).fetchall()


def revoke(conn: Conn, *, token_id: int) -> dict[str, Any]:
    """Revokes a token from now on (idempotent: an already revoked token keeps its time)."""
    row = conn.execute(
        f"""UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
             WHERE id = %s RETURNING {_PUBLIC_COLUMNS}""",  # noqa: S608 - constant
        (token_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    return row


_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime:
    """`30d`, `12h`, `90m`, `2w` from now, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"--expires takes a duration like 30d, 12h, 90m, 2w or an ISO date, not {text!r}"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= now:
        raise InvalidInput("the expiry must be in the future")
    return when


def resolve(conn: Conn, token: str) -> Principal | None:
    """Finds the live token with this value, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        """SELECT id, role, cooperative_id FROM api_tokens
            WHERE token_hash = %s AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
        (hash_token(token),),
    ).fetchone()
    if row is None:
        return None
    return Principal(token_id=row["id"], role=row["role"], cooperative_id=row["cooperative_id"])
