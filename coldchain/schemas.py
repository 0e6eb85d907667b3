"""HTTP bodies and responses of the cold-chain API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

Severity = Literal["info", "warning", "critical"]
Status = Literal["open", "acknowledged", "resolved", "withdrawn"]

# Examples for the OpenAPI document (every body and response shows one).
ALERT_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "status": "open",
    "gateway_id": "coldroom-1",
    "channel": "coldroom/temp",
    "severity": "critical",
    "channel_id": 7,
    "unit": "Cel",
    "cooperative": "百色芒果合作社",
    "product": "mango",
    "rule": "chilling",
    "metric": "temperature",
    "direction": "below",
    "threshold": 10.0,
    "started_at": "2026-05-01T02:10:00Z",
    "ended_at": None,
    "worst_value": 6.1,
    "minutes_out": 48.0,
    "opened_at": "2026-05-01T02:40:05Z",
    "acknowledged_at": None,
    "acknowledged_by": None,
    "resolved_at": None,
    "resolved_by": None,
    "condition": "temperature:below",
    "rules_met": ["chilling"],
    "met_at": "2026-05-01T02:40:00Z",
    "late": False,
    "resolve_attempted_by": None,
}
ALERT_DETAIL_EXAMPLE: dict[str, Any] = {
    **ALERT_EXAMPLE,
    "history": [
        {"id": 101, "at": "2026-05-01T02:40:05Z", "action": "opened", "actor": "evaluator", "comment": None}
    ],
}
RULE_EXAMPLE: dict[str, Any] = {
    "name": "chilling",
    "metric": "temperature",
    "direction": "below",
    "threshold": 10.0,
    "clear_margin": 0.5,
    "delay_s": 1800,
    "clear_delay_s": 600,
    "mode": "single",
    "window_s": None,
    "max_gap_s": 900,
    "severity": "critical",
    "enabled": True,
}
PROFILE_EXAMPLE: dict[str, Any] = {
    "name": "mango",
    "description": "Mango (e.g. 百色芒果): 10-13 °C, 85-95 %RH; chilling injury below ~10 °C",
    "temp_low": 10.0,
    "temp_high": 13.0,
    "rh_low": 85.0,
    "rh_high": 95.0,
    "rules": [{"id": 1, **RULE_EXAMPLE}],
}


SUMMARY_EXAMPLE: dict[str, Any] = {
    "channel_id": 7,
    "gateway_id": "coldroom-1",
    "channel": "coldroom/temp",
    "unit": "Cel",
    "profile": "mango",
    "start": "2026-05-01T00:00:00Z",
    "end": "2026-05-02T00:00:00Z",
    "verdict": "excursion",
    "in_progress": False,
    "band": {"low": 10.0, "high": 13.0},
    "readings": 1440,
    "min": 6.1,
    "max": 12.4,
    "mean": 11.2,
    "mkt": 11.3,
    "minutes": 1440.0,
    "minutes_in_band": 1375.0,
    "minutes_out_of_band": 60.0,
    "minutes_no_data": 5.0,
    "excursions": 1,
    "worst": {"value": 6.1, "time": "2026-05-01T03:12:00+00:00", "place": "1号冷库"},
    "first": "2026-05-01T00:00:00+00:00",
    "latest_reading": "2026-05-01T23:59:00+00:00",
    "buckets": [
        {
            "time": "2026-05-01T00:00:00+00:00",
            "readings": 60,
            "min": 11.0,
            "max": 12.0,
            "mean": 11.5,
            "minutes_out_of_band": 0.0,
        }
    ],
}


class Alert(BaseModel):
    """An alert as lists show it."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [ALERT_EXAMPLE]})

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
    condition: str = Field(
        description="What the alert is about: metric and direction ('temperature:below') or 'no_data'. "
        "One alert per excursion of a condition; `rule` is its most severe level met."
    )
    rules_met: list[str] = Field(
        description="The condition's rules (escalation levels) met, by rule id order."
    )
    met_at: datetime | None = Field(description="When the first level was met (reading time).")
    late: bool = Field(
        description="Known more than 15 min after it was met (stored and forwarded readings): it happened "
        "from `started_at`, became known at `opened_at`."
    )
    resolve_attempted_by: str | None = Field(
        description="Who resolved it while it was still out of range (it was reopened)."
    )


class AlertEvent(BaseModel):
    id: int
    at: datetime
    action: str
    actor: str
    comment: str | None


class AlertDetail(Alert):
    """An alert with its whole history (oldest first)."""

    model_config = ConfigDict(json_schema_extra={"examples": [ALERT_DETAIL_EXAMPLE]})

    history: list[AlertEvent]


class Note(BaseModel):
    """An optional comment kept in the alert's history with the change."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"comment": "door left open, closing it"}]}
    )

    comment: str | None = Field(default=None, max_length=2000)


class CommentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"comment": "moved pallets to room 2"}]}
    )

    comment: str = Field(min_length=1, max_length=2000)


class Bands(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"temp_low": 10.5, "description": "mango, ripening"}]}
    )

    description: str | None = Field(default=None, max_length=500)
    temp_low: float | None = Field(default=None, ge=-80, le=80)
    temp_high: float | None = Field(default=None, ge=-80, le=80)
    rh_low: float | None = Field(default=None, ge=0, le=100)
    rh_high: float | None = Field(default=None, ge=0, le=100)


class ProfileIn(Bands):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "lychee", "temp_low": 1, "temp_high": 5, "rh_low": 90, "rh_high": 95}]
        }
    )

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,39}$")


class RuleIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "frost",
                    "metric": "temperature",
                    "direction": "below",
                    "threshold": 2.0,
                    "delay_s": 600,
                    "severity": "critical",
                }
            ]
        },
    )

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
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"delay_s": 900, "severity": "warning"}]}
    )

    threshold: float | None = Field(default=None, ge=-100, le=200)
    clear_margin: float | None = Field(default=None, ge=0, le=50)
    delay_s: int | None = Field(default=None, gt=0, le=30 * 86400)
    clear_delay_s: int | None = Field(default=None, ge=0, le=86400)
    window_s: int | None = Field(default=None, gt=0, le=90 * 86400)
    max_gap_s: int | None = Field(default=None, gt=0, le=86400)
    severity: Severity | None = None
    enabled: bool | None = None


class Profile(BaseModel):
    """A product profile: its bands and its excursion rules."""

    model_config = ConfigDict(json_schema_extra={"examples": [PROFILE_EXAMPLE]})

    name: str
    description: str | None
    temp_low: float | None
    temp_high: float | None
    rh_low: float | None
    rh_high: float | None
    rules: list[dict[str, Any]]


class ChannelProfileIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"gateway_id": "coldroom-1", "channel": "coldroom/temp", "profile": "mango"}]
        },
    )

    gateway_id: str = Field(max_length=64)
    channel: str = Field(min_length=1, max_length=200)
    profile: str = Field(max_length=40)
    unit: str | None = Field(default=None, max_length=32)


class ChannelProfileOut(BaseModel):
    """What a channel is now watched against."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "gateway_id": "coldroom-1",
                    "channel": "coldroom/temp",
                    "channel_id": 7,
                    "unit": "Cel",
                    "profile": "mango",
                }
            ]
        }
    )

    gateway_id: str
    channel: str
    channel_id: int
    unit: str | None
    profile: str


class WebhookIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://ops.example.org/agritrace/alerts", "cooperative": "百色芒果合作社"}]
        },
    )

    url: HttpUrl = Field(
        description="Where alert changes are POSTed: https, a host with public addresses only, no "
        "credentials in the URL, at most 2000 characters."
    )
    cooperative: str | None = Field(
        default=None, min_length=1, max_length=200, description="Only this cooperative's alerts (none: all)."
    )

    @field_validator("url")
    @classmethod
    def _url_fits(cls, url: HttpUrl) -> HttpUrl:
        if len(str(url)) > 2000:
            raise ValueError("the URL is longer than 2000 characters")
        return url


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 3, "secret": "q8V2…shown once"}]})

    id: int
    secret: str = Field(description="Shown once: the HMAC key of the X-AgriTrace-Signature header.")


class Worst(BaseModel):
    value: float = Field(description="The reading farthest outside the band (°C for temperatures).")
    time: datetime
    place: str = Field(
        description="Where: the channel's asset name (cold room, truck), else gateway and channel."
    )


class SummaryBucket(BaseModel):
    time: datetime
    readings: int
    min: float
    max: float
    mean: float = Field(description="Time-weighted mean.")
    minutes_out_of_band: float


class Summary(BaseModel):
    """A channel's cold chain over a time range (up to now), in total and per bucket.

    Each reading stands until the next one, at most the channel's expected interval times its
    tolerance; time beyond that is `minutes_no_data`. The reading standing at `start` is carried in,
    the last one is clipped at `end`."""

    model_config = ConfigDict(json_schema_extra={"examples": [SUMMARY_EXAMPLE]})

    channel_id: int
    gateway_id: str
    channel: str
    unit: str | None = Field(description="Cel for temperatures (kelvin channels are converted).")
    profile: str | None
    start: datetime
    end: datetime
    verdict: Literal["ok", "excursion", "incomplete", "no_data"] = Field(
        description="excursion: more than 30 min out of band; incomplete: still going on, or more than "
        "10 % of the time without data; else ok."
    )
    in_progress: bool = Field(description="The range reaches past now.")
    band: dict[str, float | None]
    readings: int
    min: float | None
    max: float | None
    mean: float | None = Field(description="Time-weighted mean.")
    mkt: float | None = Field(
        description="Mean kinetic temperature, °C (ΔH/R = 10,000 K), time-weighted; temperature channels only."
    )
    minutes: float = Field(description="The range's length up to now.")
    minutes_in_band: float
    minutes_out_of_band: float
    minutes_no_data: float
    excursions: int
    worst: Worst | None
    first: datetime | None
    latest_reading: datetime | None
    buckets: list[SummaryBucket]


class AlertFeedIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"cooperative": "百色芒果合作社"}, {"regulator": "city-bureau"}]},
    )

    regulator: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,40}$", description="A regulator's feed (admin only)."
    )
    cooperative: str | None = Field(
        default=None, min_length=1, max_length=200, description="A cooperative's feed (admin or itself)."
    )


class AlertFeedOut(BaseModel):
    """A read-only broker account for alerts; the password is shown once."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "username": "agritrace-feed-cooperative-3",
                    "client_id": "agritrace-feed-cooperative-3",
                    "password": "q8V2…shown once",
                    "topic": "agritrace/v1/alerts/{gateway_id}/#",
                    "host": "mqtt.example.org",
                    "port": 8883,
                    "tls": True,
                    "ca_certificate": None,
                }
            ]
        },
    )

    username: str
    client_id: str
    password: str
    topic: str
    host: str
    port: int
    tls: bool
    ca_certificate: str | None
