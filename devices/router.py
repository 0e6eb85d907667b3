"""Routes of the device registry: gateways, their credentials, channels and readings."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from agritrace.api import problems
from agritrace.api.deps import ConnDep, ScopeDep, require
from agritrace.api.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, decode_cursor, page
from agritrace.api.tokens import Principal
from agritrace.devices import schemas, service
from agritrace.devices.broker import DynamicSecurity
from agritrace.errors import Forbidden, InvalidInput
from agritrace.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["devices"], responses=problems.AUTH_RESPONSES)
_dynsec_lock = threading.Lock()


def get_dynsec(request: Request) -> DynamicSecurity:
    """The API process's dynamic-security session, on its one admin broker connection."""
    with _dynsec_lock:
        dynsec = getattr(request.app.state, "dynsec", None)
        client = request.app.state.broker
        # A restarted lifespan (tests run several in one process) brings a new broker session: a
        # session bound to the old, disconnected one would never hear the broker's answers.
        if dynsec is None or dynsec.client is not client:
            # The API connects to the broker in the background at start-up; give it a moment.
            deadline = time.monotonic() + 5
            while not client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.05)
            dynsec = request.app.state.dynsec = DynamicSecurity(client)
        return dynsec


DynsecDep = Annotated[DynamicSecurity, Depends(get_dynsec)]
# Regulators read everything but change no device: writers are admins and the owning cooperative.
Writer = Annotated[Principal, require("admin", "cooperative")]
GatewayId = Annotated[str, Path(max_length=64, examples=["gw-baise-01"])]
LATEST_EXAMPLE = [{"name": "coldroom1/temp", "time": "2026-05-01T09:00:00Z", "value": 11.5, "unit": "Cel"}]
ChannelId = Annotated[int, Path(ge=1, le=2**63 - 1, examples=[12])]


def _credentials(connection: dict[str, Any], gateway_id: str, password: str) -> schemas.GatewayCredentials:
    mqtt = service.mqtt_credentials(connection, gateway_id=gateway_id, password=password)
    return schemas.GatewayCredentials(gateway_id=gateway_id, mqtt=schemas.MqttCredentials(**mqtt))


@router.post(
    "/gateways",
    status_code=201,
    response_model=schemas.GatewayCredentials,
    responses=problems.responses(400, 409, 502),
)
def create_gateway(
    body: schemas.GatewayCreate, conn: ConnDep, _w: Writer, scope: ScopeDep, dynsec: DynsecDep
) -> schemas.GatewayCredentials:
    """Registers a gateway and returns its MQTT credentials (the password is shown only here) with
    the broker's TLS host, port and CA certificate."""
    connection = service.mqtt_connection(get_settings())
    if scope.cooperative_id is not None:
        own = service.cooperative_name(conn, cooperative_id=scope.cooperative_id)
        if body.cooperative is not None and own != body.cooperative:
            raise Forbidden("a cooperative token creates gateways only for its own cooperative")
        cooperative_id = scope.cooperative_id
    else:
        if body.cooperative is None:
            raise InvalidInput("name the cooperative the gateway belongs to")
        cooperative_id = service.get_or_create_cooperative(conn, name=body.cooperative)
    gateway_id, password = service.create_gateway(
        conn,
        dynsec=dynsec,
        cooperative_id=cooperative_id,
        gateway_id=body.gateway_id,
        description=body.description,
    )
    return _credentials(connection, gateway_id, password)


@router.get("/gateways", response_model=schemas.GatewayList)
def list_gateways(
    conn: ConnDep, scope: ScopeDep, limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None
) -> dict[str, object]:
    """The gateways the caller may see, a page at a time (by id)."""
    after = decode_cursor(cursor, types=(str,))
    rows = service.list_gateways(
        conn, cooperative_id=scope.cooperative_id, after=after[0] if after else None, limit=limit + 1
    )
    return page(rows, limit=limit, key=lambda r: [r["gateway_id"]])


@router.get("/gateways/{gateway_id}", response_model=schemas.Gateway, responses=problems.responses(404))
def get_gateway(gateway_id: GatewayId, conn: ConnDep, scope: ScopeDep) -> dict[str, object]:
    """One gateway: owner, online state (from will/birth messages), last seen."""
    return service.get_gateway(conn, gateway_id=gateway_id, cooperative_id=scope.cooperative_id)


@router.post(
    "/gateways/{gateway_id}/disable", response_model=schemas.Gateway, responses=problems.responses(404, 502)
)
def disable_gateway(
    gateway_id: GatewayId, conn: ConnDep, _w: Writer, scope: ScopeDep, dynsec: DynsecDep
) -> dict[str, object]:
    """The broker refuses the gateway from now on (and disconnects it)."""
    return service.set_gateway_enabled(
        conn, dynsec=dynsec, gateway_id=gateway_id, enabled=False, cooperative_id=scope.cooperative_id
    )


@router.post(
    "/gateways/{gateway_id}/enable", response_model=schemas.Gateway, responses=problems.responses(404, 502)
)
def enable_gateway(
    gateway_id: GatewayId, conn: ConnDep, _w: Writer, scope: ScopeDep, dynsec: DynsecDep
) -> dict[str, object]:
    """Lets a disabled gateway connect again (with its current password)."""
    return service.set_gateway_enabled(
        conn, dynsec=dynsec, gateway_id=gateway_id, enabled=True, cooperative_id=scope.cooperative_id
    )


@router.post(
    "/gateways/{gateway_id}/credentials",
    response_model=schemas.GatewayCredentials,
    responses=problems.responses(404, 502),
)
def rotate_credentials(
    gateway_id: GatewayId, conn: ConnDep, _w: Writer, scope: ScopeDep, dynsec: DynsecDep
) -> schemas.GatewayCredentials:
    """Issues a new password; the old one stops working and connected sessions are dropped."""
    connection = service.mqtt_connection(get_settings())
    password = service.rotate_credentials(
        conn, dynsec=dynsec, gateway_id=gateway_id, cooperative_id=scope.cooperative_id
    )
    return _credentials(connection, gateway_id, password)


@router.get(
    "/gateways/{gateway_id}/latest",
    response_model=list[schemas.LatestReading],
    responses={
        200: {"content": {"application/json": {"example": LATEST_EXAMPLE}}},
        **problems.responses(404),
    },
)
def latest(gateway_id: GatewayId, conn: ConnDep, scope: ScopeDep) -> list[dict[str, object]]:
    """The newest reading (by timestamp) of every channel of the gateway."""
    return service.latest(conn, gateway_id=gateway_id, cooperative_id=scope.cooperative_id)


@router.get(
    "/gateways/{gateway_id}/channels", response_model=schemas.ChannelList, responses=problems.responses(404)
)
def list_channels(gateway_id: GatewayId, conn: ConnDep, scope: ScopeDep) -> dict[str, object]:
    """The gateway's channels (registered when first seen by the ingest worker)."""
    return {"items": service.list_channels(conn, gateway_id=gateway_id, cooperative_id=scope.cooperative_id)}


@router.get("/channels/{channel_id}", response_model=schemas.Channel, responses=problems.responses(404))
def get_channel(channel_id: ChannelId, conn: ConnDep, scope: ScopeDep) -> dict[str, object]:
    """One channel."""
    return service.get_channel(conn, channel_id=channel_id, cooperative_id=scope.cooperative_id)


@router.patch(
    "/channels/{channel_id}", response_model=schemas.Channel, responses=problems.responses(400, 404)
)
def describe_channel(
    channel_id: ChannelId, body: schemas.ChannelDescribe, conn: ConnDep, _w: Writer, scope: ScopeDep
) -> dict[str, object]:
    """Describes a channel: what it measures, and the cold room, truck or plot it hangs in."""
    return service.describe_channel(
        conn,
        channel_id=channel_id,
        changes=body.model_dump(exclude_unset=True),
        cooperative_id=scope.cooperative_id,
    )


@router.get(
    "/channels/{channel_id}/readings", response_model=schemas.ReadingPage, responses=problems.responses(404)
)
def channel_readings(
    channel_id: ChannelId,
    conn: ConnDep,
    scope: ScopeDep,
    start: datetime,
    end: datetime,
    bucket: Annotated[timedelta | None, Query(description="ISO 8601 duration (PT5M) or seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 1000,
    after: datetime | None = None,
) -> dict[str, object]:
    """Readings in [start, end): raw and paged, or averaged per `bucket` with min, max and count."""
    if start.tzinfo is None or end.tzinfo is None or (after is not None and after.tzinfo is None):
        raise InvalidInput("times need a UTC offset (2026-05-01T00:00:00Z)")
    items = service.readings(
        conn,
        channel_id=channel_id,
        start=start,
        end=end,
        bucket=bucket,
        limit=limit,
        after=after,
        cooperative_id=scope.cooperative_id,
    )
    full_page = bucket is None and len(items) == limit
    return {
        "channel_id": channel_id,
        "bucket_seconds": bucket.total_seconds() if bucket else None,
        "items": items,
        "next_after": items[-1]["time"] if full_page else None,
    }
