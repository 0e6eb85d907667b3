"""Grafana's macro and variable expansion, as the tests and benchmark use it instead of Grafana."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agritrace import db
from agritrace.cli import app
from agritrace.dashboards.macros import Variable, expand, interval_for, interval_seconds

START = datetime(2026, 11, 18, 0, 0, tzinfo=UTC)
END = START + timedelta(days=7)


def test_time_macros_expand_like_grafanas_postgres_datasource_with_timescaledb() -> None:
    sql = "SELECT $__timeGroupAlias(r.time, $__interval), x FROM t WHERE $__timeFilter(r.time) AND y < $__interval_ms"
    out = expand(sql, start=START, end=END, interval="5m")
    assert out == (
        "SELECT time_bucket('300s',r.time) AS \"time\", x FROM t"
        " WHERE r.time BETWEEN '2026-11-18T00:00:00Z' AND '2026-11-25T00:00:00Z' AND y < 300000"
    )
    assert (
        expand("$__timeFrom()..$__timeTo()", start=START, end=END)
        == "'2026-11-18T00:00:00Z'..'2026-11-25T00:00:00Z'"
    )


def test_grafana_picks_a_30_minute_interval_for_a_week() -> None:
    assert interval_for(START, END) == "30m"
    assert interval_seconds("1d") == 86400


def test_all_inserts_the_custom_all_value_raw_and_a_selection_quoted() -> None:
    sql = "WHERE (-1 IN ($cooperative) OR id IN (${cooperative}))"
    assert expand(sql, start=START, end=END, variables={"cooperative": Variable(all_value="-1")}) == (
        "WHERE (-1 IN (-1) OR id IN (-1))"
    )
    assert expand(sql, start=START, end=END, variables={"cooperative": Variable(values=["3", "5"])}) == (
        "WHERE (-1 IN ('3','5') OR id IN ('3','5'))"
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00$")),
        min_size=1,
        max_size=4,
    )
)
def test_selected_values_reach_the_database_as_exactly_those_strings(
    database: str, values: list[str]
) -> None:
    # Quotes and backslashes inside a value must neither break the SQL nor inject into it. ("$" is
    # left out: like Grafana, macros are expanded after variables, so "$__timeFrom()" in a value
    # would be expanded too; values here are cooperative ids and product names.)
    sql = "SELECT v FROM unnest(ARRAY[$product]::text[]) AS v"
    expanded = expand(sql, start=START, end=END, variables={"product": Variable(values=values)})
    with db.connect(database, autocommit=True) as conn:
        rows = conn.execute(expanded.encode()).fetchall()
    assert [r["v"] for r in rows] == values


def test_operator_exports_dashboards_and_provisioning_with_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {Path(line).relative_to(tmp_path).as_posix() for line in result.output.splitlines()}
    assert "provisioning/datasources/agritrace.yaml" in written
    assert "dashboards/agritrace/cold-chain.json" in written
