"""The one place that turns errors into RFC 9457 problem+json responses."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from agritrace.errors import AgriTraceError, RateLimited

PROBLEM_BASE = "https://agritrace.dev/problems/"
log = logging.getLogger(__name__)


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Builds a problem+json response with a stable type URI."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


class Problem(BaseModel):
    """An RFC 9457 problem: `type` is stable per kind of error, `detail` says what happened."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": PROBLEM_BASE + "not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "no such audited entity",
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str | None = None


_DESCRIPTIONS = {
    400: "Malformed request (the body is not valid JSON)",
    401: "Missing, unknown, expired or revoked bearer token",
    403: "The token's role may not do this",
    404: "Not found (also: another cooperative's object)",
    409: "Conflicts with existing data",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many requests (see Retry-After)",
    502: "The MQTT broker refused or did not answer",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these problem statuses (for a router or a route)."""
    return {
        s: {
            "description": _DESCRIPTIONS.get(s, "Error"),
            "model": Problem,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


# What every authenticated route can answer besides its success (429: repeated failed
# authentications from one address, `api/deps.py`).
AUTH_RESPONSES = responses(401, 403, 422, 429)

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid token"),
    403: ("forbidden", "Not allowed for this role"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("too-large", "Request body too large"),
    429: ("rate-limited", "Too many requests"),
}


def install(app: FastAPI) -> None:
    """Registers the handlers on the app."""

    @app.exception_handler(AgriTraceError)
    async def domain_error(_request: Request, exc: AgriTraceError) -> JSONResponse:
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after), "Cache-Control": "no-store"}
        return problem(exc.status, exc.type_slug, exc.title, exc.detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return problem(422, "invalid-input", "Invalid input", "the request did not validate", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = str(exc.detail) if exc.detail else None
        return problem(exc.status_code, slug, title, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def integrity_error(_request: Request, exc: psycopg.errors.IntegrityError) -> JSONResponse:
        # The caller's fault (a duplicate, a missing reference, a violated check); the SQL and the
        # constraint's internals stay in the log.
        log.info("integrity error: %s", type(exc).__name__)
        if isinstance(exc, psycopg.errors.UniqueViolation | psycopg.errors.ExclusionViolation):
            return problem(409, "conflict", "Conflict", "it already exists")
        if isinstance(exc, psycopg.errors.ForeignKeyViolation):
            return problem(409, "conflict", "Conflict", "it refers to, or is referred to by, another record")
        return problem(422, "invalid-input", "Invalid input", "a value is not acceptable")

    @app.exception_handler(psycopg.errors.DataError)
    async def data_error(_request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # Out-of-range numbers, over-long strings, malformed values that validation let through.
        log.info("data error: %s", type(exc).__name__)
        return problem(422, "invalid-input", "Invalid input", "a value is out of range or malformed")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal", "Internal error", "the error was logged")
