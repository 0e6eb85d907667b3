"""Public routes (no token): the consumer page, its JSON, the Digital Link path, QR images."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import anyio.to_thread
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from agritrace.api import problems, tokens
from agritrace.api.deps import ConnDep
from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import coldchain_page, i18n, page
from agritrace.trace.exceptions import CodeNotFound

router = APIRouter(tags=["trace (public)"])

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("agritrace.trace", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def _cn_time(iso: str) -> str:
    """An ISO time as a shopper in China reads it: `2026-11-20 13:58` (Asia/Shanghai)."""
    return f"{datetime.fromisoformat(iso).astimezone(coldchain_page.DISPLAY_TZ):%Y-%m-%d %H:%M}"


_templates.filters["cn_time"] = _cn_time
# The page changes with every scan (count) and every recall: never cached by a proxy.
_NO_STORE = {"Cache-Control": "no-store"}
# No token: anyone holding the box may look (the code itself, 80 random bits, is the capability).
_PUBLIC: dict[str, Any] = {"security": []}
_CODE = "K7Q2M9X4T8D3W6RZ"
_URL = f"https://trace.example.org/01/06901234567892/10/MG260501-7K2Q/21/{_CODE}"
# The consumer page answers an unknown code with a page of its own (in the shopper's language),
# not with problem+json; only the rate limit and input validation are problems.
_HTML_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"example": "<!doctype html><html lang=zh>…百色芒果…</html>"}}},
    404: {
        "description": "Not a code we issued (a page saying so)",
        "content": {"text/html": {"example": "<!doctype html><html lang=zh>…</html>"}},
    },
    **problems.responses(422, 429),
}
_TRACE_EXAMPLE: dict[str, Any] = {
    "code": _CODE,
    "url": _URL,
    "batch": {"lot": "MG260501-7K2Q", "product": "mango", "product_name": {"zh": "芒果", "en": "Mango"}},
    "recalled": False,
    "recalls": [],
    "certificates": [],
    "compliance_certificate": None,
    "journey": [],
    "cold_chain": {"verdict": "ok"},
    "inspections": [],
    "scans": {"count": 1, "first_scan_at": "2026-05-03T12:00:00+08:00", "flagged": False},
    "warnings": [],
}


def _image(media: str, example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media: {"schema": {"type": "string", "format": "binary"}, "example": example}}},
        **problems.responses(404, 422, 429),
    }


def _scan_view(
    conn: Conn,
    request: Request,
    code: str,
    *,
    gtin: str | None = None,
    lot: str | None = None,
    series: bool = True,
) -> dict[str, Any]:
    client = request.client.host if request.client else None
    # Staff checking a label send their API token: their scans never count towards the flag.
    auth = request.headers.get("authorization", "")
    staff = auth[:7].lower() == "bearer " and tokens.resolve(conn, auth[7:].strip()) is not None
    return page.scan_view(
        conn,
        serial=code,
        ip=client,
        user_agent=request.headers.get("user-agent"),
        gtin=gtin,
        lot=lot,
        series=series,
        staff=staff,
    )


@functools.cache
def _template(name: str) -> jinja2.Template:
    # Compiled once per process: the templates ship with the package (auto_reload is off anyway).
    return _templates.get_template(name)


def _html(view: dict[str, Any], lang: str) -> HTMLResponse:
    body = _template("trace.html").render(v=view, t=i18n.TEXT[lang], lang=lang, chart=view["_chart_svg"])
    return HTMLResponse(body, headers=_NO_STORE)


def _not_found(lang: str) -> HTMLResponse:
    body = _template("not_found.html").render(t=i18n.TEXT[lang], lang=lang)
    return HTMLResponse(body, status_code=404, headers=_NO_STORE)


def _page(
    request: Request, code: str, language: str, gtin: str | None = None, lot: str | None = None
) -> HTMLResponse:
    with request.app.state.pool.connection() as conn:
        # The view is one statement (scan included): in autocommit it is its own transaction, with
        # no BEGIN/COMMIT round trips around it.
        conn.autocommit = True
        try:
            return _html(_scan_view(conn, request, code, gtin=gtin, lot=lot, series=False), language)
        except CodeNotFound:
            return _not_found(language)
        finally:
            if not conn.closed:
                conn.autocommit = False


# The busiest routes: one hop into the thread pool for the whole view, where a `ConnDep` generator
# dependency costs two more (measured under load: ~340-390 vs ~320-330 req/s, bench/trace_page.py).
@router.get(
    "/t/{code}",
    response_class=HTMLResponse,
    summary="The consumer page of a product code",
    responses=_HTML_RESPONSES,
    openapi_extra=_PUBLIC,
)
async def trace_page(code: str, request: Request, lang: str | None = None) -> HTMLResponse:
    language = i18n.pick(lang) if lang else "zh"
    return await anyio.to_thread.run_sync(
        _page, request, code, language, limiter=request.app.state.page_limiter
    )


@router.get(
    "/01/{gtin}/10/{lot}/21/{serial}",
    response_class=HTMLResponse,
    summary="GS1 Digital Link resolver: the same consumer page",
    responses=_HTML_RESPONSES,
    openapi_extra=_PUBLIC,
)
async def digital_link_page(
    gtin: str, lot: str, serial: str, request: Request, lang: str | None = None
) -> HTMLResponse:
    language = i18n.pick(lang) if lang else "zh"
    return await anyio.to_thread.run_sync(
        _page, request, serial, language, gtin, lot, limiter=request.app.state.page_limiter
    )


@router.get(
    "/api/v1/trace/{code}",
    summary="The consumer page as JSON",
    responses={
        200: {"content": {"application/json": {"example": _TRACE_EXAMPLE}}},
        **problems.responses(404, 422, 429),
    },
    openapi_extra=_PUBLIC,
)
def trace_json(code: str, request: Request, conn: ConnDep) -> JSONResponse:
    view = _scan_view(conn, request, code)
    view.pop("_chart_svg")
    return JSONResponse(view, headers=_NO_STORE)


@router.get(
    "/api/v1/codes/{code}/qr.png",
    response_class=Response,
    summary="QR image (PNG) of a code's URL",
    responses=_image("image/png", "\x89PNG…"),
    openapi_extra=_PUBLIC,
)
def qr_png(code: str, conn: ConnDep) -> Response:
    row = trace_codes.resolve(conn, code=code)
    url = trace_codes.code_url(serial=row["serial"], gtin=row["gtin"], lot=row["lot"])
    return Response(
        trace_codes.qr_png(url), media_type="image/png", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get(
    "/api/v1/codes/{code}/qr.svg",
    response_class=Response,
    summary="QR image (SVG) of a code's URL",
    responses=_image("image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg">…</svg>'),
    openapi_extra=_PUBLIC,
)
def qr_svg(code: str, conn: ConnDep) -> Response:
    row = trace_codes.resolve(conn, code=code)
    url = trace_codes.code_url(serial=row["serial"], gtin=row["gtin"], lot=row["lot"])
    return Response(
        trace_codes.qr_svg(url),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )
