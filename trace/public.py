"""Public routes (no token): the consumer page, its JSON, the Digital Link path, QR images."""

from __future__ import annotations

from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from agritrace.api.deps import ConnDep
from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import i18n, page
from agritrace.trace.exceptions import CodeNotFound

router = APIRouter(tags=["trace (public)"])

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("agritrace.trace", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
# The page changes with every scan (count) and every recall: never cached by a proxy.
_NO_STORE = {"Cache-Control": "no-store"}


def _scan_view(
    conn: Conn, request: Request, code: str, *, gtin: str | None = None, lot: str | None = None
) -> dict[str, Any]:
    client = request.client.host if request.client else None
    row = trace_codes.record_scan(
        conn, serial=code, ip=client, user_agent=request.headers.get("user-agent"), gtin=gtin, lot=lot
    )
    return page.trace_view(conn, code=row)


def _html(view: dict[str, Any], lang: str) -> HTMLResponse:
    body = _templates.get_template("trace.html").render(
        v=view, t=i18n.TEXT[lang], lang=lang, chart=view["_chart_svg"]
    )
    return HTMLResponse(body, headers=_NO_STORE)


def _not_found(lang: str) -> HTMLResponse:
    body = _templates.get_template("not_found.html").render(t=i18n.TEXT[lang], lang=lang)
    return HTMLResponse(body, status_code=404, headers=_NO_STORE)


def _page(
    request: Request, code: str, language: str, gtin: str | None = None, lot: str | None = None
) -> HTMLResponse:
    with request.app.state.pool.connection() as conn:
        try:
            return _html(_scan_view(conn, request, code, gtin=gtin, lot=lot), language)
        except CodeNotFound:
            return _not_found(language)


# The busiest routes: one hop into the thread pool for the whole view, where a `ConnDep` generator
# dependency costs two more (measured under load: ~340-390 vs ~320-330 req/s, bench/trace_page.py).
@router.get("/t/{code}", response_class=HTMLResponse, summary="The consumer page of a product code")
async def trace_page(code: str, request: Request, lang: str | None = None) -> HTMLResponse:
    language = i18n.pick(lang) if lang else "zh"
    return await run_in_threadpool(_page, request, code, language)


@router.get(
    "/01/{gtin}/10/{lot}/21/{serial}",
    response_class=HTMLResponse,
    summary="GS1 Digital Link resolver: the same consumer page",
)
async def digital_link_page(
    gtin: str, lot: str, serial: str, request: Request, lang: str | None = None
) -> HTMLResponse:
    language = i18n.pick(lang) if lang else "zh"
    return await run_in_threadpool(_page, request, serial, language, gtin, lot)


@router.get("/api/v1/trace/{code}", summary="The consumer page as JSON")
def trace_json(code: str, request: Request, conn: ConnDep) -> JSONResponse:
    view = _scan_view(conn, request, code)
    view.pop("_chart_svg")
    return JSONResponse(view, headers=_NO_STORE)


@router.get("/api/v1/codes/{code}/qr.png", response_class=Response, summary="QR image (PNG) of a code's URL")
def qr_png(code: str, conn: ConnDep) -> Response:
    row = trace_codes.resolve(conn, code=code)
    url = trace_codes.code_url(serial=row["serial"], gtin=row["gtin"], lot=row["lot"])
    return Response(
        trace_codes.qr_png(url), media_type="image/png", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("/api/v1/codes/{code}/qr.svg", response_class=Response, summary="QR image (SVG) of a code's URL")
def qr_svg(code: str, conn: ConnDep) -> Response:
    row = trace_codes.resolve(conn, code=code)
    url = trace_codes.code_url(serial=row["serial"], gtin=row["gtin"], lot=row["lot"])
    return Response(
        trace_codes.qr_svg(url),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )
