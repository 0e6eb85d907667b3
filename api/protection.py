"""Protections on every response: security headers, a body-size limit (and no lone surrogates in a
JSON body), for the public paths (consumer pages, trace JSON, GS1 Digital Link, QR images, every
route declared public) per-client rate limiting and cache headers, the limiters the routes use
(label sheets per token, failed authentications per address), and a JSON access log.

Pure ASGI middlewares (no BaseHTTPMiddleware), installed in `api/app.py` by `install(app)`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agritrace import text
from agritrace.api.problems import problem
from agritrace.errors import RateLimited
from agritrace.settings import Settings, get_settings

# No third-party source anywhere: pages may load only what this server serves.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's interactive docs (/docs, /redoc) load Swagger UI/ReDoc from a CDN with an inline
# bootstrap script; they are operator pages, so they get their own, looser policy.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Codes in public URLs must not leak to other sites through the Referer header.
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A JSON escape of a surrogate code point; only a body holding one can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def is_public(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a path is one of the unauthenticated public endpoints."""
    return any(path.startswith(p) for p in prefixes)


class SecurityHeaders:
    """Adds the security headers to every response, and a cache policy where the route set none."""

    def __init__(self, app: ASGIApp, *, public_prefixes: tuple[str, ...], public_max_age: int) -> None:
        self.app = app
        self.public_prefixes = public_prefixes
        self.public_max_age = public_max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        public = is_public(path, self.public_prefixes)
        docs = path.startswith(DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", DOCS_CSP if docs else CSP)
                if "cache-control" not in headers:
                    ok = message["status"] == 200
                    # Public pages are the same for everyone, so shared caches may keep them a
                    # while; everything else is per-caller and must not be stored.
                    cacheable = public and ok
                    headers["cache-control"] = (
                        f"public, max-age={self.public_max_age}" if cacheable else "no-store"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def lone_surrogates(body: bytes) -> list[list[str | int]]:
    """Where a JSON body decodes to a lone surrogate (`"\\ud800"`), as validation `loc`s; [] if nowhere.

    Python's JSON decoder accepts such an escape, but no UTF-8 encoder does: the value would reach
    PostgreSQL (or a response) and fail there with a 500. Bodies that are not JSON are left to the app."""
    if not _SURROGATE_ESCAPE.search(body):
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    return [["body", *path] for path in text.surrogate_paths(doc)]


class BodyLimit:
    """Refuses request bodies over the limit with 413 problem+json, declared or streamed, and JSON
    bodies holding a lone surrogate with 422 (one check for every route, naming the field)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_large = problem(
            413, "too-large", "Request body too large", f"the limit is {self.max_bytes} bytes"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await too_large(scope, receive, send)
            return
        # A chunked body has no length up front: read it (up to the limit) before the app sees it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        bad = lone_surrogates(body)
        if bad:
            invalid = problem(
                422,
                "invalid-input",
                "Invalid input",
                "the request did not validate",
                errors=[
                    {"loc": loc, "msg": "text must not contain lone surrogates", "type": "lone_surrogate"}
                    for loc in bad
                ],
            )
            await invalid(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@dataclass
class TokenBucket:
    """Per-client token buckets in this process's memory (each API process limits on its own).

    `rate` tokens per second refill each bucket up to `burst`; the least recently seen clients are
    forgotten past `max_clients`, so a flood of addresses cannot exhaust memory.
    """

    rate: float
    burst: int
    max_clients: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def take(self, client: str) -> float:
        """Takes one token; returns 0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def public_route_patterns(routes: Iterable[BaseRoute]) -> tuple[re.Pattern[str], ...]:
    """The paths of every route declared public (`openapi_extra={"security": []}`)."""
    # iter_route_contexts flattens included routers (FastAPI keeps them nested in app.routes).
    return tuple(
        compile_path(ctx.path)[0]
        for ctx in iter_route_contexts(list(routes))
        if isinstance(ctx.original_route, APIRoute)
        and ctx.path is not None
        and (ctx.original_route.openapi_extra or {}).get("security") == []
    )


class PublicRateLimit:
    """429 with Retry-After for a client past its budget on the public paths: the configured prefixes
    and every route declared public (found in the app's routes at the first request)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: TokenBucket,
        public_prefixes: tuple[str, ...],
        routes: Callable[[], Iterable[BaseRoute]],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.public_prefixes = public_prefixes
        self.routes = routes
        self._public_routes: tuple[re.Pattern[str], ...] | None = None

    def limited(self, path: str) -> bool:
        if is_public(path, self.public_prefixes):
            return True
        if self._public_routes is None:
            self._public_routes = public_route_patterns(self.routes())
        return any(p.match(path) for p in self._public_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limited(scope["path"]):
            # The peer address; behind a proxy uvicorn's --proxy-headers sets it from X-Forwarded-For
            # (trusting only the configured proxies), so clients cannot pick their own key.
            client = scope.get("client")
            wait = self.limiter.take(client[0] if client else "unknown")
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                response = problem(
                    429,
                    "rate-limited",
                    "Too many requests",
                    f"try again in {retry} s",
                    headers={"Retry-After": retry, "Cache-Control": "no-store"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


access_log = logging.getLogger("agritrace.access")


class AccessLog:
    """One JSON line per request on the `agritrace.access` logger (INFO): time, method, path (never
    the query string, which may carry a key), status, duration, client address and the caller's
    token id and role when it had a valid one. Never a token or any header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            principal = scope.get("state", {}).get("principal")
            client = scope.get("client")
            line: dict[str, object] = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,  # None: the client left before an answer
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "client": client[0] if client else None,
            }
            if principal is not None:
                line.update(token_id=principal.token_id, role=principal.role)
                if principal.cooperative_id is not None:
                    line["cooperative_id"] = principal.cooperative_id
            access_log.info(json.dumps(line, ensure_ascii=False))


def throttle(limiter: TokenBucket, key: str, what: str) -> None:
    """Takes one of `key`'s tokens; RateLimited (429 with Retry-After) when it has none left."""
    wait = limiter.take(key)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise RateLimited(f"too many {what}: try again in {retry} s", retry_after=retry)


def install(app: FastAPI, settings: Settings | None = None) -> None:
    """Adds the middlewares and the limiters: `app.state.public_rate_limiter` (per client address,
    public routes), `labels_rate_limiter` (per token, label sheets), `auth_failure_limiter` (per
    client address, failed authentications); tests swap their clocks."""
    settings = settings or get_settings()
    prefixes = tuple(settings.public_path_prefixes)
    limiter = TokenBucket(rate=settings.public_rate_per_minute / 60.0, burst=settings.public_rate_burst)
    app.state.public_rate_limiter = limiter
    app.state.labels_rate_limiter = TokenBucket(
        rate=settings.labels_rate_per_minute / 60.0, burst=settings.labels_rate_burst
    )
    app.state.auth_failure_limiter = TokenBucket(
        rate=settings.auth_failures_per_minute / 60.0, burst=settings.auth_failures_burst
    )
    # Added innermost first, so the body limit runs before the rate limiter's bookkeeping.
    app.add_middleware(PublicRateLimit, limiter=limiter, public_prefixes=prefixes, routes=lambda: app.routes)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # The headers go outside everything, even Starlette's ServerErrorMiddleware (which answers a
    # 500 itself and is always outermost), so no response leaves without them.
    build_stack = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        # The access log outermost of all: it sees every answer, 413, 429 and 500 included.
        return AccessLog(
            SecurityHeaders(
                build_stack(), public_prefixes=prefixes, public_max_age=settings.public_cache_seconds
            )
        )

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
