"""Bidi and zero-width characters reached the consumer page through variety, GI area, laboratory and
issuer (issue 12, "Input"): "芒果\u202e..." reorders what a shopper reads, a zero-width space makes
one cooperative's name look like another's. Every text the page shows now refuses them, in the API
(422 naming the field) and in the database (a CHECK with `consumer_text_ok()`, so a direct write
cannot bypass it). Python's own `unicodedata` is the oracle for which characters are invisible."""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from attacker import Tenant
from fastapi.testclient import TestClient

from agritrace import db, text
from agritrace.api.app import create_app
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
ZWSP = "\u200b"  # ZERO WIDTH SPACE
CERT = {
    "kind": "organic",
    "number": "124OP2100123",
    "issuer": "南京国环",
    "valid_from": "2026-01-01",
    "valid_to": "2027-01-01",
}
COMPLIANCE = {
    "product_name": "百色芒果",
    "quantity": 10,
    "unit": "kg",
    "origin": "广西百色市田东县",
    "issued_at": "2026-05-02T01:00:00+08:00",
    "issuer": "黄师傅",
    "contact": "0776-1234567",
}
INSPECTION = {"inspected_at": "2026-05-02T02:00:00Z", "kind": "农残", "passed": True}
EVENT = {"biz_step": "packing", "event_time": "2026-05-02T01:00:00Z"}

# (method, path, a valid body, where the hostile text goes): every text field of the consumer page.
FIELDS: list[tuple[str, str, dict[str, Any], tuple[str | int, ...]]] = [
    ("POST", "/api/v1/batches", {"product": "mango", "cooperative": "{coop}"}, ("cooperative",)),
    ("POST", "/api/v1/batches", {"product": "mango", "cooperative": "{coop}"}, ("variety",)),
    ("POST", "/api/v1/batches", {"product": "mango", "cooperative": "{coop}"}, ("origin_plot",)),
    ("POST", "/api/v1/batches", {"product": "mango", "cooperative": "{coop}"}, ("gi_area",)),
    ("POST", "/api/v1/batches", {"product": "mango", "cooperative": "{coop}"}, ("unit",)),
    ("POST", "/api/v1/batches/{batch}/split", {"parts": [{"quantity": 1}]}, ("parts", 0, "unit")),
    ("POST", "/api/v1/batches/{batch}/events", EVENT, ("place",)),
    ("POST", "/api/v1/batches/{batch}/events", EVENT, ("actor",)),
    (
        "POST",
        "/api/v1/batches/{batch}/events",
        {**EVENT, "documents": [{"type": "po", "id": "1"}]},
        ("documents", 0, "id"),
    ),
    ("POST", "/api/v1/batches/{batch}/certificates", CERT, ("number",)),
    ("POST", "/api/v1/batches/{batch}/certificates", CERT, ("issuer",)),
    ("POST", "/api/v1/batches/{batch}/certificates", CERT, ("scope",)),
    ("PUT", "/api/v1/batches/{batch}/compliance-certificate", COMPLIANCE, ("product_name",)),
    ("PUT", "/api/v1/batches/{batch}/compliance-certificate", COMPLIANCE, ("unit",)),
    ("PUT", "/api/v1/batches/{batch}/compliance-certificate", COMPLIANCE, ("origin",)),
    ("PUT", "/api/v1/batches/{batch}/compliance-certificate", COMPLIANCE, ("issuer",)),
    ("PUT", "/api/v1/batches/{batch}/compliance-certificate", COMPLIANCE, ("contact",)),
    ("POST", "/api/v1/batches/{batch}/inspections", INSPECTION, ("kind",)),
    ("POST", "/api/v1/batches/{batch}/inspections", INSPECTION, ("standard",)),
    ("POST", "/api/v1/batches/{batch}/inspections", INSPECTION, ("laboratory",)),
    ("POST", "/api/v1/batches/{batch}/inspections", INSPECTION, ("details",)),
    ("POST", "/api/v1/batches/{batch}/recall", {"reason": "农残超标"}, ("reason",)),
    ("POST", "/api/v1/gateways", {"description": "冷库"}, ("cooperative",)),
]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def _with(body: Any, where: tuple[str | int, ...], value: str) -> Any:
    """A copy of the body with `value` at `where` (inserted into the existing text, if any)."""
    if not where:
        return value
    head, rest = where[0], where[1:]
    if isinstance(body, list):
        copy = list(body)
        copy[int(head)] = _with(body[int(head)], rest, value)
        return copy
    current = body.get(head)
    return {**body, str(head): _with(current if rest else None, rest, value)}


def _hostile(where: tuple[str | int, ...], char: str) -> str:
    # Each field still looks valid around the character (a real certificate number, phone number).
    return {"number": f"124OP21{char}00123", "contact": f"0776-{char}1234567"}.get(
        str(where[-1]), f"芒果{char}台农"
    )


@pytest.mark.parametrize("char", [RLO, ZWSP], ids=["U+202E", "U+200B"])
@pytest.mark.parametrize(
    ("method", "path", "body", "where"), FIELDS, ids=[f"{f[1]}:{f[3][-1]}" for f in FIELDS]
)
def test_every_text_the_consumer_page_shows_refuses_bidi_and_zero_width_characters(
    client: TestClient,
    conn: db.Conn,
    tenant: Tenant,
    char: str,
    method: str,
    path: str,
    body: dict[str, Any],
    where: tuple[str | int, ...],
) -> None:
    doc = {k: (tenant.cooperative if v == "{coop}" else v) for k, v in body.items()}
    doc = _with(doc, where, _hostile(where, char))
    url = path.replace("{batch}", str(tenant.batch_id))
    before = conn.execute("SELECT count(*) AS n FROM audit_log").fetchone()
    r = client.request(method, url, json=doc, headers=tenant.admin)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert ["body", *where] in [e["loc"] for e in errors]
    assert f"U+{ord(char):04X}" in str(errors)
    assert conn.execute("SELECT count(*) AS n FROM audit_log").fetchone() == before  # nothing written


# Every shown column: (table, column, a statement making a valid row hostile).
COLUMNS = [
    ("cooperatives", "name"),
    ("batches", "variety"),
    ("batches", "origin_plot"),
    ("batches", "gi_area"),
    ("batches", "unit"),
    ("certificates", "number"),
    ("certificates", "issuer"),
    ("certificates", "scope"),
    ("compliance_certificates", "product_name"),
    ("compliance_certificates", "unit"),
    ("compliance_certificates", "origin"),
    ("compliance_certificates", "issuer"),
    ("compliance_certificates", "contact"),
    ("trace_events", "place"),
    ("trace_events", "actor"),
    ("trace_events", "documents"),
    ("inspections", "kind"),
    ("inspections", "standard"),
    ("inspections", "laboratory"),
    ("inspections", "details"),
    ("batch_recalls", "reason"),
]


@pytest.fixture
def shown_rows(conn: db.Conn, tenant: Tenant) -> None:
    """One valid row in every table the consumer page reads."""
    b, day = tenant.batch_id, datetime(2026, 5, 2, tzinfo=UTC)
    trace_service.add_event(conn, batch_id=b, biz_step="packing", event_time=day, place="田东县")
    trace_service.add_certificate(
        conn, batch_id=b, kind="organic", number="124OP2100123", issuer="南京国环", valid_from=date(2026, 1, 1),
        valid_to=date(2027, 1, 1),
    )  # fmt: skip
    trace_service.set_compliance_certificate(
        conn, batch_id=b, product_name="芒果", quantity=1, unit="kg", origin="百色", issued_at=day,
        issuer="黄师傅", contact="0776-1234567",
    )  # fmt: skip
    trace_service.add_inspection(conn, batch_id=b, inspected_at=day, kind="农残", passed=True)
    trace_service.recall_batch(conn, batch_id=b, reason="农残超标", recalled_by="regulator")


@pytest.mark.parametrize("char", [RLO, ZWSP, "\u2066", "\u00ad", "\x85", "\U000e0041"])
@pytest.mark.parametrize(("table", "column"), COLUMNS)
def test_the_database_refuses_invisible_characters_written_directly(
    database: str, shown_rows: None, table: str, column: str, char: str
) -> None:
    value = f'[{{"type": "po", "id": "1{char}2"}}]' if column == "documents" else f"ab{char}cd"
    # As the application's login, which is what a bug or an injection in any process would use.
    with db.connect(database, autocommit=True) as app, pytest.raises(psycopg.errors.CheckViolation):
        app.execute(f"UPDATE {table} SET {column} = %s", (value,))  # the one row of the table


def test_the_database_lets_multi_line_fields_keep_their_newlines_and_no_others(
    database: str, shown_rows: None
) -> None:
    with db.connect(database, autocommit=True) as app:
        app.execute("UPDATE batch_recalls SET reason = %s", ("第一行\n第二行\t（续）",))
        app.execute("UPDATE inspections SET details = %s", ("甲\r\n乙",))
        with pytest.raises(psycopg.errors.CheckViolation):
            app.execute("UPDATE batches SET variety = %s", ("台农\n一号",))


def test_chinese_text_with_spaces_and_punctuation_is_accepted_and_shown(
    client: TestClient, conn: db.Conn, tenant: Tenant
) -> None:
    variety = "芒果 · 台农一号（一级）"
    origin = "田东县 林逢镇「东坡」3号地，朝南；海拔 300 米"
    r = client.post(
        "/api/v1/batches",
        json={"product": "mango", "cooperative": tenant.cooperative, "variety": variety, "origin_plot": origin,
              "gi_area": "百色芒果・地理标志 — 右江河谷", "unit": "千克"},
        headers=tenant.admin,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    batch = r.json()["id"]
    inspection = {
        **INSPECTION,
        "laboratory": "百色市农产品质量安全检测中心（二〇二六）",
        "details": "抽样 3 份\n均合格",
    }
    assert (
        client.post(f"/api/v1/batches/{batch}/inspections", json=inspection, headers=tenant.admin).status_code
        == 201
    )
    code = trace_codes.issue_codes(conn, batch_id=batch, count=1)[0]["code"]
    page = client.get(f"/t/{code}")
    assert page.status_code == 200
    for shown in (variety, origin, "百色市农产品质量安全检测中心（二〇二六）"):
        assert shown in page.text


def _invisible_per_unicode() -> list[str]:
    """Every character Unicode (Python's unicodedata) calls a control, format or line/paragraph
    separator; NUL aside, which PostgreSQL text cannot hold at all."""
    return [
        chr(cp)
        for cp in range(1, sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp")
    ]


VISIBLE_SAMPLES = [
    "芒果 · 台农一号（一级）",
    "百色芒果・地理标志 — 右江河谷",
    "「东坡」3号地，朝南；海拔 300 米。",
    "\u3000全角空格",  # IDEOGRAPHIC SPACE is a space (Zs), not invisible
    "ＡＢＣ１２３",
    "🍋🥭 emoji",
    "Ünïcödé café",
    "עברית",  # right-to-left letters are text; only the control characters are refused
    "العربية",
    "葛\U000e0100",  # an ideographic variation selector (Mn) picks a glyph; allowed
]


def test_the_database_and_the_api_agree_with_unicode_on_which_characters_are_invisible(conn: db.Conn) -> None:
    invisible = _invisible_per_unicode()
    assert len(invisible) > 200  # 229 in Unicode 14
    rows = conn.execute(
        "SELECT s, consumer_text_ok('a' || s || 'b') AS one, consumer_text_ok('a' || s || 'b', true) AS multi"
        "  FROM unnest(%s::text[]) s",
        (invisible + VISIBLE_SAMPLES,),
    ).fetchall()
    verdicts = {r["s"]: (r["one"], r["multi"]) for r in rows}
    breaks = {"\t", "\n", "\r"}
    for ch in invisible:
        assert verdicts[ch] == (False, ch in breaks), f"U+{ord(ch):04X} {unicodedata.name(ch, '')}"
        assert text.invisible(f"a{ch}b") is not None
        assert (text.invisible(f"a{ch}b", multiline=True) is None) == (ch in breaks)
    for sample in VISIBLE_SAMPLES:
        assert verdicts[sample] == (True, True), sample
        assert text.invisible(sample) is None, sample


def test_the_migration_spells_out_the_same_ranges_as_the_api() -> None:
    """Both regexes are written out by hand; a range added to one and not the other fails here."""
    from importlib import resources

    sql = (resources.files("agritrace") / "migrations" / "0019.consumer-text.sql").read_text()
    single = re.search(r"ELSE '\[(.*?)\]'", sql)
    assert single is not None
    points: set[int] = set()
    for low, high in re.findall(r"\\[uU]([0-9a-f]+)(?:-\\[uU]([0-9a-f]+))?", single.group(1)):
        points.update(range(int(low, 16), int(high or low, 16) + 1))
    expected = {cp for low, high in text.INVISIBLE_RANGES for cp in range(low, high + 1)} - {0}
    assert points == expected
