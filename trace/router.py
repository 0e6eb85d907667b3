"""Trace management API: batches, lineage, events, custody, certificates, inspections, codes, recalls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from agritrace.api.deps import ConnDep, PrincipalDep, require
from agritrace.api.tokens import Principal
from agritrace.errors import Forbidden, InvalidInput
from agritrace.trace import codes as trace_codes
from agritrace.trace import epcis, schemas
from agritrace.trace import service as trace_service

router = APIRouter(prefix="/api/v1", tags=["trace"])
Overseer = Annotated[Principal, require("admin", "regulator")]
Writer = Annotated[Principal, require("admin", "cooperative")]


def _scope(principal: Principal) -> int | None:
    """A cooperative sees only its own batches; admins and regulators see all."""
    return principal.cooperative_id if principal.role == "cooperative" else None


@router.post("/batches", status_code=status.HTTP_201_CREATED, summary="Register a batch")
def create_batch(body: schemas.BatchIn, conn: ConnDep, principal: Writer) -> dict[str, Any]:
    if principal.role == "cooperative":
        assert principal.cooperative_id is not None
        if body.cooperative is not None:
            raise InvalidInput("a cooperative token creates batches for its own cooperative only")
        cooperative_id = principal.cooperative_id
    else:
        if not body.cooperative:
            raise InvalidInput("cooperative is required")
        cooperative_id = trace_service.ensure_cooperative(conn, name=body.cooperative)
    batch = trace_service.create_batch(
        conn, cooperative_id=cooperative_id, **body.model_dump(exclude={"cooperative"})
    )
    return {"batch_id": batch["id"], **batch}


@router.get("/batches", summary="List batches")
def list_batches(
    conn: ConnDep,
    principal: PrincipalDep,
    after_id: Annotated[int, Query(ge=0, description="Keyset paging: the last id of the previous page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    items = trace_service.list_batches(conn, cooperative_id=_scope(principal), after_id=after_id, limit=limit)
    return {"items": items}


@router.get("/batches/{batch_id}", summary="A batch")
def get_batch(batch_id: int, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    return trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=_scope(principal))


@router.get("/batches/{batch_id}/lineage", summary="Upstream sources and downstream products of a batch")
def lineage(batch_id: int, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=_scope(principal))
    return {
        "upstream": trace_service.upstream(conn, batch_id=batch_id),
        "downstream": trace_service.downstream(conn, batch_id=batch_id),
    }


@router.post("/batches/{batch_id}/split", status_code=201, summary="Pack a batch into lots")
def split(batch_id: int, body: schemas.SplitIn, conn: ConnDep, principal: Writer) -> dict[str, Any]:
    parts = [p.model_dump() for p in body.parts]
    return {
        "items": trace_service.split_batch(
            conn, batch_id=batch_id, parts=parts, cooperative_id=_scope(principal)
        )
    }


@router.post("/batches/merge", status_code=201, summary="Mix batches into a new lot")
def merge(body: schemas.MergeIn, conn: ConnDep, principal: Writer) -> dict[str, Any]:
    return trace_service.merge_batches(
        conn, batch_ids=body.batch_ids, lot=body.lot, gtin=body.gtin, cooperative_id=_scope(principal)
    )


@router.post("/batches/{batch_id}/events", status_code=201, summary="Record an EPCIS-aligned event")
def add_event(batch_id: int, body: schemas.EventIn, conn: ConnDep, principal: Writer) -> dict[str, Any]:
    data = body.model_dump()
    return trace_service.add_event(conn, batch_id=batch_id, cooperative_id=_scope(principal), **data)


@router.get("/batches/{batch_id}/epcis", summary="The batch's events as an EPCIS 2.0 JSON-LD document")
def export_epcis(batch_id: int, conn: ConnDep, principal: PrincipalDep) -> Response:
    import json

    doc = epcis.export_batch(conn, batch_id=batch_id, cooperative_id=_scope(principal))
    return Response(json.dumps(doc, ensure_ascii=False), media_type="application/ld+json")


@router.post(
    "/batches/{batch_id}/custody", status_code=201, summary="Record that a sensor channel held the batch"
)
def add_custody(batch_id: int, body: schemas.CustodyIn, conn: ConnDep, principal: Writer) -> dict[str, Any]:
    return trace_service.add_custody(
        conn, batch_id=batch_id, cooperative_id=_scope(principal), **body.model_dump()
    )


@router.post(
    "/batches/{batch_id}/certificates", status_code=201, summary="Attach a 三品一标 certificate to a batch"
)
def add_batch_certificate(
    batch_id: int, body: schemas.CertificateIn, conn: ConnDep, principal: Writer
) -> dict[str, Any]:
    return trace_service.add_certificate(
        conn, batch_id=batch_id, cooperative_id=_scope(principal), **body.model_dump()
    )


@router.post(
    "/cooperatives/{cooperative_id}/certificates",
    status_code=201,
    summary="Attach a certificate to a cooperative",
)
def add_cooperative_certificate(
    cooperative_id: int, body: schemas.CertificateIn, conn: ConnDep, principal: Writer
) -> dict[str, Any]:
    return trace_service.add_certificate(
        conn, holder_cooperative_id=cooperative_id, cooperative_id=_scope(principal), **body.model_dump()
    )


@router.get("/batches/{batch_id}/certificates", summary="Certificates covering a batch, with status")
def batch_certificates(batch_id: int, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=_scope(principal))
    return {"items": trace_service.certificates_for(conn, batch_id=batch_id)}


@router.put("/batches/{batch_id}/compliance-certificate", summary="Set the batch's 承诺达标合格证")
def set_compliance(
    batch_id: int, body: schemas.ComplianceIn, conn: ConnDep, principal: Writer
) -> dict[str, Any]:
    return trace_service.set_compliance_certificate(
        conn, batch_id=batch_id, cooperative_id=_scope(principal), **body.model_dump()
    )


@router.post("/batches/{batch_id}/inspections", status_code=201, summary="Record an inspection result")
def add_inspection(
    batch_id: int, body: schemas.InspectionIn, conn: ConnDep, principal: Writer
) -> dict[str, Any]:
    return trace_service.add_inspection(
        conn, batch_id=batch_id, cooperative_id=_scope(principal), **body.model_dump()
    )


@router.post("/batches/{batch_id}/codes", status_code=201, summary="Issue codes (one per box)")
def issue_codes(
    batch_id: int, body: schemas.IssueIn, conn: ConnDep, principal: Writer
) -> list[dict[str, str]]:
    return trace_codes.issue_codes(
        conn, batch_id=batch_id, count=body.count, cooperative_id=_scope(principal)
    )


@router.get(
    "/batches/{batch_id}/labels.pdf", response_class=Response, summary="A4 label sheet of the batch's codes"
)
def labels_pdf(batch_id: int, conn: ConnDep, principal: PrincipalDep) -> Response:
    batch = trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=_scope(principal))
    labels = trace_codes.list_codes(conn, batch_id=batch_id, cooperative_id=_scope(principal))
    pdf = trace_codes.label_sheet_pdf(labels=labels, product_name=label_name(batch))
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="labels-{batch["lot"]}.pdf"'},
    )


def label_name(batch: dict[str, Any]) -> str:
    """What a label says above the code: 芒果 · 台农一号 · lot."""
    name = trace_codes.PRODUCT_NAMES[batch["product"]]["zh"]
    return " · ".join(x for x in (name, batch["variety"], batch["lot"]) if x)


@router.post(
    "/batches/{batch_id}/recall", status_code=201, summary="Recall a batch and everything made from it"
)
def recall(batch_id: int, body: schemas.RecallIn, conn: ConnDep, principal: Overseer) -> dict[str, Any]:
    if principal.role not in ("admin", "regulator"):
        raise Forbidden("only admins and regulators recall")
    return trace_service.recall_batch(conn, batch_id=batch_id, reason=body.reason, recalled_by=principal.role)


@router.get("/codes/flagged", summary="Codes flagged as possibly counterfeit")
def flagged(
    conn: ConnDep, principal: Overseer, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {"items": trace_codes.flagged_codes(conn, limit=limit)}
