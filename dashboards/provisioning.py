"""Grafana provisioning: the datasource, the dashboards provider, cold-chain alert rules, and the export.

The YAML files are written from pydantic models of the fields Grafana's file provisioning reads
(extra fields are refused, so a typo fails here rather than being ignored by Grafana at start-up).
Secrets are never written: the datasource takes its host, user and password from environment
variables, which Grafana expands in provisioning files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agritrace.dashboards import boards
from agritrace.dashboards.queries import DATASOURCE_TYPE, DATASOURCE_UID

# Where the official Grafana image reads them (compose mounts the export there).
GRAFANA_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/agritrace"
DURATION = r"^\d+(ms|s|m|h|d|w)$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- datasources/agritrace.yaml -----------------------------------------------------------------


class PostgresJsonData(Strict):
    database: str
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"]
    postgresVersion: int = Field(ge=900)
    timescaledb: bool
    maxOpenConns: int = Field(ge=1)
    maxIdleConns: int = Field(ge=0)
    connMaxLifetime: int = Field(ge=0)


class Datasource(Strict):
    name: str
    type: Literal["grafana-postgresql-datasource", "postgres"]
    uid: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,40}$")
    orgId: int = 1
    access: Literal["proxy", "direct"] = "proxy"
    url: str
    user: str
    isDefault: bool = False
    editable: bool = False
    jsonData: PostgresJsonData
    secureJsonData: dict[str, str]


class DatasourcesFile(Strict):
    apiVersion: Literal[1] = 1
    datasources: list[Datasource]


# ---- dashboards/agritrace.yaml ------------------------------------------------------------------


class ProviderOptions(Strict):
    path: str
    foldersFromFilesStructure: bool = False


class Provider(Strict):
    name: str
    orgId: int = 1
    folder: str
    folderUid: str
    type: Literal["file"] = "file"
    disableDeletion: bool
    allowUiUpdates: bool
    updateIntervalSeconds: int = Field(ge=10)
    options: ProviderOptions


class DashboardsFile(Strict):
    apiVersion: Literal[1] = 1
    providers: list[Provider]


# ---- alerting/agritrace-cold-chain.yaml ---------------------------------------------------------


class RelativeTimeRange(Strict):
    from_: int = Field(alias="from", ge=0)
    to: int = Field(ge=0)


class AlertQuery(Strict):
    refId: str
    relativeTimeRange: RelativeTimeRange | None = None
    datasourceUid: str
    model: dict[str, Any]


class AlertRule(Strict):
    uid: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,40}$")
    title: str
    condition: str
    data: list[AlertQuery] = Field(min_length=1)
    noDataState: Literal["OK", "NoData", "Alerting", "KeepLast"]
    execErrState: Literal["OK", "Error", "Alerting", "KeepLast"]
    for_: str = Field(alias="for", pattern=DURATION)
    annotations: dict[str, str] = {}
    labels: dict[str, str] = {}
    isPaused: bool = False

    @model_validator(mode="after")
    def _condition_names_a_query(self) -> AlertRule:
        if self.condition not in {q.refId for q in self.data}:
            raise ValueError(f"condition {self.condition!r} is not one of the rule's queries")
        return self


class AlertGroup(Strict):
    orgId: int = 1
    name: str
    folder: str
    interval: str = Field(pattern=DURATION)
    rules: list[AlertRule]


class AlertingFile(Strict):
    apiVersion: Literal[1] = 1
    groups: list[AlertGroup]


def datasources() -> DatasourcesFile:
    """The TimescaleDB datasource, connecting as the read-only reporting login."""
    return DatasourcesFile(
        datasources=[
            Datasource(
                name="AgriTrace TimescaleDB",
                type=DATASOURCE_TYPE,
                uid=DATASOURCE_UID,
                url="${AGRITRACE_GRAFANA_DB_HOST}",
                user="${AGRITRACE_GRAFANA_DB_USER}",
                isDefault=True,
                jsonData=PostgresJsonData(
                    database="${AGRITRACE_GRAFANA_DB_NAME}",
                    sslmode="disable",
                    postgresVersion=1500,
                    timescaledb=True,
                    maxOpenConns=10,
                    maxIdleConns=5,
                    connMaxLifetime=14400,
                ),
                secureJsonData={"password": "${AGRITRACE_GRAFANA_DB_PASSWORD}"},
            )
        ]
    )


def dashboard_providers() -> DashboardsFile:
    """One file provider for the exported dashboards; edits in the UI are refused (code is the truth)."""
    return DashboardsFile(
        providers=[
            Provider(
                name="agritrace",
                folder=boards.FOLDER_TITLE,
                folderUid=boards.FOLDER_UID,
                disableDeletion=True,
                allowUiUpdates=False,
                updateIntervalSeconds=60,
                options=ProviderOptions(path=GRAFANA_DASHBOARDS_PATH),
            )
        ]
    )


OPEN_ALERTS_SQL = """SELECT a.severity, co.cooperative, count(*)::float8 AS open_alerts
  FROM reporting.open_alerts a JOIN reporting.cooperatives co USING (cooperative_id)
 GROUP BY a.severity, co.cooperative"""

# The one numeric column is the degrees outside the band (always > 0 for a returned row): Grafana
# turns each row into a series labelled by the text columns and the threshold fires on it, so
# the value must be positive whether the room is too warm or too cold.
OUT_OF_BAND_SQL = """SELECT c.cooperative, c.gateway_id, c.channel,
       greatest(c.last_value - b.temp_max, b.temp_min - c.last_value) AS degrees_outside_band
  FROM reporting.channels c JOIN reporting.product_bands b USING (product)
 WHERE c.setting = 'cold_chain' AND c.quantity = 'temperature'
   AND c.last_time > now() - interval '1 hour'
   AND (c.last_value > b.temp_max OR c.last_value < b.temp_min)"""


def _sql_rule(uid: str, title: str, sql: str, *, summary: str, for_: str) -> AlertRule:
    """A rule firing per row (labels from the text columns) while the numeric column is above 0."""
    return AlertRule(
        uid=uid,
        title=title,
        condition="C",
        data=[
            AlertQuery(
                refId="A",
                relativeTimeRange=RelativeTimeRange(from_=600, to=0),
                datasourceUid=DATASOURCE_UID,
                model={
                    "refId": "A",
                    "rawSql": sql,
                    "format": "table",
                    "rawQuery": True,
                    "editorMode": "code",
                },
            ),
            AlertQuery(
                refId="C",
                datasourceUid="__expr__",
                model={
                    "refId": "C",
                    "type": "threshold",
                    "expression": "A",
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "conditions": [{"evaluator": {"type": "gt", "params": [0]}}],
                },
            ),
        ],
        noDataState="OK",
        execErrState="Error",
        for_=for_,
        annotations={"summary": summary},
        labels={"team": "regulator", "domain": "cold-chain"},
    )


def alert_rules() -> AlertingFile:
    """Cold-chain alert rules, so regulators get Grafana notifications."""
    return AlertingFile(
        groups=[
            AlertGroup(
                name="cold-chain",
                folder=boards.FOLDER_TITLE,
                interval="1m",
                rules=[
                    _sql_rule(
                        "agritrace-open-cold-chain-alerts",
                        "冷链告警 Open cold-chain alerts",
                        OPEN_ALERTS_SQL,
                        summary="{{ $labels.cooperative }}: {{ $values.A }} open {{ $labels.severity }} cold-chain alert(s)",
                        for_="0s",
                    ),
                    _sql_rule(
                        "agritrace-cold-room-out-of-band",
                        "冷库/冷藏车超温 Cold room or truck out of band",
                        OUT_OF_BAND_SQL,
                        summary="{{ $labels.cooperative }} {{ $labels.gateway_id }} {{ $labels.channel }} is {{ $values.A }} °C outside its band",
                        # A short excursion (a door opened) is not yet a regulator's matter.
                        for_="15m",
                    ),
                ],
            )
        ]
    )


def _yaml(model: BaseModel) -> str:
    data = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return "# Generated by `agritrace dashboards export`; do not edit.\n" + yaml.safe_dump(
        data, allow_unicode=True, sort_keys=False, width=120
    )


def dashboard_json(model: object) -> str:
    """A dashboard as Grafana's JSON model (stable key order, so exports diff cleanly)."""
    return json.dumps(model, cls=JSONEncoder, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def export(directory: Path) -> list[Path]:
    """Writes dashboards and provisioning files under `directory`; returns the files written."""
    files: dict[Path, str] = {
        Path("provisioning/datasources/agritrace.yaml"): _yaml(datasources()),
        Path("provisioning/dashboards/agritrace.yaml"): _yaml(dashboard_providers()),
        Path("provisioning/alerting/agritrace-cold-chain.yaml"): _yaml(alert_rules()),
    }
    for name, model in boards.build_all().items():
        files[Path("dashboards/agritrace") / f"{name}.json"] = dashboard_json(model)
    written = []
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def sql_of_alert_rules(rules: AlertingFile) -> list[tuple[str, str]]:
    """(rule title, SQL) of every SQL query of the rules, for tests and benchmarks."""
    return [
        (rule.title, str(q.model["rawSql"]))
        for group in rules.groups
        for rule in group.rules
        for q in rule.data
        if q.datasourceUid == DATASOURCE_UID
    ]
