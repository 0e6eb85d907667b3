"""Product codes: random serials per box, their URLs (GS1 Digital Link when the batch has a GTIN),
QR images, PDF label sheets, and scan logging with a counterfeit flag."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import io
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import segno

from agritrace.db import Conn
from agritrace.errors import Conflict, InvalidInput
from agritrace.settings import get_settings
from agritrace.trace import gs1
from agritrace.trace import service as trace_service
from agritrace.trace.exceptions import CodeNotFound

SERIAL_BYTES = 10  # 80 random bits -> 16 base32 characters, inside GS1 AI (21)'s 20-character limit
_SERIAL = re.compile(r"^[A-Z2-7]{16,20}$")
MAX_ISSUE = 100_000
# A genuine box is scanned a handful of times by a handful of people; a copied label is scanned
# by many, in many places. Thresholds over a rolling day.
# Scans of these kinds never count towards the counterfeit flag (`scan_kind`).
NOT_COUNTED = ("bot", "staff", "operator")

PRODUCT_NAMES = {
    "mango": {"zh": "芒果", "en": "Mango"},
    "citrus": {"zh": "柑橘", "en": "Citrus"},
    "tea": {"zh": "茶叶", "en": "Tea"},
}


def new_serial() -> str:
    """A random serial: 80 bits from `secrets`, base32 without padding (URI-safe, case-insensitive)."""
    return base64.b32encode(secrets.token_bytes(SERIAL_BYTES)).decode().rstrip("=")


def normalize_serial(code: str) -> str | None:
    """The canonical (upper-case) serial, or None when it cannot be one of ours."""
    if len(code) > 64:
        return None
    serial = code.strip().upper()
    return serial if _SERIAL.match(serial) else None


def code_url(*, serial: str, gtin: str | None, lot: str, base_url: str | None = None) -> str:
    """The URL a QR carries: a GS1 Digital Link with a GTIN, else `{base}/t/{serial}`."""
    base = (base_url or get_settings().public_base_url).rstrip("/")
    if gtin:
        return gs1.digital_link(base, gtin14=gtin, lot=lot, serial=serial)
    return f"{base}/t/{serial}"


def issue_codes(
    conn: Conn, *, batch_id: int, count: int, cooperative_id: int | None = None
) -> list[dict[str, str]]:
    """Issues `count` new codes for a batch; returns `[{"code", "url"}]`.

    InvalidInput past AGRITRACE_CODES_PER_REQUEST_MAX, Conflict when the batch would hold more than
    AGRITRACE_CODES_PER_BATCH_MAX (issuances of one batch wait for each other, so two cannot both pass)."""
    settings = get_settings()
    most = min(MAX_ISSUE, settings.codes_per_request_max)
    if not 1 <= count <= most:
        raise InvalidInput(f"count must be between 1 and {most} per request")
    batch = trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    # The batch row's lock (not its key: codes may still reference it) serialises its issuances; the
    # count comes after it, in a statement of its own, so it sees what the one before committed.
    conn.execute("SELECT 1 FROM batches WHERE id = %s FOR NO KEY UPDATE", (batch_id,))
    held = count_codes(conn, batch_id=batch_id)
    if held + count > settings.codes_per_batch_max:
        raise Conflict(
            f"batch {batch_id} holds {held} codes; at most {settings.codes_per_batch_max} per batch"
        )
    serials = [new_serial() for _ in range(count)]
    # COPY: a run of 100,000 labels is one round trip, not 100,000 INSERTs. 80-bit serials do not collide.
    with conn.cursor() as cur, cur.copy("COPY codes (serial, batch_id) FROM STDIN") as copy:
        for s in serials:
            copy.write_row((s, batch_id))
    return [{"code": s, "url": code_url(serial=s, gtin=batch["gtin"], lot=batch["lot"])} for s in serials]


def count_codes(conn: Conn, *, batch_id: int) -> int:
    """How many codes a batch holds."""
    row = conn.execute("SELECT count(*) AS n FROM codes WHERE batch_id = %s", (batch_id,)).fetchone()
    return int(row["n"]) if row else 0


def list_codes(
    conn: Conn,
    *,
    batch_id: int,
    cooperative_id: int | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """A batch's codes with their URLs, in issue order (`limit` of them from `offset`: None = all)."""
    batch = trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    rows = conn.execute(
        """SELECT serial, scan_count, flagged_at FROM codes WHERE batch_id = %s
            ORDER BY issued_at, serial OFFSET %s LIMIT %s""",
        (batch_id, offset, limit),
    ).fetchall()
    return [
        {**r, "code": r["serial"], "url": code_url(serial=r["serial"], gtin=batch["gtin"], lot=batch["lot"])}
        for r in rows
    ]


def resolve(conn: Conn, *, code: str) -> dict[str, Any]:
    """The code row with its batch id, gtin and lot; CodeNotFound for anything not issued by us."""
    serial = normalize_serial(code)
    if serial is None:
        raise CodeNotFound("this is not a code we issued")
    row = conn.execute(
        """SELECT c.*, b.gtin, b.lot, b.product FROM codes c JOIN batches b ON b.id = c.batch_id
            WHERE c.serial = %s""",
        (serial,),
    ).fetchone()
    if row is None:
        raise CodeNotFound("this is not a code we issued")
    return row


def place_hash(ip: str | None) -> str | None:
    """A keyed hash of the client's network (/24 or /48): counts places without keeping addresses."""
    if not ip:
        return None
    return _place_hash(ip, get_settings().token_pepper.get_secret_value())


# Parsing the address and hashing its network cost ~0.1 ms of a ~1 ms page view; a shopper's phone
# scans several boxes, and a proxy in front sends the same address all day.
@functools.lru_cache(maxsize=4096)
def _place_hash(ip: str, pepper: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    net = ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 48}", strict=False)
    return hmac.new(pepper.encode(), str(net).encode(), hashlib.sha256).hexdigest()[:16]


def scan_kind(ip: str | None, user_agent: str | None, *, staff: bool = False) -> str:
    """What the scan log keeps of who scanned: the browser family, or `staff` (a request with a valid
    API token), `operator` (from the operator's own networks: label checks) or `bot` (crawlers and
    link previews); the last three never count towards the counterfeit flag."""
    if staff:
        return "staff"
    if ip and _in_operator_networks(ip, tuple(get_settings().counterfeit_ignore_networks)):
        return "operator"
    return ua_family(user_agent)


@functools.lru_cache(maxsize=4096)
def _in_operator_networks(ip: str, networks: tuple[str, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n) for n in networks)


def ua_family(user_agent: str | None) -> str:
    """The browser family only (WeChat, Alipay, ...), never the full user agent."""
    ua = (user_agent or "").lower()
    for needle, family in (
        ("micromessenger", "wechat"),
        ("alipay", "alipay"),
        ("dingtalk", "dingtalk"),
        # Crawlers and the link-preview fetchers of chat apps (a shared link is fetched by each).
        ("bot", "bot"),
        ("spider", "bot"),
        ("crawler", "bot"),
        ("facebookexternalhit", "bot"),
        ("whatsapp", "bot"),
        ("skypeuripreview", "bot"),
        ("embedly", "bot"),
        ("preview", "bot"),
        ("headlesschrome", "headless"),
        ("edg/", "edge"),
        ("firefox", "firefox"),
        ("chrome", "chrome"),
        ("safari", "safari"),
        ("curl", "cli"),
        ("wrk", "cli"),
    ):
        if needle in ua:
            return family
    return "other"


def normalize_scan(*, serial: str, gtin: str | None = None, lot: str | None = None) -> str:
    """The canonical serial of a scan; CodeNotFound when the serial, GTIN or lot cannot be ours."""
    canonical = normalize_serial(serial)
    if canonical is None or (
        gtin is not None and not (gtin.isascii() and gtin.isdigit() and len(gtin) <= 14)
    ):
        raise CodeNotFound("this is not a code we issued")
    # Every stored lot has this shape (a CHECK constraint); anything else (a NUL byte, say) is not ours.
    if lot is not None and not gs1.is_uri_safe(lot):
        raise CodeNotFound("this is not a code we issued")
    return canonical


def flag_reason(*, places: int) -> str | None:
    """Why a code's counted scans within the window look like a copied label, or None. Only distinct
    networks count: one shopper (or one script) reloading a page from one network is not a copy."""
    settings = get_settings()
    if places > settings.counterfeit_networks:
        return f"scanned from {places} different networks within {settings.counterfeit_window_hours} h"
    return None


def flag(conn: Conn, *, serial: str, reason: str) -> dict[str, Any]:
    """Flags a code as possibly counterfeit; returns the new `flagged_at` and `flag_reason`."""
    flagged = conn.execute(
        "UPDATE codes SET flagged_at = now(), flag_reason = %s WHERE serial = %s RETURNING flagged_at",
        (reason, serial),
    ).fetchone()
    assert flagged is not None
    return {"flagged_at": flagged["flagged_at"], "flag_reason": reason}


def owner(conn: Conn, *, serial: str) -> int | None:
    """The cooperative whose batch this code was issued for; None when it is not an issued code."""
    row = conn.execute(
        "SELECT b.cooperative_id FROM codes c JOIN batches b ON b.id = c.batch_id WHERE c.serial = %s",
        (serial,),
    ).fetchone()
    return None if row is None else int(row["cooperative_id"])


def clear_flag(conn: Conn, *, serial: str, note: str) -> dict[str, Any]:
    """A reviewer's verdict that a flagged code is genuine: the flag goes, and only scans after now
    count towards a new one. The change is an audited update of the code (who, when, the note)."""
    row = conn.execute(
        """UPDATE codes SET flagged_at = NULL, flag_reason = NULL, flag_cleared_at = now(), flag_review = %s
            WHERE serial = %s
        RETURNING serial AS code, batch_id, flagged_at, flag_reason, flag_cleared_at, flag_review""",
        (note, serial),
    ).fetchone()
    if row is None:
        raise CodeNotFound(f"no code {serial!r}")
    return row


def flagged_codes(conn: Conn, *, limit: int = 100) -> list[dict[str, Any]]:
    """Codes flagged as possibly counterfeit, newest first (for regulators)."""
    return conn.execute(
        """SELECT c.serial AS code, c.batch_id, b.lot, co.name AS cooperative, c.scan_count, c.flagged_at,
                  c.flag_reason
             FROM codes c JOIN batches b ON b.id = c.batch_id JOIN cooperatives co ON co.id = b.cooperative_id
            WHERE c.flagged_at IS NOT NULL ORDER BY c.flagged_at DESC LIMIT %s""",
        (limit,),
    ).fetchall()


def qr(url: str) -> segno.QRCode:
    """The QR symbol for a URL: error correction M or better (segno boosts it when it fits)."""
    return segno.make_qr(url, error="m", boost_error=True)


def qr_png(url: str, *, scale: int = 8) -> bytes:
    """PNG with the standard 4-module quiet zone."""
    buf = io.BytesIO()
    qr(url).save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def qr_svg(url: str, *, scale: int = 4) -> bytes:
    """SVG with the standard 4-module quiet zone."""
    buf = io.BytesIO()
    qr(url).save(buf, kind="svg", scale=scale, border=4, xmldecl=False)
    return buf.getvalue()


def label_sheet_pdf(
    *,
    labels: Iterable[dict[str, str]],
    product_name: str,
    lot: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """An A4 PDF of labels (4 x 6 per page): QR, product name, lot and the code text under each."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas
    from reportlab.pdfgen.canvas import FILL_NON_ZERO

    # A CID font built into every PDF reader: Chinese text without shipping a font file.
    font = "STSong-Light"
    if font not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(font))
    cols, rows = 4, 6
    page_w, page_h = A4
    margin = 10 * mm
    cell_w = (page_w - 2 * margin) / cols
    cell_h = (page_h - 2 * margin) / rows
    name_size = 9.0
    while name_size > 5 and pdfmetrics.stringWidth(product_name, font, name_size) > cell_w - 4 * mm:
        name_size -= 0.5
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, pagesize=A4)
    pdf.setTitle(f"{product_name} labels")
    n = 0
    for n, label in enumerate(labels, start=1):
        slot = (n - 1) % (cols * rows)
        if slot == 0 and n > 1:
            pdf.showPage()
        col, row = slot % cols, slot // cols
        x0 = margin + col * cell_w
        y0 = page_h - margin - (row + 1) * cell_h
        matrix = qr(label["url"]).matrix
        size = len(matrix) + 8  # quiet zone of 4 modules each side
        module = min(cell_w - 6 * mm, cell_h - 16 * mm) / size
        qx = x0 + (cell_w - size * module) / 2
        qy = y0 + 12 * mm
        # Vector modules, one path per symbol with horizontal runs merged: crisp at any printer
        # resolution, and a 100,000-label run stays a file a print shop accepts.
        path = pdf.beginPath()
        for r, line in enumerate(matrix):
            c = 0
            while c < len(line):
                if line[c]:
                    start = c
                    while c < len(line) and line[c]:
                        c += 1
                    # Each run reaches 5 % into the row below: rows drawn edge to edge leave anti-aliased
                    # hairline seams on screen and at some printer resolutions, which trip decoders.
                    path.rect(
                        qx + (start + 4) * module,
                        qy + (size - 5 - r - 0.05) * module,
                        (c - start) * module,
                        module * 1.05,
                    )
                else:
                    c += 1
        pdf.drawPath(path, stroke=0, fill=1, fillMode=FILL_NON_ZERO)  # overlaps must not cancel out
        # The name on one line at the largest size that fits the cell (9 pt down to 5 pt), the lot and
        # the code in a fixed-pitch face under it: nothing runs into the neighbouring label.
        pdf.setFont(font, name_size)
        pdf.drawCentredString(x0 + cell_w / 2, y0 + 9 * mm, product_name)
        pdf.setFont("Courier", 6.5)
        if lot:
            pdf.drawCentredString(x0 + cell_w / 2, y0 + 5.8 * mm, lot)
        pdf.drawCentredString(x0 + cell_w / 2, y0 + 2.8 * mm, label["code"])
        if progress:
            progress(1)  # may raise to stop the work (the API does when its client has gone)
    if n == 0:
        pdf.setFont(font, 12)
        pdf.drawString(margin, page_h - margin - 12, f"{product_name}: no codes issued")
    pdf.showPage()
    pdf.save()
    return buf.getvalue()


def label_name(batch: dict[str, Any]) -> str:
    """What a label says above its lot and code: 芒果 台农一号 (the lot has a line of its own)."""
    name = PRODUCT_NAMES[batch["product"]]["zh"]
    return " ".join(x for x in (name, batch["variety"]) if x)
