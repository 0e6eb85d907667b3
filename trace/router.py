"""Trace management API: batches, lineage, events, custody, certificates, inspections, codes, recalls."""

from __future__ import annotations

import functools
import json
import logging
import threading
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import Response

from agritrace.api import problems, protection
from agritrace.api.deps import ConnDep, PrincipalDep, ScopeDep, StaffDep, require
from agritrace.api.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, decode_cursor, page
from agritrace.api.tokens import Principal
from agritrace.devices import service as devices_service
from agritrace.errors import Forbidden, InvalidInput, NotFound
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import epcis, labels, schemas
from agritrace.trace import service as trace_service

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["trace"], responses=problems.AUTH_RESPONSES)
# Regulators read every batch and recall, but record nothing on a cooperative's behalf.
Writer = Annotated[Principal, require("admin", "cooperative")]
BatchId = Annotated[int, Path(ge=1, le=2**63 - 1, examples=[42])]

_BATCH: dict[str, Any] = {
    "id": 42,
    "lot": "MG260501-7K2Q",
    "cooperative_id": 3,
    "cooperative": "百色芒果合作社",
    "product": "mango",
    "variety": "台农一号",
    "gtin": "06901234567892",
    "origin_plot": "田东县 林逢镇 3号地",
    "gi_area": "百色芒果",
    "latitude": 23.6,
    "longitude": 107.1,
    "harvest_date": "2026-05-01",
    "quantity": 1200,
    "unit": "kg",
    "created_at": "2026-05-01T08:00:00Z",
}
_CERTIFICATE: dict[str, Any] = {
    "id": 5,
    "kind": "green_food",
    "number": "LB-18-26050123456A",
    "issuer": "中国绿色食品发展中心",
    "valid_from": "2026-01-01",
    "valid_to": "2028-12-31",
    "scope": None,
    "cooperative_id": None,
    "batch_id": 42,
}
_CODE = {
    "code": "K7Q2M9X4T8D3W6RZ",
    "url": "https://trace.example.org/01/06901234567892/10/MG260501-7K2Q/21/K7Q2M9X4T8D3W6RZ",
}


def _labels_budget(request: Request, principal: PrincipalDep) -> None:
    """A label sheet costs seconds of CPU: AGRITRACE_LABELS_RATE_* per token."""
    protection.throttle(request.app.state.labels_rate_limiter, f"token:{principal.token_id}", "label sheets")


def _example(
    example: Any, *problem_statuses: int, status_code: int = 200, media: str = "application/json"
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route: an example of its success and its documented problems."""
    return {status_code: {"content": {media: {"example": example}}}, **problems.responses(*problem_statuses)}


@router.post(
    "/batches",
    status_code=status.HTTP_201_CREATED,
    summary="Register a batch",
    responses=_example({"batch_id": 42, **_BATCH}, 409, 400, status_code=201),
)
def create_batch(body: schemas.BatchIn, conn: ConnDep, _w: Writer, scope: ScopeDep) -> dict[str, Any]:
    if scope.cooperative_id is not None:
        # As for gateways: a cooperative may name itself, never another cooperative.
        if body.cooperative is not None and body.cooperative != devices_service.cooperative_name(
            conn, cooperative_id=scope.cooperative_id
        ):
            raise Forbidden("a cooperative token creates batches for its own cooperative only")
        cooperative_id = scope.cooperative_id
    else:
        if not body.cooperative:
            raise InvalidInput("cooperative is required")
        cooperative_id = trace_service.ensure_cooperative(conn, name=body.cooperative)
    batch = trace_service.create_batch(
        conn, cooperative_id=cooperative_id, **body.model_dump(exclude={"cooperative"})
    )
    return {"batch_id": batch["id"], **batch}


@router.get(
    "/batches",
    summary="List batches",
    responses=_example({"items": [_BATCH], "next_cursor": "WzQyXQ"}),
)
def list_batches(
    conn: ConnDep, scope: ScopeDep, limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None
) -> dict[str, Any]:
    after = decode_cursor(cursor)
    rows = trace_service.list_batches(
        conn, cooperative_id=scope.cooperative_id, after_id=after[0] if after else 0, limit=limit + 1
    )
    return page(rows, limit=limit, key=lambda r: [r["id"]])


@router.get("/batches/{batch_id}", summary="A batch", responses=_example(_BATCH, 404))
def get_batch(batch_id: BatchId, conn: ConnDep, scope: ScopeDep) -> dict[str, Any]:
    return trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=scope.cooperative_id)


@router.get(
    "/batches/{batch_id}/lineage",
    summary="Upstream sources and downstream products of a batch",
    responses=_example(
        {
            "upstream": [{"id": 40, "lot": "MG260428-AB12", "depth": 1}],
            "downstream": [{"id": 43, "lot": "MG260501-7K2Q-1", "depth": 1}],
        },
        404,
    ),
)
def lineage(batch_id: BatchId, conn: ConnDep, scope: ScopeDep) -> dict[str, Any]:
    trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=scope.cooperative_id)
    return {
        "upstream": trace_service.upstream(conn, batch_id=batch_id),
        "downstream": trace_service.downstream(conn, batch_id=batch_id),
    }


@router.post(
    "/batches/{batch_id}/split",
    status_code=201,
    summary="Pack a batch into lots",
    responses=_example(
        {"items": [{**_BATCH, "id": 43, "lot": "MG260501-7K2Q-1"}]}, 404, 409, 400, status_code=201
    ),
)
def split(
    batch_id: BatchId, body: schemas.SplitIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, Any]:
    parts = [p.model_dump() for p in body.parts]
    return {
        "items": trace_service.split_batch(
            conn,
            batch_id=batch_id,
            parts=parts,
            cooperative_id=scope.cooperative_id,
            event_time=body.event_time,
            event_tz=body.event_tz,
        )
    }


@router.post(
    "/batches/merge",
    status_code=201,
    summary="Mix batches into a new lot",
    responses=_example({**_BATCH, "id": 44, "lot": "MG260502-MIX1"}, 404, 409, 400, status_code=201),
)
def merge(body: schemas.MergeIn, conn: ConnDep, _w: Writer, scope: ScopeDep) -> dict[str, Any]:
    return trace_service.merge_batches(
        conn,
        batch_ids=body.batch_ids,
        lot=body.lot,
        gtin=body.gtin,
        cooperative_id=scope.cooperative_id,
        event_time=body.event_time,
        event_tz=body.event_tz,
    )


@router.post(
    "/batches/{batch_id}/events",
    status_code=201,
    summary="Record an EPCIS-aligned event",
    responses=_example(
        {
            "id": 9,
            "batch_id": 42,
            "biz_step": "packing",
            "disposition": "active",
            "event_time": "2026-05-02T01:00:00Z",
            "event_tz": "+08:00",
            "place": "田东县 包装厂",
            "actor": "包装线 2",
            "documents": [],
        },
        404,
        400,
        status_code=201,
    ),
)
def add_event(
    batch_id: BatchId, body: schemas.EventIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, Any]:
    return trace_service.add_event(
        conn, batch_id=batch_id, cooperative_id=scope.cooperative_id, **body.model_dump()
    )


@router.get(
    "/batches/{batch_id}/epcis",
    response_class=Response,
    summary="The batch's events as an EPCIS 2.0 JSON-LD document",
    responses=_example(
        {
            "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2026-05-02T01:00:00Z",
            "epcisBody": {"eventList": []},
        },
        404,
        media="application/ld+json",
    ),
)
def export_epcis(batch_id: BatchId, conn: ConnDep, scope: ScopeDep) -> Response:
    doc = epcis.export_batch(conn, batch_id=batch_id, cooperative_id=scope.cooperative_id)
    return Response(json.dumps(doc, ensure_ascii=False), media_type="application/ld+json")


@router.post(
    "/batches/{batch_id}/custody",
    status_code=201,
    summary="Record that a sensor channel held the batch",
    responses=_example(
        {"id": 3, "batch_id": 42, "channel_id": 12, "started_at": "2026-05-01T10:00:00Z", "ended_at": None},
        404,
        409,
        400,
        status_code=201,
    ),
)
def add_custody(
    batch_id: BatchId, body: schemas.CustodyIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, Any]:
    return trace_service.add_custody(
        conn, batch_id=batch_id, cooperative_id=scope.cooperative_id, **body.model_dump()
    )


@router.post(
    "/batches/{batch_id}/certificates",
    status_code=201,
    summary="Attach a 三品一标 certificate to a batch",
    responses=_example(_CERTIFICATE, 404, 409, 400, status_code=201),
)
def add_batch_certificate(
    batch_id: BatchId, body: schemas.CertificateIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, Any]:
    return trace_service.add_certificate(
        conn, batch_id=batch_id, cooperative_id=scope.cooperative_id, **body.model_dump()
    )


@router.post(
    "/cooperatives/{cooperative_id}/certificates",
    status_code=201,
    summary="Attach a certificate to a cooperative",
    responses=_example(
        {**_CERTIFICATE, "cooperative_id": 3, "batch_id": None}, 404, 409, 400, status_code=201
    ),
)
def add_cooperative_certificate(
    cooperative_id: Annotated[int, Path(ge=1, le=2**63 - 1, examples=[3])],
    body: schemas.CertificateIn,
    conn: ConnDep,
    _w: Writer,
    scope: ScopeDep,
) -> dict[str, Any]:
    if (
        scope.cooperative_id is None
        and devices_service.cooperative_name(conn, cooperative_id=cooperative_id) is None
    ):
        # Otherwise the insert's foreign key would answer 409 for what is simply a missing cooperative.
        raise NotFound("no such cooperative")
    return trace_service.add_certificate(
        conn, holder_cooperative_id=cooperative_id, cooperative_id=scope.cooperative_id, **body.model_dump()
    )


@router.get(
    "/batches/{batch_id}/certificates",
    summary="Certificates covering a batch, with status",
    responses=_example({"items": [{**_CERTIFICATE, "status": "valid"}]}, 404),
)
def batch_certificates(batch_id: BatchId, conn: ConnDep, scope: ScopeDep) -> dict[str, Any]:
    trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=scope.cooperative_id)
    return {"items": trace_service.certificates_for(conn, batch_id=batch_id)}


@router.put(
    "/batches/{batch_id}/compliance-certificate",
    summary="Set the batch's 承诺达标合格证",
    responses=_example(
        {
            "batch_id": 42,
            "product_name": "百色芒果",
            "quantity": 1200,
            "unit": "kg",
            "origin": "广西百色市田东县",
            "issued_at": "2026-05-02T01:00:00Z",
            "issuer": "百色芒果合作社",
            "contact": "0776-1234567",
        },
        404,
        400,
    ),
)
def set_compliance(
    batch_id: BatchId, body: schemas.ComplianceIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, Any]:
    return trace_service.set_compliance_certificate(
        conn, batch_id=batch_id, cooperative_id=scope.cooperative_id, **body.model_dump()
    )


@router.post(
    "/batches/{batch_id}/inspections",
    status_code=201,
    summary="Record an inspection result",
    responses=_example(
        {
            "id": 4,
            "batch_id": 42,
            "inspected_at": "2026-05-02T02:00:00Z",
            "kind": "pesticide residue",
            "passed": True,
            "standard": "GB 2763-2021",
            "laboratory": "百色市农产品质量安全检测中心",
            "details": None,
        },
        404,
        400,
        status_code=201,
    ),
)
def add_inspection(
    batch_id: BatchId, body: schemas.InspectionIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, Any]:
    return trace_service.add_inspection(
        conn, batch_id=batch_id, cooperative_id=scope.cooperative_id, **body.model_dump()
    )


@router.post(
    "/batches/{batch_id}/codes",
    status_code=201,
    summary="Issue codes (one per box)",
    responses=_example([_CODE], 404, 400, status_code=201),
)
def issue_codes(
    batch_id: BatchId, body: schemas.IssueIn, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> list[dict[str, str]]:
    return trace_codes.issue_codes(
        conn, batch_id=batch_id, count=body.count, cooperative_id=scope.cooperative_id
    )


@router.get(
    "/batches/{batch_id}/labels.pdf",
    response_class=Response,
    summary="A4 label sheet of the batch's codes",
    responses={
        200: {
            "content": {
                "application/pdf": {"schema": {"type": "string", "format": "binary"}, "example": "%PDF-1.4 …"}
            }
        },
        **problems.responses(404, 429),
    },
)
async def labels_pdf(
    batch_id: BatchId,
    _budget: Annotated[None, Depends(_labels_budget)],
    request: Request,
    conn: ConnDep,
    scope: ScopeDep,
    start: Annotated[int, Query(ge=0, le=10_000_000, description="Labels to skip (issue order).")] = 0,
    count: Annotated[
        int | None, Query(ge=1, le=100_000, description="Labels on this sheet (at most the server's limit).")
    ] = None,
) -> Response:
    """At most AGRITRACE_LABELS_PER_SHEET_MAX labels per sheet; a larger batch is printed sheet by
    sheet (`start`, `count`; `X-Total-Count` and a `Link: rel="next"` header lead on). The work
    stops when the client hangs up."""
    most = get_settings().labels_per_sheet_max
    if count is not None and count > most:
        raise InvalidInput(f"at most {most} labels per sheet")

    def load() -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
        batch = trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=scope.cooperative_id)
        total = trace_codes.count_codes(conn, batch_id=batch_id)
        if count is None and total - start > most:
            raise InvalidInput(
                f"the batch has {total} codes, at most {most} labels fit a sheet: "
                f"print it sheet by sheet with ?start=0&count={most}, ?start={most}&count={most}, ... "
                f"or have the whole batch made in the background: POST /api/v1/batches/{batch_id}/label-jobs"
            )
        sheet = trace_codes.list_codes(conn, batch_id=batch_id, offset=start, limit=count or most)
        return batch, total, sheet

    batch, total, sheet = await anyio.to_thread.run_sync(load)
    gone = threading.Event()
    drawn = 0

    def progress(n: int) -> None:
        nonlocal drawn
        drawn += n
        if gone.is_set():
            raise ClientGone

    async def watch() -> None:
        # The request has no body left to read: the next message is the client hanging up.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    pdf: bytes | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        try:
            pdf = await anyio.to_thread.run_sync(
                functools.partial(
                    trace_codes.label_sheet_pdf,
                    labels=sheet,
                    product_name=trace_codes.label_name(batch),
                    lot=batch["lot"],
                    progress=progress,
                )
            )
        except ClientGone:
            log.info("label sheet of batch %s stopped after %d of %d labels: the client hung up", batch_id,
                     drawn, len(sheet))  # fmt: skip
        finally:
            tasks.cancel_scope.cancel()
    if pdf is None:
        return Response(status_code=499)  # nobody is listening ("client closed request")
    headers = {
        "Content-Disposition": f'attachment; filename="labels-{batch["lot"]}-{start + 1}.pdf"',
        "X-Total-Count": str(total),
    }
    if start + len(sheet) < total:
        following = request.url.include_query_params(start=start + len(sheet), count=len(sheet))
        headers["Link"] = f'<{following}>; rel="next"'
    return Response(pdf, media_type="application/pdf", headers=headers)


class ClientGone(Exception):
    """The client of a long request hung up: its work stops."""


@router.post(
    "/batches/{batch_id}/recall",
    status_code=201,
    summary="Recall a batch and everything made from it",
    responses=_example(
        {
            "id": 2,
            "batch_id": 42,
            "reason": "pesticide residue above limit",
            "recalled_by": "regulator",
            "batches": [42, 43],
        },
        404,
        400,
        status_code=201,
    ),
)
def recall(batch_id: BatchId, body: schemas.RecallIn, conn: ConnDep, principal: StaffDep) -> dict[str, Any]:
    return trace_service.recall_batch(conn, batch_id=batch_id, reason=body.reason, recalled_by=principal.role)


@router.get(
    "/codes/flagged",
    summary="Codes flagged as possibly counterfeit",
    responses=_example(
        {
            "items": [
                {
                    "code": _CODE["code"],
                    "batch_id": 42,
                    "lot": "MG260501-7K2Q",
                    "cooperative": "百色芒果合作社",
                    "scan_count": 57,
                    "flagged_at": "2026-05-03T12:00:00Z",
                    "flag_reason": "scanned in many places",
                }
            ]
        }
    ),
)
def flagged(conn: ConnDep, _s: StaffDep, limit: LimitQuery = DEFAULT_LIMIT) -> dict[str, Any]:
    return {"items": trace_codes.flagged_codes(conn, limit=limit)}


@router.post(
    "/codes/{code}/flag/clear",
    summary="Clear a counterfeit flag after review",
    description="For a regulator, an admin or the owning cooperative: the code is genuine. Only scans "
    "after now count towards a new flag; the review is kept in the audit trail.",
    responses=_example(
        {
            "code": _CODE["code"],
            "batch_id": 42,
            "flagged_at": None,
            "flag_reason": None,
            "flag_cleared_at": "2026-05-03T13:00:00Z",
            "flag_review": "scanned at the 2026-05-03 trade fair; label checked genuine",
        },
        404,
        400,
    ),
)
def clear_flag(
    code: Annotated[str, Path(max_length=64)], body: schemas.FlagReviewIn, conn: ConnDep, scope: ScopeDep
) -> dict[str, Any]:
    owner = trace_codes.owner(conn, serial=trace_codes.normalize_serial(code) or "")
    if owner is None:
        raise NotFound(f"no code {code!r}")
    scope.check(owner, "code")
    return trace_codes.clear_flag(conn, serial=trace_codes.normalize_serial(code) or "", note=body.note)


_JOB = {
    "id": 7,
    "batch_id": 42,
    "status": "running",
    "total": 2000,
    "done": 480,
    "error": None,
    "created_at": "2026-05-01T08:00:00Z",
    "started_at": "2026-05-01T08:00:01Z",
    "finished_at": None,
}
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, examples=[7])]


@router.post(
    "/batches/{batch_id}/label-jobs",
    status_code=202,
    summary="Make the batch's label sheet in the background",
    description="Queues an A4 label sheet of the batch's codes; poll the job for progress, fetch its PDF "
    "when done, or cancel it. One job holds at most AGRITRACE_LABELS_PER_JOB_MAX labels.",
    responses=_example({**_JOB, "status": "queued", "done": 0}, 404, 422, status_code=202),
)
def submit_label_job(
    batch_id: BatchId, request: Request, response: Response, conn: ConnDep, principal: Writer, scope: ScopeDep
) -> dict[str, Any]:
    job = labels.submit(
        conn, batch_id=batch_id, cooperative_id=scope.cooperative_id, requested_by=principal.actor
    )
    conn.commit()
    request.app.state.label_jobs.wake()
    response.headers["Location"] = f"/api/v1/label-jobs/{job['id']}"
    return job


@router.get("/label-jobs/{job_id}", summary="A label job's progress", responses=_example(_JOB, 404))
def get_label_job(job_id: JobId, conn: ConnDep, scope: ScopeDep) -> dict[str, Any]:
    return labels.get(conn, job_id=job_id, cooperative_id=scope.cooperative_id)


@router.get(
    "/label-jobs/{job_id}/labels.pdf",
    response_class=Response,
    summary="A finished label job's PDF",
    responses={
        200: {
            "content": {
                "application/pdf": {"schema": {"type": "string", "format": "binary"}, "example": "%PDF-1.4 …"}
            }
        },
        **problems.responses(404, 409),
    },
)
def label_job_pdf(job_id: JobId, conn: ConnDep, scope: ScopeDep) -> Response:
    job, pdf = labels.pdf(conn, job_id=job_id, cooperative_id=scope.cooperative_id)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="labels-{job["lot"]}.pdf"'},
    )


@router.delete(
    "/label-jobs/{job_id}",
    summary="Cancel a label job",
    responses=_example({**_JOB, "status": "cancelled"}, 404, 409),
)
def cancel_label_job(job_id: JobId, conn: ConnDep, _w: Writer, scope: ScopeDep) -> dict[str, Any]:
    return labels.cancel(conn, job_id=job_id, cooperative_id=scope.cooperative_id)
