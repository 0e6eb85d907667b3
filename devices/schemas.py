"""HTTP bodies and responses of the device registry."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agritrace.devices import broker
from agritrace.text import VisibleText

AssetKind = Literal["cold_room", "truck", "plot", "garden", "warehouse", "other"]


class GatewayCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"cooperative": "百色芒果合作社", "gateway_id": "gw-baise-01", "description": "cold room 1"}
            ]
        },
    )

    cooperative: VisibleText | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Admin: created if new. Cooperative tokens: omit.",
    )
    gateway_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$",
        description="Not starting with 'agritrace' and not 'alerts': reserved for the platform's accounts.",
    )
    description: str | None = Field(default=None, max_length=500)

    @field_validator("gateway_id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value is not None and broker.is_reserved(value):
            raise ValueError("this name is reserved for the platform's own broker accounts")
        return value


class MqttCredentials(BaseModel):
    """The broker's TLS listener; connect with e.g.
    `mosquitto_pub --cafile ca.pem -h HOST -p PORT -i CLIENT_ID -u USERNAME -P PASSWORD`."""

    host: str = Field(description="Must match the broker certificate's subjectAltName.")
    port: int = Field(description="The broker's TLS port (8883 in production).")
    tls: bool = Field(description="Always true: the broker listens for gateways over TLS only.")
    ca_certificate: str | None = Field(
        description="PEM of the CA that signed the broker's certificate (save as ca.pem); "
        "null when the certificate is from a CA the gateway already trusts."
    )
    client_id: str = Field(description="The only client id the broker accepts for this gateway.")
    username: str
    password: str


class GatewayCredentials(BaseModel):
    """Shown once: the broker keeps only a salted hash of the password."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "gateway_id": "gw-baise-01",
                    "mqtt": {
                        "host": "mqtt.example.org",
                        "port": 8883,
                        "tls": True,
                        "ca_certificate": "-----BEGIN CERTIFICATE-----\nMIIB…\n-----END CERTIFICATE-----\n",
                        "client_id": "gw-baise-01",
                        "username": "gw-baise-01",
                        "password": "s3cr3t-shown-once",
                    },
                }
            ]
        }
    )

    gateway_id: str
    mqtt: MqttCredentials


class Gateway(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "gateway_id": "gw-baise-01",
                    "cooperative": "百色芒果合作社",
                    "description": "cold room 1",
                    "created_at": "2026-05-01T08:00:00Z",
                    "disabled_at": None,
                    "online": True,
                    "status_at": "2026-05-01T08:01:00Z",
                    "last_seen": "2026-05-01T09:00:00Z",
                    "credentials_issued_at": "2026-05-01T08:00:00Z",
                }
            ]
        }
    )

    gateway_id: str
    cooperative: str
    description: str | None
    created_at: datetime
    disabled_at: datetime | None
    online: bool
    status_at: datetime | None
    last_seen: datetime | None
    credentials_issued_at: datetime | None


class GatewayList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "gateway_id": "gw-baise-01",
                            "cooperative": "百色芒果合作社",
                            "description": "cold room 1",
                            "created_at": "2026-05-01T08:00:00Z",
                            "disabled_at": None,
                            "online": True,
                            "status_at": "2026-05-01T08:01:00Z",
                            "last_seen": "2026-05-01T09:00:00Z",
                            "credentials_issued_at": "2026-05-01T08:00:00Z",
                        }
                    ]
                }
            ]
        }
    )

    items: list[Gateway]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page.")


class Channel(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 12,
                    "gateway_id": "gw-baise-01",
                    "name": "coldroom1/temp",
                    "unit": "Cel",
                    "quantity": "temperature",
                    "description": None,
                    "asset_kind": "cold_room",
                    "asset_name": "冷库 1",
                    "first_seen": "2026-05-01T08:05:00Z",
                    "last_time": "2026-05-01T09:00:00Z",
                    "last_value": 11.5,
                    "last_ingested_at": "2026-05-01T09:00:01Z",
                }
            ]
        }
    )

    id: int
    gateway_id: str
    name: str
    unit: str | None
    quantity: str | None
    description: str | None
    asset_kind: AssetKind | None
    asset_name: str | None
    first_seen: datetime
    last_time: datetime | None
    last_value: float | None
    last_ingested_at: datetime | None


class ChannelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": 12,
                            "gateway_id": "gw-baise-01",
                            "name": "coldroom1/temp",
                            "unit": "Cel",
                            "quantity": "temperature",
                            "description": None,
                            "asset_kind": "cold_room",
                            "asset_name": "冷库 1",
                            "first_seen": "2026-05-01T08:05:00Z",
                            "last_time": "2026-05-01T09:00:00Z",
                            "last_value": 11.5,
                            "last_ingested_at": "2026-05-01T09:00:01Z",
                        }
                    ]
                }
            ]
        }
    )

    items: list[Channel]


class ChannelDescribe(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"quantity": "temperature", "asset_kind": "cold_room", "asset_name": "冷库 1"}]
        },
    )

    description: str | None = Field(default=None, max_length=500)
    quantity: str | None = Field(default=None, max_length=64)
    asset_kind: AssetKind | None = None
    asset_name: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=32)


class LatestReading(BaseModel):
    name: str
    time: datetime
    value: float
    unit: str | None


class Reading(BaseModel):
    time: datetime
    value: float
    min: float | None = None
    max: float | None = None
    count: int | None = None


class ReadingPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "channel_id": 12,
                    "bucket_seconds": None,
                    "items": [{"time": "2026-05-01T09:00:00Z", "value": 11.5}],
                    "next_after": None,
                }
            ]
        }
    )

    channel_id: int
    bucket_seconds: float | None
    items: list[Reading]
    next_after: datetime | None = Field(description="Raw pages: pass as `after` for the next page.")
