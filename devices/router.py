"""Routes of the device registry: gateways, their credentials, channels and readings."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from agritrace.api.deps import ConnDep, PrincipalDep, require
from agritrace.api.tokens import Principal
from agritrace.devices import schemas, service
from agritrace.devices.broker import DynamicSecurity
from agritrace.errors import Forbidden, InvalidInput
from agritrace.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["devices"])
_dynsec_lock = threading.Lock()


def get_dynsec(request: Request) -> DynamicSecurity:
    """The API process's dynamic-security session, on its one admin broker connection."""
    with _dynsec_lock:
        dynsec = getattr(request.app.state, "dynsec", None)
        if dynsec is None:
            client = request.app.state.broker
            # The API connects to the broker in the background at start-up; give it a moment.
            deadline = time.monotonic() + 5
            while not client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.05)
            dynsec = request.app.state.dynsec = DynamicSecurity(client)
        return dynsec


DynsecDep = Annotated[DynamicSecurity, Depends(get_dynsec)]
Writer = Annotated[Principal, require("admin", "cooperative")]


def _credentials(gateway_id: str, password: str) -> schemas.GatewayCredentials:
    mqtt = service.mqtt_credentials(get_settings(), gateway_id=gateway_id, password=password)
    return schemas.GatewayCredentials(gateway_id=gateway_id, mqtt=schemas.MqttCredentials(**mqtt))


@router.post("/gateways", status_code=201, response_model=schemas.GatewayCredentials)
def create_gateway(
    body: schemas.GatewayCreate, conn: ConnDep, principal: Writer, dynsec: DynsecDep
) -> schemas.GatewayCredentials:
    """Registers a gateway and returns its MQTT credentials (the password is shown only here)."""
    if principal.role == "cooperative":
        assert principal.cooperative_id is not None
        own = conn.execute(
            "SELECT name FROM cooperatives WHERE id = %s", (principal.cooperative_id,)
        ).fetchone()
        if body.cooperative is not None and (own is None or own["name"] != body.cooperative):
            raise Forbidden("a cooperative token creates gateways only for its own cooperative")
        cooperative_id = principal.cooperative_id
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
    return _credentials(gateway_id, password)


@router.get("/gateways", response_model=schemas.GatewayList)
def list_gateways(conn: ConnDep, principal: PrincipalDep) -> dict[str, object]:
    """The gateways the caller may see."""
    return {"items": service.list_gateways(conn, cooperative_id=principal.cooperative_id)}


@router.get("/gateways/{gateway_id}", response_model=schemas.Gateway)
def get_gateway(gateway_id: str, conn: ConnDep, principal: PrincipalDep) -> dict[str, object]:
    """One gateway: owner, online state (from will/birth messages), last seen."""
    return service.get_gateway(conn, gateway_id=gateway_id, cooperative_id=principal.cooperative_id)


@router.post("/gateways/{gateway_id}/disable", response_model=schemas.Gateway)
def disable_gateway(
    gateway_id: str, conn: ConnDep, principal: Writer, dynsec: DynsecDep
) -> dict[str, object]:
    """The broker refuses the gateway from now on (and disconnects it)."""
    return service.set_gateway_enabled(
        conn, dynsec=dynsec, gateway_id=gateway_id, enabled=False, cooperative_id=principal.cooperative_id
    )


@router.post("/gateways/{gateway_id}/enable", response_model=schemas.Gateway)
def enable_gateway(gateway_id: str, conn: ConnDep, principal: Writer, dynsec: DynsecDep) -> dict[str, object]:
    """Lets a disabled gateway connect again (with its current password)."""
    return service.set_gateway_enabled(
        conn, dynsec=dynsec, gateway_id=gateway_id, enabled=True, cooperative_id=principal.cooperative_id
    )


@router.post("/gateways/{gateway_id}/credentials", response_model=schemas.GatewayCredentials)
def rotate_credentials(
    gateway_id: str, conn: ConnDep, principal: Writer, dynsec: DynsecDep
) -> schemas.GatewayCredentials:
    """Issues a new password; the old one stops working and connected sessions are dropped."""
    password = service.rotate_credentials(
        conn, dynsec=dynsec, gateway_id=gateway_id, cooperative_id=principal.cooperative_id
    )
    return _credentials(gateway_id, password)


@router.get("/gateways/{gateway_id}/latest", response_model=list[schemas.LatestReading])
def latest(gateway_id: str, conn: ConnDep, principal: PrincipalDep) -> list[dict[str, object]]:
    """The newest reading (by timestamp) of every channel of the gateway."""
    return service.latest(conn, gateway_id=gateway_id, cooperative_id=principal.cooperative_id)


@router.get("/gateways/{gateway_id}/channels", response_model=schemas.ChannelList)
def list_channels(gateway_id: str, conn: ConnDep, principal: PrincipalDep) -> dict[str, object]:
    """The gateway's channels (registered when first seen by the ingest worker)."""
    return {
        "items": service.list_channels(conn, gateway_id=gateway_id, cooperative_id=principal.cooperative_id)
    }


@router.get("/channels/{channel_id}", response_model=schemas.Channel)
def get_channel(channel_id: int, conn: ConnDep, principal: PrincipalDep) -> dict[str, object]:
    """One channel."""
    return service.get_channel(conn, channel_id=channel_id, cooperative_id=principal.cooperative_id)


@router.patch("/channels/{channel_id}", response_model=schemas.Channel)
def describe_channel(
    channel_id: int, body: schemas.ChannelDescribe, conn: ConnDep, principal: Writer
) -> dict[str, object]:
    """Describes a channel: what it measures, and the cold room, truck or plot it hangs in."""
    return service.describe_channel(
        conn,
        channel_id=channel_id,
        changes=body.model_dump(exclude_unset=True),
        cooperative_id=principal.cooperative_id,
    )


@router.get("/channels/{channel_id}/readings", response_model=schemas.ReadingPage)
def channel_readings(
    channel_id: int,
    conn: ConnDep,
    principal: PrincipalDep,
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
        cooperative_id=principal.cooperative_id,
    )
    full_page = bucket is None and len(items) == limit
    return {
        "channel_id": channel_id,
        "bucket_seconds": bucket.total_seconds() if bucket else None,
        "items": items,
        "next_after": items[-1]["time"] if full_page else None,
    }
