"""Raw-SQL targets for Grafana's PostgreSQL datasource, as a dataquery the foundation SDK can build and parse.

The SDK ships query types for Prometheus, Loki and others but not for the SQL datasources, so this
module adds one through the SDK's own extension point (a `Dataquery` variant registered with its
runtime), which is also what lets exported JSON be parsed back into these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

# Grafana 11's plugin id for the core PostgreSQL datasource (it also answers to "postgres").
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "agritrace-timescaledb"
DATASOURCE = DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)

Format = Literal["time_series", "table"]


@dataclass
class SqlQuery(cogvariants.Dataquery):
    """One panel target: raw SQL in code mode, as Grafana's query editor saves it."""

    raw_sql: str
    format: Format = "table"
    ref_id: str = "A"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            **self.extra,
            "refId": self.ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorMode": "code",
            "rawQuery": True,
            "format": self.format,
            "rawSql": self.raw_sql,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = {"refId", "datasource", "editorMode", "rawQuery", "format", "rawSql"}
        if not isinstance(data.get("rawSql"), str) or data.get("format") not in ("time_series", "table"):
            raise ValueError(f"not a raw SQL target: {sorted(data)}")
        return cls(
            raw_sql=data["rawSql"],
            format=data["format"],
            ref_id=str(data.get("refId", "A")),
            extra={k: v for k, v in data.items() if k not in known},
        )


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds a raw SQL target: `Sql("SELECT ...").time_series()`."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = SqlQuery(raw_sql=raw_sql.strip())

    def build(self) -> cogvariants.Dataquery:
        return self._internal

    def time_series(self) -> Self:
        self._internal.format = "time_series"
        return self

    def table(self) -> Self:
        self._internal.format = "table"
        return self

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self


def register() -> None:
    """Teaches the SDK's JSON decoder this datasource's targets (idempotent)."""
    for identifier in (DATASOURCE_TYPE, "postgres"):
        cogruntime.register_dataquery_variant(
            cogruntime.DataqueryConfig(identifier=identifier, from_json_hook=SqlQuery.from_json)
        )


register()
