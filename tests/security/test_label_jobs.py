"""Bounded work (issue 12, item 5): a batch's label sheet was rendered inside one request (208,000
codes: 10+ minutes at 2.3 GB, going on after the client had left). Large sheets are now background
jobs with progress that can be cancelled, capped in size; the PDF they make is decoded by zbar."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tracing.test_trace_codes import zbar_pdf_labels

from agritrace.api import tokens
from agritrace.api.app import create_app
from agritrace.db import Conn
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def coop(conn: Conn) -> dict[str, Any]:
    name = f"标签合作社-{time.monotonic_ns() % 10**9}"
    coop_id = trace_service.ensure_cooperative(conn, name=name)
    token = tokens.create(conn, role="cooperative", cooperative=name)
    conn.commit()
    return {"id": coop_id, "name": name, "auth": {"Authorization": f"Bearer {token}"}}


def batch_with_codes(conn: Conn, coop: dict[str, Any], n: int) -> dict[str, Any]:
    batch = trace_service.create_batch(conn, product="mango", cooperative_id=coop["id"], variety="台农一号")
    codes = trace_codes.issue_codes(conn, batch_id=batch["id"], count=n) if n else []
    conn.commit()
    return {**batch, "codes": codes}


def wait_job(
    client: TestClient, job_id: int, auth: dict[str, str], *, until: tuple[str, ...]
) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/label-jobs/{job_id}", headers=auth).json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"label job {job_id} stayed {job['status']}")


def test_a_label_job_runs_in_the_background_and_its_pdf_scans(
    client: TestClient, conn: Conn, coop: dict[str, Any]
) -> None:
    batch = batch_with_codes(conn, coop, 30)
    resp = client.post(f"/api/v1/batches/{batch['id']}/label-jobs", headers=coop["auth"])
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/api/v1/label-jobs/{job['id']}"
    assert (job["status"], job["total"], job["done"]) == ("queued", 30, 0)
    done = wait_job(client, job["id"], coop["auth"], until=("done", "failed"))
    assert (done["status"], done["done"]) == ("done", 30)
    pdf = client.get(f"/api/v1/label-jobs/{job['id']}/labels.pdf", headers=coop["auth"])
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    # What a phone reads off the printed first page: the issued URLs.
    first_page = trace_codes.list_codes(conn, batch_id=batch["id"])[:24]
    assert set(zbar_pdf_labels(pdf.content, 0)) == {c["url"] for c in first_page}
    # Another cooperative sees no such job.
    other = f"别的合作社-{time.monotonic_ns() % 10**9}"
    trace_service.ensure_cooperative(conn, name=other)
    other_auth = {"Authorization": f"Bearer {tokens.create(conn, role='cooperative', cooperative=other)}"}
    conn.commit()
    assert client.get(f"/api/v1/label-jobs/{job['id']}", headers=other_auth).status_code == 404
    assert client.get(f"/api/v1/label-jobs/{job['id']}/labels.pdf", headers=other_auth).status_code == 404
    assert client.delete(f"/api/v1/label-jobs/{job['id']}", headers=other_auth).status_code == 404


def test_a_cancelled_job_stops_and_has_no_pdf(client: TestClient, conn: Conn, coop: dict[str, Any]) -> None:
    batch = batch_with_codes(conn, coop, 3000)
    job = client.post(f"/api/v1/batches/{batch['id']}/label-jobs", headers=coop["auth"]).json()
    running = wait_job(client, job["id"], coop["auth"], until=("running", "done"))
    assert running["status"] == "running"
    cancelled = client.delete(f"/api/v1/label-jobs/{job['id']}", headers=coop["auth"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(1.5)  # the runner notices at its next page
    after = client.get(f"/api/v1/label-jobs/{job['id']}", headers=coop["auth"]).json()
    assert after["status"] == "cancelled" and after["done"] < 3000
    stopped_at = after["done"]
    time.sleep(1)
    assert client.get(f"/api/v1/label-jobs/{job['id']}", headers=coop["auth"]).json()["done"] == stopped_at
    assert client.get(f"/api/v1/label-jobs/{job['id']}/labels.pdf", headers=coop["auth"]).status_code == 409
    assert client.delete(f"/api/v1/label-jobs/{job['id']}", headers=coop["auth"]).status_code == 409


def test_sheets_are_capped_and_large_ones_are_not_made_inside_a_request(
    client: TestClient, conn: Conn, coop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batch_with_codes(conn, coop, 60)
    monkeypatch.setenv("AGRITRACE_LABELS_PER_SHEET_MAX", "50")
    monkeypatch.setenv("AGRITRACE_LABELS_PER_JOB_MAX", "55")
    get_settings.cache_clear()
    try:
        direct = client.get(f"/api/v1/batches/{batch['id']}/labels.pdf", headers=coop["auth"])
        assert direct.status_code == 422
        assert direct.headers["content-type"] == "application/problem+json"
        assert "label-jobs" in direct.json()["detail"]
        job = client.post(f"/api/v1/batches/{batch['id']}/label-jobs", headers=coop["auth"])
        assert job.status_code == 422 and "at most 55" in job.json()["detail"]
    finally:
        monkeypatch.delenv("AGRITRACE_LABELS_PER_SHEET_MAX")
        monkeypatch.delenv("AGRITRACE_LABELS_PER_JOB_MAX")
        get_settings.cache_clear()
    # Regulators read but do not make labels on a cooperative's behalf.
    regulator = {"Authorization": f"Bearer {tokens.create(conn, role='regulator')}"}
    conn.commit()
    assert client.post(f"/api/v1/batches/{batch['id']}/label-jobs", headers=regulator).status_code == 403
