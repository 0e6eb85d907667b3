"""Request dependencies: a database connection per request, and who is calling (bearer token)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agritrace.api import tokens
from agritrace.api.tokens import Principal
from agritrace.db import Conn
from agritrace.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="An API token from `agritrace token create`.")


def get_conn(request: Request) -> Iterator[Conn]:
    """One pooled connection per request; the transaction commits when the handler returns."""
    with request.app.state.pool.connection() as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]


def get_principal(
    conn: ConnDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Resolves the bearer token to a principal; 401 when missing, unknown, expired or revoked."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    principal = tokens.resolve(conn, credentials.credentials)
    if principal is None:
        raise Unauthorized("the token is unknown, expired or revoked")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: str) -> object:
    """A dependency that admits only the given roles (403 otherwise)."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
        return principal

    return Depends(check)
