"""Cold-chain HTTP API: alerts for regulators and cooperatives, profiles and rules, summaries.

Auth and tenancy follow docs/security.md: tenant data (alerts, channels, gateways) through `ScopeDep`
(a cooperative sees and changes only its own; another cooperative's object answers the same 404 as a
missing one), configuration shared by everyone (profiles, rules, webhooks) through `StaffDep`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status

from agritrace.api import problems
from agritrace.api.deps import ConnDep, PrincipalDep, Scope, ScopeDep, StaffDep
from agritrace.api.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, decode_cursor, page
from agritrace.api.tokens import Principal
from agritrace.coldchain import feeds, profiles, schemas, service, summary, webhooks
from agritrace.db import Conn
from agritrace.devices import service as devices_service
from agritrace.devices.router import DynsecDep
from agritrace.errors import Forbidden, InvalidInput, NotFound
from agritrace.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["cold chain"], responses=problems.AUTH_RESPONSES)

# Bodies can be malformed JSON (400) or too large (413).
BODY_RESPONSES = (400, 413)

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, examples=[42])]
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1, examples=[1])]
ChannelId = Annotated[int, Path(ge=1, le=2**31 - 1, examples=[7])]
ProfileName = Annotated[str, Path(max_length=40, examples=["mango"])]
NoteBody = Annotated[
    schemas.Note | None,
    Body(
        openapi_examples={
            "comment": {"value": {"comment": "door left open, closing it"}},
            "none": {"value": {}},
        }
    ),
]


def _actor(principal: Principal) -> str:
    """How an alert's history names a person acting through the API."""
    return f"{principal.role}:token-{principal.token_id}"


def _step(
    action: Callable[..., object],
    alert_id: int,
    conn: Conn,
    scope: Scope,
    principal: Principal,
    comment: str | None,
) -> dict[str, Any]:
    """A person moves an alert along its lifecycle (acknowledge, resolve); returns it as it now is."""
    action(
        conn, alert_id=alert_id, actor=_actor(principal), cooperative_id=scope.cooperative_id, comment=comment
    )
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=scope.cooperative_id)


def _after(cursor: str | None) -> tuple[datetime, int] | None:
    """The (started_at, id) a cursor of the alert list stands for."""
    key = decode_cursor(cursor, types=(str, int))
    if key is None:
        return None
    try:
        started_at = datetime.fromisoformat(key[0])
    except ValueError:
        raise InvalidInput("the cursor is not one this API issued") from None
    if started_at.tzinfo is None:
        raise InvalidInput("the cursor is not one this API issued")
    return started_at, int(key[1])


@router.get(
    "/alerts",
    summary="List alerts, newest first",
    response_model=Page[schemas.Alert],
    responses={
        200: {
            "content": {
                "application/json": {"example": {"items": [schemas.ALERT_EXAMPLE], "next_cursor": None}}
            }
        }
    },
)
def list_alerts(
    conn: ConnDep,
    scope: ScopeDep,
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
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """Alerts by excursion start, newest first, a page at a time; a cooperative sees only its own."""
    rows = service.list_alerts(
        conn,
        cooperative_id=scope.cooperative_id,
        status=status,
        cooperative=cooperative,
        product=product,
        severity=severity,
        gateway_id=gateway_id,
        since=since,
        until=until,
        after=_after(cursor),
        limit=limit + 1,
    )
    return page(rows, limit=limit, key=lambda r: [r["started_at"].isoformat(), r["id"]])


@router.get(
    "/alerts/{alert_id}",
    summary="One alert with its history",
    response_model=schemas.AlertDetail,
    responses=problems.responses(404),
)
def get_alert(alert_id: AlertId, conn: ConnDep, scope: ScopeDep) -> dict[str, Any]:
    """One alert with its whole history; another cooperative's alert is not found."""
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=scope.cooperative_id)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    summary="Acknowledge an open alert",
    response_model=schemas.AlertDetail,
    responses=problems.responses(*BODY_RESPONSES, 404, 409),
)
def acknowledge(
    alert_id: AlertId, conn: ConnDep, scope: ScopeDep, principal: PrincipalDep, body: NoteBody = None
) -> dict[str, Any]:
    """Acknowledges an open alert (someone is on it); 409 when it is not open."""
    return _step(service.acknowledge, alert_id, conn, scope, principal, body.comment if body else None)


@router.post(
    "/alerts/{alert_id}/resolve",
    summary="Resolve an alert by hand",
    response_model=schemas.AlertDetail,
    responses=problems.responses(*BODY_RESPONSES, 403, 404, 409),
)
def resolve(
    alert_id: AlertId, conn: ConnDep, scope: ScopeDep, principal: PrincipalDep, body: NoteBody = None
) -> dict[str, Any]:
    """Resolves an open or acknowledged alert by hand; 409 when it is already closed, 403 for a
    cooperative resolving a critical alert (regulators and admins only). If readings taken after the
    resolution are still out of range, the evaluator reopens it, naming who resolved it."""
    service.resolve(
        conn,
        alert_id=alert_id,
        actor=_actor(principal),
        cooperative_id=scope.cooperative_id,
        comment=body.comment if body else None,
        may_close_critical=principal.role in ("admin", "regulator"),
    )
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=scope.cooperative_id)


@router.post(
    "/alerts/{alert_id}/comments",
    summary="Comment on an alert",
    response_model=schemas.AlertDetail,
    status_code=status.HTTP_201_CREATED,
    responses=problems.responses(*BODY_RESPONSES, 404),
)
def add_comment(
    alert_id: AlertId, body: schemas.CommentIn, conn: ConnDep, scope: ScopeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Adds a comment to an alert's history (any status)."""
    service.comment(
        conn,
        alert_id=alert_id,
        actor=_actor(principal),
        cooperative_id=scope.cooperative_id,
        text=body.comment,
    )
    return service.get_alert(conn, alert_id=alert_id, cooperative_id=scope.cooperative_id)


@router.get(
    "/coldchain/profiles",
    summary="List product profiles",
    response_model=list[schemas.Profile],
    responses={200: {"content": {"application/json": {"example": [schemas.PROFILE_EXAMPLE]}}}},
)
def list_profiles(conn: ConnDep, _p: PrincipalDep) -> list[dict[str, Any]]:
    """Product profiles with their bands and excursion rules (shared by every cooperative)."""
    return profiles.list_profiles(conn)


@router.post(
    "/coldchain/profiles",
    summary="Add a product profile (admin, regulator)",
    response_model=schemas.Profile,
    status_code=status.HTTP_201_CREATED,
    responses=problems.responses(*BODY_RESPONSES, 409),
)
def create_profile(body: schemas.ProfileIn, conn: ConnDep, _staff: StaffDep) -> dict[str, Any]:
    """Adds a product profile without rules (add them with POST .../rules)."""
    profiles.create_profile(conn, name=body.name, description=body.description, bands=body.model_dump())
    return profiles.get_profile(conn, name=body.name)


@router.patch(
    "/coldchain/profiles/{name}",
    summary="Change a profile's bands (admin, regulator)",
    response_model=schemas.Profile,
    responses=problems.responses(*BODY_RESPONSES, 404),
)
def update_profile(name: ProfileName, body: schemas.Bands, conn: ConnDep, _staff: StaffDep) -> dict[str, Any]:
    """Changes a profile's description or bands; fields left out keep their value."""
    profiles.update_profile(conn, name=name, changes=body.model_dump(exclude_unset=True))
    return profiles.get_profile(conn, name=name)


@router.post(
    "/coldchain/profiles/{name}/rules",
    summary="Add an excursion rule to a profile (admin, regulator)",
    response_model=schemas.Profile,
    status_code=status.HTTP_201_CREATED,
    responses=problems.responses(*BODY_RESPONSES, 404, 409),
)
def add_rule(name: ProfileName, body: schemas.RuleIn, conn: ConnDep, _staff: StaffDep) -> dict[str, Any]:
    """Adds an excursion rule; returns the profile with all its rules."""
    profiles.add_rule(conn, profile=name, rule=body.model_dump())
    return profiles.get_profile(conn, name=name)


@router.patch(
    "/coldchain/rules/{rule_id}",
    summary="Change an excursion rule (admin, regulator)",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems.responses(*BODY_RESPONSES, 404, 409),
)
def update_rule(rule_id: RuleId, body: schemas.RulePatch, conn: ConnDep, _staff: StaffDep) -> None:
    """Changes an excursion rule: threshold, delay, severity, enabled ..."""
    profiles.update_rule(conn, rule_id=rule_id, changes=body.model_dump(exclude_unset=True))


@router.put(
    "/coldchain/channel-profiles",
    summary="Set the profile a channel is watched against",
    response_model=schemas.ChannelProfileOut,
    responses=problems.responses(*BODY_RESPONSES, 404, 409),
)
def set_channel_profile(body: schemas.ChannelProfileIn, conn: ConnDep, scope: ScopeDep) -> dict[str, Any]:
    """Sets a channel's profile (a cooperative only on its own gateways: another's is not found);
    with `unit`, a channel the gateway has not reported yet is registered."""
    return profiles.set_channel_profile(
        conn,
        gateway_id=body.gateway_id,
        channel=body.channel,
        profile=body.profile,
        unit=body.unit,
        cooperative_id=scope.cooperative_id,
    )


@router.post(
    "/coldchain/webhooks",
    summary="Register a webhook for alert changes (admin, regulator)",
    response_model=schemas.WebhookOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems.responses(*BODY_RESPONSES, 404),
)
def add_webhook(body: schemas.WebhookIn, conn: ConnDep, _staff: StaffDep) -> dict[str, Any]:
    """Registers a webhook (for one cooperative's alerts or all); its signing secret is shown once."""
    cooperative_id = (
        None if body.cooperative is None else devices_service.cooperative_id(conn, name=body.cooperative)
    )
    secret = secrets.token_urlsafe(32)
    hook_id = webhooks.add_webhook(conn, url=str(body.url), secret=secret, cooperative_id=cooperative_id)
    return {"id": hook_id, "secret": secret}


@router.get(
    "/coldchain/channels/{channel_id}/summary",
    summary="Cold-chain summary of one channel",
    response_model=schemas.Summary,
    responses=problems.responses(404),
)
def channel_summary(
    channel_id: ChannelId,
    conn: ConnDep,
    scope: ScopeDep,
    start: Annotated[datetime, Query(description="Start of the range (included).")],
    end: Annotated[datetime, Query(description="End of the range (excluded).")],
    bucket_minutes: Annotated[int, Query(ge=1, le=44640)] = 60,
    low: Annotated[float | None, Query(ge=-1000, le=1000, allow_inf_nan=False)] = None,
    high: Annotated[float | None, Query(ge=-1000, le=1000, allow_inf_nan=False)] = None,
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
        cooperative_id=scope.cooperative_id,
    )


@router.post(
    "/coldchain/alert-feeds",
    summary="Create a read-only broker account for alerts",
    response_model=schemas.AlertFeedOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems.responses(*BODY_RESPONSES, 403, 404, 409),
)
def create_alert_feed(
    body: schemas.AlertFeedIn, conn: ConnDep, scope: ScopeDep, principal: PrincipalDep, dynsec: DynsecDep
) -> dict[str, Any]:
    """A regulator's feed (admin only) reads every alert; a cooperative's (admin, or the cooperative
    itself) reads its own gateways' alerts only, later gateways included. Neither may publish. The
    password is shown once; an existing feed is a 409 (nothing changed)."""
    if (body.regulator is None) == (body.cooperative is None):
        raise InvalidInput("give exactly one of regulator or cooperative")
    connection = devices_service.mqtt_connection(get_settings())
    if body.regulator is not None:
        if principal.role != "admin":
            raise Forbidden("only an admin creates a regulator's alert feed")
        return {**feeds.create_regulator_feed(dynsec, body.regulator), **connection}
    if principal.role == "regulator":
        raise Forbidden("a cooperative's alert feed is created by an admin or the cooperative itself")
    coop_id = feeds.cooperative_id(conn, name=str(body.cooperative))
    if scope.cooperative_id is not None and scope.cooperative_id != coop_id:
        raise NotFound(f"no cooperative named {body.cooperative!r}")
    return {**feeds.create_cooperative_feed(dynsec, conn, cooperative_id=coop_id), **connection}
