"""Request dependencies: a database connection per request, who is calling, and what they may see.

How an endpoint declares its auth and tenancy (docs/security.md has the full recipe):
- public (consumer pages): no principal dependency at all; the public-path middleware rate-limits it.
- any valid token: a `principal: PrincipalDep` parameter.
- some roles only: `principal: Annotated[Principal, require("admin", "regulator")]`
  (or the aliases `AdminDep`, `StaffDep`).
- tenant data: a `scope: ScopeDep` parameter; pass `scope.cooperative_id` (None = all) to the service,
  which filters in SQL, and call `scope.check(owner_cooperative_id)` on single objects so another
  cooperative's object answers 404 exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agritrace import audit
from agritrace.api import protection, tokens
from agritrace.api.tokens import Principal
from agritrace.db import Conn
from agritrace.errors import Forbidden, NotFound, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="An API token from `agritrace token create`.")


def get_conn(request: Request) -> Iterator[Conn]:
    """One pooled connection per request; the transaction commits when the handler returns."""
    with request.app.state.pool.connection() as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]


def get_principal(
    request: Request,
    conn: ConnDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Resolves the bearer token to a principal; 401 when missing, unknown, expired or revoked.

    A client address whose tokens keep failing gets 429 (Retry-After) for its failing attempts past
    AGRITRACE_AUTH_FAILURES_BURST; a valid token is always served, whoever shares the address."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    principal = tokens.resolve(conn, credentials.credentials)
    if principal is None:
        client = request.client.host if request.client else "unknown"
        protection.throttle(request.app.state.auth_failure_limiter, client, "failed authentications")
        raise Unauthorized("the token is unknown, expired or revoked")
    # Everything this request changes is recorded in the audit trail under this token.
    audit.set_actor(conn, principal.actor)
    request.state.principal = principal  # for the access log (api/protection.py)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: str) -> object:
    """A dependency that admits only the given roles (403 otherwise)."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
        return principal

    return Depends(check)


AdminDep = Annotated[Principal, require("admin")]
StaffDep = Annotated[Principal, require("admin", "regulator")]


@dataclass(frozen=True)
class Scope:
    """The cooperatives a caller may see: one (a cooperative token) or all (`cooperative_id` None)."""

    cooperative_id: int | None

    def admits(self, owner_cooperative_id: int | None) -> bool:
        """Whether an object owned by this cooperative is visible."""
        return self.cooperative_id is None or self.cooperative_id == owner_cooperative_id

    def check(self, owner_cooperative_id: int | None, what: str = "object") -> None:
        """404 (the same answer as for a missing object) when the object is another cooperative's."""
        if not self.admits(owner_cooperative_id):
            raise NotFound(f"no such {what}")


def get_scope(principal: PrincipalDep) -> Scope:
    """The tenant scope of the caller: every role but `cooperative` sees all cooperatives."""
    return Scope(principal.cooperative_id if principal.role == "cooperative" else None)


ScopeDep = Annotated[Scope, Depends(get_scope)]
