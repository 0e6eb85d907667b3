"""API tokens: random bearer secrets, kept only as a keyed hash, bound to a role."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from agritrace.db import Conn
from agritrace.errors import InvalidInput, NotFound
from agritrace.settings import get_settings

ROLES = ("admin", "regulator", "cooperative")
TOKEN_PREFIX = "agt_"  # noqa: S105 - a visible prefix, not a secret


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's role, and for a cooperative token, which cooperative."""

    token_id: int
    role: str
    cooperative_id: int | None


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
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    if (role == "cooperative") != (cooperative is not None):
        raise InvalidInput("a cooperative token needs --cooperative, and only it does")
    cooperative_id = None
    if cooperative is not None:
        row = conn.execute("SELECT id FROM cooperatives WHERE name = %s", (cooperative,)).fetchone()
        if row is None:
            raise NotFound(f"no cooperative named {cooperative!r}")
        cooperative_id = row["id"]
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        """INSERT INTO api_tokens (token_hash, prefix, role, cooperative_id, description, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (hash_token(token), token[: len(TOKEN_PREFIX) + 6], role, cooperative_id, description, expires_at),
    )
    return token


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
