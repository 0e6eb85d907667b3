"""HTTP bodies and responses of the cold-chain API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

Severity = Literal["info", "warning", "critical"]
Status = Literal["open", "acknowledged", "resolved", "withdrawn"]


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    status: Status
    gateway_id: str
    channel: str = Field(description="The channel's resolved SenML name.")
    severity: Severity
    channel_id: int
    unit: str | None
    cooperative: str
    product: str = Field(description="The profile the channel is watched against.")
    rule: str
    metric: str
    direction: str | None
    threshold: float | None
    started_at: datetime
    ended_at: datetime | None
    worst_value: float | None
    minutes_out: float
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None


class AlertEvent(BaseModel):
    id: int
    at: datetime
    action: str
    actor: str
    comment: str | None


class AlertDetail(Alert):
    history: list[AlertEvent]


class AlertList(BaseModel):
    items: list[Alert]


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=2000)


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(min_length=1, max_length=2000)


class Bands(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=500)
    temp_low: float | None = Field(default=None, ge=-80, le=80)
    temp_high: float | None = Field(default=None, ge=-80, le=80)
    rh_low: float | None = Field(default=None, ge=0, le=100)
    rh_high: float | None = Field(default=None, ge=0, le=100)


class ProfileIn(Bands):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,39}$")


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,39}$")
    metric: Literal["temperature", "humidity", "no_data"]
    direction: Literal["below", "above"] | None = None
    threshold: float | None = Field(default=None, ge=-100, le=200)
    clear_margin: float | None = Field(default=None, ge=0, le=50)
    delay_s: int = Field(gt=0, le=30 * 86400)
    clear_delay_s: int | None = Field(default=None, ge=0, le=86400)
    mode: Literal["single", "cumulative"] | None = None
    window_s: int | None = Field(default=None, gt=0, le=90 * 86400)
    max_gap_s: int | None = Field(default=None, gt=0, le=86400)
    severity: Severity
    enabled: bool | None = None


class RulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(default=None, ge=-100, le=200)
    clear_margin: float | None = Field(default=None, ge=0, le=50)
    delay_s: int | None = Field(default=None, gt=0, le=30 * 86400)
    clear_delay_s: int | None = Field(default=None, ge=0, le=86400)
    window_s: int | None = Field(default=None, gt=0, le=90 * 86400)
    max_gap_s: int | None = Field(default=None, gt=0, le=86400)
    severity: Severity | None = None
    enabled: bool | None = None


class Profile(BaseModel):
    name: str
    description: str | None
    temp_low: float | None
    temp_high: float | None
    rh_low: float | None
    rh_high: float | None
    rules: list[dict[str, Any]]


class ChannelProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway_id: str = Field(max_length=64)
    channel: str = Field(min_length=1, max_length=200)
    profile: str = Field(max_length=40)
    unit: str | None = Field(default=None, max_length=32)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    cooperative: str | None = None


class WebhookOut(BaseModel):
    id: int
    secret: str = Field(description="Shown once: the HMAC key of the X-AgriTrace-Signature header.")


class Summary(BaseModel):
    channel_id: int
    gateway_id: str
    channel: str
    unit: str | None
    profile: str | None
    start: datetime
    end: datetime
    band: dict[str, float | None]
    readings: int
    min: float | None
    max: float | None
    mean: float | None
    minutes_in_band: float
    minutes_out_of_band: float
    excursions: int
    mkt: float | None = Field(
        description="Mean kinetic temperature, °C (ΔH/R = 10,000 K); Cel channels only."
    )
    buckets: list[dict[str, Any]]
