"""The base of every domain error; the API maps them to problem+json in one place."""

from __future__ import annotations


class AgriTraceError(Exception):
    """A domain error with an HTTP status and a stable problem type slug."""

    status = 400
    type_slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(AgriTraceError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(AgriTraceError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class InvalidInput(AgriTraceError):
    status = 422
    type_slug = "invalid-input"
    title = "Invalid input"


class Unauthorized(AgriTraceError):
    status = 401
    type_slug = "unauthorized"
    title = "Missing or invalid token"


class Forbidden(AgriTraceError):
    status = 403
    type_slug = "forbidden"
    title = "Not allowed for this role"


class RateLimited(AgriTraceError):
    """Too many requests of a kind from one caller; `retry_after` seconds until the next may pass."""

    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
