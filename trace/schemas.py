"""HTTP bodies for the trace API."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from agritrace.text import VisibleLines, VisibleText

Product = Literal["mango", "citrus", "tea"]


# Every text the consumer page shows is VisibleText (one line) or VisibleLines (tabs and newlines
# too): no bidi controls, zero-width or other invisible characters (core/text.py; the database
# checks the same, migration 0019).

# Times must carry their offset: a packing house in Guangxi and a server in UTC must not disagree
# silently about when a lot left the cold room.


class _In(BaseModel):
    """A request body. PostgreSQL text cannot hold NUL characters: refuse them here (422), not at the database (500)."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


class BatchIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "product": "mango",
                    "cooperative": "百色芒果合作社",
                    "variety": "台农一号",
                    "gtin": "06901234567892",
                    "origin_plot": "田东县 林逢镇 3号地",
                    "gi_area": "百色芒果",
                    "harvest_date": "2026-05-01",
                    "quantity": 1200,
                    "unit": "kg",
                }
            ]
        }
    )

    product: Product
    cooperative: VisibleText | None = Field(
        default=None, description="Cooperative name (admin only; created if new)."
    )
    variety: VisibleText | None = Field(default=None, max_length=100)
    gtin: str | None = Field(
        default=None, max_length=14, description="GTIN-8/12/13/14 with a valid check digit."
    )
    lot: str | None = Field(default=None, max_length=20)
    origin_plot: VisibleText | None = Field(default=None, max_length=200)
    gi_area: VisibleText | None = Field(default=None, max_length=200)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    harvest_date: date | None = None
    quantity: Decimal | None = Field(default=None, gt=0)
    unit: VisibleText | None = Field(default=None, max_length=16)


class PartIn(_In):
    quantity: Decimal | None = Field(default=None, gt=0)
    unit: VisibleText | None = Field(default=None, max_length=16)
    lot: str | None = Field(default=None, max_length=20)
    gtin: str | None = Field(default=None, max_length=14)


class SplitIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"parts": [{"quantity": 600, "unit": "kg"}, {"quantity": 600, "unit": "kg"}]}]
        }
    )

    parts: list[PartIn] = Field(min_length=1, max_length=1000)
    event_time: AwareDatetime | None = Field(default=None, description="When it was packed (default: now).")
    event_tz: str | None = Field(
        default=None, max_length=6, description="UTC offset (default: event_time's)."
    )


class MergeIn(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"batch_ids": [42, 43]}]})

    batch_ids: list[int] = Field(min_length=2, max_length=100)
    lot: str | None = Field(default=None, max_length=20)
    gtin: str | None = Field(default=None, max_length=14)
    event_time: AwareDatetime | None = Field(default=None, description="When they were mixed (default: now).")
    event_tz: str | None = Field(
        default=None, max_length=6, description="UTC offset (default: event_time's)."
    )


class DocumentIn(_In):
    type: VisibleText = Field(max_length=32)
    id: VisibleText = Field(max_length=200)


class EventIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "biz_step": "packing",
                    "event_time": "2026-05-02T01:00:00Z",
                    "disposition": "active",
                    "place": "田东县 包装厂",
                    "actor": "包装线 2",
                }
            ]
        }
    )

    biz_step: str
    event_time: AwareDatetime
    disposition: str | None = None
    event_tz: str | None = Field(
        default=None,
        max_length=6,
        description="UTC offset where it happened (-12:00 to +14:00); default: the offset event_time is written with.",
    )
    place: VisibleText | None = Field(default=None, max_length=200)
    actor: VisibleText | None = Field(default=None, max_length=200)
    documents: list[DocumentIn] = Field(default_factory=list, max_length=20)


class CustodyIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"channel_id": 12, "started_at": "2026-05-01T10:00:00Z", "ended_at": "2026-05-03T06:00:00Z"}
            ]
        }
    )

    channel_id: int
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None


class CertificateIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "green_food",
                    "number": "LB-18-26050123456A",
                    "issuer": "中国绿色食品发展中心",
                    "valid_from": "2026-01-01",
                    "valid_to": "2028-12-31",
                }
            ]
        }
    )

    kind: Literal["pollution_free", "green_food", "organic", "geographical_indication"]
    number: VisibleText = Field(max_length=64)
    issuer: VisibleText = Field(min_length=1, max_length=200)
    valid_from: date
    valid_to: date
    scope: VisibleLines | None = Field(default=None, max_length=500)


class ComplianceIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "product_name": "百色芒果",
                    "quantity": 1200,
                    "unit": "kg",
                    "origin": "广西百色市田东县",
                    "issued_at": "2026-05-02T01:00:00+08:00",
                    "issuer": "百色芒果合作社",
                    "contact": "0776-1234567",
                }
            ]
        }
    )

    product_name: VisibleText = Field(min_length=1, max_length=100)
    quantity: Decimal = Field(gt=0)
    unit: VisibleText = Field(min_length=1, max_length=16)
    origin: VisibleText = Field(min_length=1, max_length=200)
    issued_at: AwareDatetime
    issuer: VisibleText = Field(min_length=1, max_length=200)
    contact: VisibleText = Field(min_length=5, max_length=40)


class InspectionIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inspected_at": "2026-05-02T02:00:00Z",
                    "kind": "pesticide residue",
                    "passed": True,
                    "standard": "GB 2763-2021",
                }
            ]
        }
    )

    inspected_at: AwareDatetime
    kind: VisibleText = Field(min_length=1, max_length=100)
    passed: bool
    standard: VisibleText | None = Field(default=None, max_length=100)
    laboratory: VisibleText | None = Field(default=None, max_length=200)
    details: VisibleLines | None = Field(default=None, max_length=1000)


class IssueIn(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"count": 24}]})

    count: int = Field(
        ge=1,
        le=100_000,
        description="Codes to issue (the server's limits: 10,000 per request, 100,000 per batch).",
    )


class FlagReviewIn(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"note": "scanned at the 2026-05-03 trade fair; label checked genuine"}]
        }
    )

    note: str = Field(
        min_length=1, max_length=500, description="Why the flag is cleared (kept in the audit trail)."
    )


class RecallIn(_In):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "pesticide residue above the limit"}]}
    )

    reason: VisibleLines = Field(min_length=1, max_length=500)
