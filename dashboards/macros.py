"""Grafana's SQL macro and template-variable expansion, as its PostgreSQL datasource does it.

Grafana cannot run on these machines, so the tests and the benchmark expand each panel's SQL
here and run it against the real database. Behaviour follows Grafana's PostgreSQL datasource with
`timescaledb: true` (as provisioned): `$__timeGroup` becomes `time_bucket`, time filters use
RFC 3339 UTC literals, multi-value and include-All variables are quoted and comma-joined, and a
custom "All" value is inserted raw.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Grafana's interval steps when it picks $__interval from the range and the panel width.
_NICE_INTERVALS = [
    ("1s", 1),
    ("5s", 5),
    ("10s", 10),
    ("30s", 30),
    ("1m", 60),
    ("5m", 300),
    ("10m", 600),
    ("30m", 1800),
    ("1h", 3600),
    ("3h", 10800),
    ("6h", 21600),
    ("12h", 43200),
    ("1d", 86400),
]
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Variable:
    """A variable's selection: `values` as selected, or `all_value` when "All" is selected."""

    values: list[str] = field(default_factory=list)
    all_value: str | None = None
    multi_or_all: bool = True


def interval_for(start: datetime, end: datetime, *, max_data_points: int = 1000) -> str:
    """The interval Grafana would choose for a range shown with about `max_data_points` points."""
    wanted = (end - start).total_seconds() / max_data_points
    for text, seconds in _NICE_INTERVALS:
        if seconds >= wanted:
            return text
    return "1d"


def interval_seconds(interval: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", interval)
    if not match:
        raise ValueError(f"not a Grafana interval: {interval!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    # A function, not a replacement string: values may contain backslashes re.sub would interpret.
    return lambda _match: text


def _literal(t: datetime) -> str:
    return "'" + t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _args(text: str, start: int) -> tuple[list[str], int]:
    """Splits the macro's parenthesised arguments (nesting-aware); returns them and the end index."""
    depth, args, current = 0, [], ""
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(current.strip())
                return [a for a in args if a], i + 1
        elif ch == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += ch
    raise ValueError("unbalanced parentheses in macro")


def expand(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    interval: str | None = None,
    variables: dict[str, Variable] | None = None,
) -> str:
    """Expands template variables, then Grafana's `$__` macros, into plain SQL."""
    interval = interval or interval_for(start, end)
    seconds = interval_seconds(interval)
    # Built-in variables first ($__interval_ms before its prefix $__interval).
    sql = sql.replace("$__interval_ms", str(int(seconds * 1000))).replace(
        "${__interval_ms}", str(int(seconds * 1000))
    )
    sql = sql.replace("${__interval}", interval)
    sql = re.sub(r"\$__interval\b", interval, sql)
    for name, var in (variables or {}).items():
        if var.all_value is not None:
            text = var.all_value
        elif var.multi_or_all:
            text = ",".join(_quote(v) for v in var.values)
        else:
            text = var.values[0] if var.values else ""
        var_pattern = (
            r"\$\{" + re.escape(name) + r"\}|\[\[" + re.escape(name) + r"\]\]|\$" + re.escape(name) + r"\b"
        )
        sql = re.sub(var_pattern, _constant(text), sql)

    out, i = [], 0
    pattern = re.compile(r"\$__(timeFilter|timeFrom|timeTo|timeGroupAlias|timeGroup|time)\b")
    while True:
        m = pattern.search(sql, i)
        if not m:
            out.append(sql[i:])
            break
        out.append(sql[i : m.start()])
        name = m.group(1)
        args: list[str] = []
        j = m.end()
        if j < len(sql) and sql[j] == "(":
            args, j = _args(sql, j)
        out.append(_macro(name, args, start=start, end=end))
        i = j
    return "".join(out)


def _macro(name: str, args: list[str], *, start: datetime, end: datetime) -> str:
    if name == "timeFilter":
        return f"{args[0]} BETWEEN {_literal(start)} AND {_literal(end)}"
    if name == "timeFrom":
        return _literal(start)
    if name == "timeTo":
        return _literal(end)
    if name == "time":
        return f'{args[0]} AS "time"'
    bucket = f"time_bucket('{interval_seconds(args[1].strip(chr(39))):.0f}s',{args[0]})"
    return bucket + (' AS "time"' if name == "timeGroupAlias" else "")
