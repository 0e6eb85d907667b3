"""Cold-chain HTTP API: alerts for regulators and cooperatives, profiles and rules, summaries."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from agritrace.api.deps import ConnDep, PrincipalDep
from agritrace.api.tokens import Principal
from agritrace.coldchain import notify, profiles, schemas, service, summary
from agritrace.errors import Forbidden, NotFound

router = APIRouter(prefix="/api/v1", tags=["cold chain"])
STAFF = ("admin", "regulator")


def _actor(principal: Principal) -> str:
    return f"{principal.role}:token-{principal.token_id}"


def _staff(principal: Principal) -> None:
    if principal.role not in STAFF:
        raise Forbidden("this needs one of the roles: admin, regulator")


@router.get("/alerts", response_model=schemas.AlertList)
def list_alerts(
    conn: ConnDep,
    principal: PrincipalDep,
    status: Annotated[schemas.Status | None, Query(description="Default: all but withdrawn.")] = None,
    cooperative: Annotated[str | None, Query(max_length=200)] = None,
    product: Annotated[str | None, Query(max_length=40)] = None,
    severity: schemas.Severity | None = None,
    gateway_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        datetime | None, Query(description="Excursions still going on at or after this time.")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Excursions that started at or before this time.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Lists alerts, newest first; a cooperative sees only its own."""
    items = service.list_alerts(
        conn,
        cooperative_id=principal.cooperative_id,
        status=status,
        cooperative=cooperative,
        product=product,
        severity=severity,
        gateway_id=gateway_id,
        since=since,
        until=until,
        limit=limit,
    )
    return {"items": items}


@router.get("/alerts/{alert_id}", response_model=schemas.AlertDetail)
def get_alert(alert_id: int, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """One alert with its whole history."""
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=principal.cooperative_id)


@router.post("/alerts/{alert_id}/acknowledge", response_model=schemas.AlertDetail)
def acknowledge(
    alert_id: int, conn: ConnDep, principal: PrincipalDep, body: schemas.Note | None = None
) -> dict[str, Any]:
    """Acknowledges an open alert (someone is on it)."""
    service.acknowledge(
        conn,
        alert_id=alert_id,
        actor=_actor(principal),
        cooperative_id=principal.cooperative_id,
        comment=body.comment if body else None,
    )
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=principal.cooperative_id)


@router.post("/alerts/{alert_id}/resolve", response_model=schemas.AlertDetail)
def resolve(
    alert_id: int, conn: ConnDep, principal: PrincipalDep, body: schemas.Note | None = None
) -> dict[str, Any]:
    """Resolves an open or acknowledged alert by hand."""
    service.resolve(
        conn,
        alert_id=alert_id,
        actor=_actor(principal),
        cooperative_id=principal.cooperative_id,
        comment=body.comment if body else None,
    )
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=principal.cooperative_id)


@router.post("/alerts/{alert_id}/comments", response_model=schemas.AlertDetail, status_code=201)
def add_comment(
    alert_id: int, body: schemas.CommentIn, conn: ConnDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Adds a comment to an alert's history."""
    service.comment(
        conn,
        alert_id=alert_id,
        actor=_actor(principal),
        cooperative_id=principal.cooperative_id,
        text=body.comment,
    )
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=principal.cooperative_id)


@router.get("/coldchain/profiles", response_model=list[schemas.Profile])
def list_profiles(conn: ConnDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """Product profiles with their bands and excursion rules."""
    return profiles.list_profiles(conn)


@router.post("/coldchain/profiles", response_model=schemas.Profile, status_code=201)
def create_profile(body: schemas.ProfileIn, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """Adds a product profile (admin, regulator)."""
    _staff(principal)
    profiles.create_profile(conn, name=body.name, description=body.description, bands=body.model_dump())
    return profiles.get_profile(conn, name=body.name)


@router.patch("/coldchain/profiles/{name}", response_model=schemas.Profile)
def update_profile(name: str, body: schemas.Bands, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """Changes a profile's description or bands (admin, regulator)."""
    _staff(principal)
    profiles.update_profile(conn, name=name, changes=body.model_dump(exclude_unset=True))
    return profiles.get_profile(conn, name=name)


@router.post("/coldchain/profiles/{name}/rules", response_model=schemas.Profile, status_code=201)
def add_rule(name: str, body: schemas.RuleIn, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """Adds an excursion rule to a profile (admin, regulator)."""
    _staff(principal)
    profiles.add_rule(conn, profile=name, rule=body.model_dump())
    return profiles.get_profile(conn, name=name)


@router.patch("/coldchain/rules/{rule_id}", status_code=204)
def update_rule(rule_id: int, body: schemas.RulePatch, conn: ConnDep, principal: PrincipalDep) -> None:
    """Changes an excursion rule: threshold, delay, severity, enabled ... (admin, regulator)."""
    _staff(principal)
    profiles.update_rule(conn, rule_id=rule_id, changes=body.model_dump(exclude_unset=True))


@router.put("/coldchain/channel-profiles")
def set_channel_profile(
    body: schemas.ChannelProfileIn, conn: ConnDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Sets the profile a channel is watched against (a cooperative only for its own gateways)."""
    if principal.cooperative_id is not None:
        row = conn.execute(
            "SELECT 1 FROM gateways WHERE id = %s AND cooperative_id = %s",
            (body.gateway_id, principal.cooperative_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no gateway {body.gateway_id!r}")
    return profiles.set_channel_profile(
        conn, gateway_id=body.gateway_id, channel=body.channel, profile=body.profile, unit=body.unit
    )


@router.post("/coldchain/webhooks", response_model=schemas.WebhookOut, status_code=201)
def add_webhook(body: schemas.WebhookIn, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """Registers a webhook for alert changes (admin, regulator); its signing secret is shown once."""
    _staff(principal)
    cooperative_id = None
    if body.cooperative is not None:
        row = conn.execute("SELECT id FROM cooperatives WHERE name = %s", (body.cooperative,)).fetchone()
        if row is None:
            raise NotFound(f"no cooperative named {body.cooperative!r}")
        cooperative_id = row["id"]
    secret = secrets.token_urlsafe(32)
    hook_id = notify.add_webhook(conn, url=str(body.url), secret=secret, cooperative_id=cooperative_id)
    return {"id": hook_id, "secret": secret}


@router.get("/coldchain/channels/{channel_id}/summary", response_model=schemas.Summary)
def channel_summary(
    channel_id: int,
    conn: ConnDep,
    principal: PrincipalDep,
    start: datetime,
    end: datetime,
    bucket_minutes: Annotated[int, Query(ge=1, le=44640)] = 60,
    low: float | None = None,
    high: float | None = None,
) -> dict[str, Any]:
    """Cold-chain summary of one channel over [start, end); band from its profile unless given."""
    return summary.summarize(
        conn,
        channel_id=channel_id,
        start=start,
        end=end,
        low=low,
        high=high,
        bucket=timedelta(minutes=bucket_minutes),
        cooperative_id=principal.cooperative_id,
    )
