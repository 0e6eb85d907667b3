"""Codes and QR labels: what is printed on a box decodes to a URL that shows the batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import biip
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agritrace.db import Conn
from agritrace.trace import codes as trace_codes
from agritrace.trace import gs1

AGRITRACE = Path(sys.executable).with_name("agritrace")


def zbar(path: Path) -> str:
    out = subprocess.run(["zbarimg", "--raw", "-q", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def zbar_pdf_labels(pdf: bytes, index: int, *, cols: int = 4, rows: int = 6) -> list[str]:
    """Rasterises one PDF page (pdfium, 216 dpi), cuts it into its label cells and decodes each with zbar,
    as a phone scans one box at a time (zbar misses the odd symbol on a page holding 24 of them)."""
    import tempfile

    import pypdfium2

    scale = 3.0
    page = pypdfium2.PdfDocument(pdf)[index]
    bitmap = page.render(scale=scale, grayscale=True)
    w, h, stride = bitmap.width, bitmap.height, bitmap.stride
    raw = bytes(bitmap.buffer)
    margin = 10 / 25.4 * 72 * scale  # the sheet's 10 mm margin, in pixels
    cell_w, cell_h = (w - 2 * margin) / cols, (h - 2 * margin) / rows
    decoded: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for r in range(rows):
            for c in range(cols):
                x0, y0 = int(margin + c * cell_w), int(margin + r * cell_h)
                x1, y1 = int(x0 + cell_w), int(y0 + cell_h)
                pixels = b"".join(raw[y * stride + x0 : y * stride + x1] for y in range(y0, y1))
                path = Path(tmp) / f"cell-{r}-{c}.pgm"
                path.write_bytes(b"P5\n%d %d\n255\n" % (x1 - x0, y1 - y0) + pixels)
                files.append(str(path))
        out = subprocess.run(["zbarimg", "--raw", "-q", *files], capture_output=True, text=True)
        decoded = out.stdout.split()
    return decoded


def test_qr_png_decodes_with_zbar_to_the_issued_url_and_that_url_shows_the_batch(
    client: TestClient, mango_lot: dict[str, Any], artifacts: Path
) -> None:
    resp = client.get(f"/api/v1/codes/{mango_lot['code']}/qr.png")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    png = artifacts / "qr-mango-lot.png"
    png.write_bytes(resp.content)
    assert zbar(png) == mango_lot["url"]

    page = client.get(urlsplit(mango_lot["url"]).path)
    assert page.status_code == 200
    assert mango_lot["child"]["lot"] in page.text
    assert "芒果" in page.text


def test_qr_svg_is_served_with_a_quiet_zone(client: TestClient, mango_lot: dict[str, Any]) -> None:
    resp = client.get(f"/api/v1/codes/{mango_lot['code'].lower()}/qr.svg")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("image/svg+xml")
    assert resp.text.lstrip().startswith("<svg")
    symbol = trace_codes.qr(mango_lot["url"])
    assert symbol.error in ("M", "Q", "H")
    # 4 modules of quiet zone each side at scale 4: width = (modules + 8) * 4
    assert f'width="{(symbol.symbol_size(border=0)[0] + 8) * 4}"' in resp.text


def test_digital_link_is_valid_for_an_independent_parser(mango_lot: dict[str, Any]) -> None:
    url = mango_lot["url"]
    result = biip.parse(url)
    assert result.gs1_digital_link_uri is not None, result.gs1_digital_link_uri_error
    strings = result.gs1_digital_link_uri.element_strings
    assert [s.ai.ai for s in strings] == ["01", "10", "21"]  # key, then 10 before 21
    assert strings[0].gtin is not None and strings[0].gtin_error is None
    assert strings[1].value == mango_lot["child"]["lot"]
    assert strings[2].value == mango_lot["code"]


@given(st.text(alphabet="0123456789", min_size=13, max_size=13))
def test_gtin_check_digit_agrees_with_biip(body: str) -> None:
    gtin = body + str(gs1.check_digit(body))
    assert gs1.is_valid_gtin14(gtin)
    assert biip.parse(gtin).gtin is not None
    wrong = body + str((gs1.check_digit(body) + 1) % 10)
    assert not gs1.is_valid_gtin14(wrong)


@given(
    st.text(alphabet="0123456789", min_size=13, max_size=13),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,19}", fullmatch=True),
)
def test_every_digital_link_we_build_parses_back(body: str, lot: str) -> None:
    gtin = body + str(gs1.check_digit(body))
    serial = trace_codes.new_serial()
    url = gs1.digital_link("https://trace.example.cn", gtin14=gtin, lot=lot, serial=serial)
    parsed = biip.parse(url).gs1_digital_link_uri
    assert parsed is not None
    assert [(s.ai.ai, s.value) for s in parsed.element_strings] == [("01", gtin), ("10", lot), ("21", serial)]


def test_serials_have_at_least_64_random_bits_and_fit_gs1_serial_limits() -> None:
    serials = {trace_codes.new_serial() for _ in range(10_000)}
    assert len(serials) == 10_000
    assert trace_codes.SERIAL_BYTES * 8 >= 64
    assert all(len(s) <= 20 and gs1.is_uri_safe(s) for s in serials)


def test_code_without_gtin_is_a_short_trace_url(conn: Conn) -> None:
    from agritrace.trace import service as trace_service

    coop = trace_service.ensure_cooperative(conn, name="tea-coop-no-gtin")
    batch = trace_service.create_batch(conn, product="tea", cooperative_id=coop)
    issued = trace_codes.issue_codes(conn, batch_id=batch["id"], count=3)
    assert len({c["code"] for c in issued}) == 3
    for c in issued:
        assert c["url"].endswith(f"/t/{c['code']}")


def _cli(database: str, *args: str) -> Any:
    env = {
        **os.environ,
        "AGRITRACE_DATABASE_URL": database,
        "AGRITRACE_PUBLIC_BASE_URL": "https://trace.example.cn",
    }
    out = subprocess.run([str(AGRITRACE), *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def test_cli_creates_a_batch_and_issues_codes_as_json(database: str, conn: Conn) -> None:
    created = _cli(
        database,
        "batches",
        "create",
        "--product",
        "mango",
        "--cooperative",
        "CLI 合作社",
        "--gtin",
        "06901234567892",
        "--json",
    )
    assert isinstance(created["batch_id"], int)
    issued = _cli(database, "codes", "issue", "--batch", str(created["batch_id"]), "--count", "5", "--json")
    assert len(issued) == 5
    for item in issued:
        assert set(item) >= {"code", "url"}
        assert f"/01/06901234567892/10/{created['lot']}/21/{item['code']}" in item["url"]
    assert conn.execute(
        "SELECT count(*) AS n FROM codes WHERE batch_id = %s", (created["batch_id"],)
    ).fetchone() == {"n": 5}


def test_cli_refuses_a_gtin_with_a_wrong_check_digit(database: str) -> None:
    env = {
        **os.environ,
        "AGRITRACE_DATABASE_URL": database,
        "AGRITRACE_PUBLIC_BASE_URL": "https://trace.example.cn",
    }
    out = subprocess.run(
        [
            str(AGRITRACE),
            "batches",
            "create",
            "--product",
            "tea",
            "--cooperative",
            "x",
            "--gtin",
            "06901234567891",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 1
    assert "check digit" in out.stderr


def test_label_sheet_puts_many_labels_on_each_a4_page(
    client: TestClient, conn: Conn, admin: dict[str, str], mango_lot: dict[str, Any], artifacts: Path
) -> None:
    batch_id = mango_lot["child"]["id"]
    client.post(f"/api/v1/batches/{batch_id}/codes", json={"count": 29}, headers=admin).raise_for_status()
    resp = client.get(f"/api/v1/batches/{batch_id}/labels.pdf", headers=admin)
    assert resp.status_code == 200
    assert resp.content.startswith(b"%PDF")
    (artifacts / "labels-mango-lot.pdf").write_bytes(resp.content)
    # 30 codes at 24 labels per page: two pages
    assert re.search(rb"/Count 2\b", resp.content)
    # Printed and scanned: every label on the first page decodes to one of the batch's URLs.
    decoded = zbar_pdf_labels(resp.content, 0)
    assert len(set(decoded)) == 24
    assert set(decoded) <= {r["url"] for r in trace_codes.list_codes(conn, batch_id=batch_id)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    code=st.one_of(
        st.text(max_size=80),
        st.from_regex(r"[A-Z2-7]{16}", fullmatch=True),
        st.binary(max_size=40).map(lambda b: b.hex()),
    )
)
def test_random_and_malformed_codes_get_404_pages_never_500(client: TestClient, code: str) -> None:
    from urllib.parse import quote

    path = quote(code, safe="")
    for url in (
        f"/01/{path}/10/L1/21/{path}",
        f"/01/06901234567892/10/{path}/21/AAAAAAAAAAAAAAAA",
        f"/t/{path}",
        f"/api/v1/trace/{path}",
        f"/api/v1/codes/{path}/qr.png",
        f"/01/06901234567892/10/L1/21/{path}",
    ):
        resp = client.get(url)
        assert resp.status_code == 404, (url, resp.status_code)


def test_cli_writes_a_label_sheet_for_every_code_of_a_batch(database: str, tmp_path: Path) -> None:
    created = _cli(database, "batches", "create", "--product", "tea", "--cooperative", "六堡茶社", "--json")
    _cli(database, "codes", "issue", "--batch", str(created["batch_id"]), "--count", "50", "--json")
    out = tmp_path / "labels.pdf"
    env = {
        **os.environ,
        "AGRITRACE_DATABASE_URL": database,
        "AGRITRACE_PUBLIC_BASE_URL": "https://trace.example.cn",
    }
    run = subprocess.run(
        [str(AGRITRACE), "codes", "labels", "--batch", str(created["batch_id"]), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "50 label(s)" in run.stdout
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF") and re.search(rb"/Count 3\b", pdf)  # 50 labels, 24 per page


def test_cli_demo_is_idempotent_and_its_urls_open_the_page(database: str, client: TestClient) -> None:
    first = _cli(database, "trace", "demo", "--json")
    second = _cli(database, "trace", "demo", "--json")
    assert first == second and len(first["codes"]) == 2
    for item in first["codes"]:
        page = client.get(urlsplit(item["url"]).path)
        assert page.status_code == 200 and item["lot"] in page.text
    epcis_doc = _cli(database, "trace", "epcis", "--batch", str(first["codes"][0]["batch_id"]))
    assert epcis_doc["type"] == "EPCISDocument" and epcis_doc["epcisBody"]["eventList"]
