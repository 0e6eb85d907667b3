"""The audit trail: who changed what, hash-chained in the database; verification and proofs.

The log is written by the `audit_record()` trigger (migration 0002); this module reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agritrace.db import Conn
from agritrace.errors import NotFound

# Recomputes every entry's hash and its link to the entry before it, in one pass.
_CHAIN_SQL = """
SELECT id, table_name, row_key, action,
       prev_hash = coalesce(lag(hash) OVER (ORDER BY id), audit_genesis()) AS linked,
       hash = audit_entry_hash(prev_hash, table_name, row_key, action, actor, at, before, after) AS intact
  FROM audit_log
"""


# Audited columns whose values are secrets or may carry one, shown only to admins (`history`):
# a webhook URL's path or query is often its key ("https://hooks.example.com/T0/B0/XXXX",
# "...?key=..."), so others see its origin; a token's prefix is the start of the token.
SECRET_COLUMNS: dict[str, dict[str, str]] = {
    "coldchain_webhooks": {"url": "origin"},
    "api_tokens": {"prefix": "hidden"},
}
# Anywhere else (in any text), a URL with credentials, a query or a fragment is cut to its origin.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s]+")
_URL_WITH_SECRETS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#\s]*@|[^?#\s]*[?#])")
HIDDEN = "[redacted]"


@dataclass(frozen=True)
class Finding:
    """One thing `verify` found wrong; `entry_id` names the audit_log row when there is one."""

    problem: str
    entry_id: int | None = None
    table_name: str | None = None
    row_key: str | None = None

    def __str__(self) -> str:
        where = f"{self.table_name} {self.row_key}"
        if self.entry_id is not None:
            return f"audit_log entry {self.entry_id} ({where}, {self.problem})"
        return f"{where}: {self.problem}"


def set_actor(conn: Conn, actor: str) -> None:
    """Names who is acting for the rest of this transaction (recorded by the audit trigger)."""
    conn.execute("SELECT set_config('agritrace.actor', %s, true)", (actor,))


def audited_tables(conn: Conn) -> list[str]:
    """The tables with the audit trigger attached."""
    rows = conn.execute("SELECT table_name FROM audit_tables ORDER BY table_name").fetchall()
    return [str(r["table_name"]) for r in rows]


def verify(conn: Conn) -> list[Finding]:
    """Checks the chain (first broken entry) and that every audited row matches its last entry."""
    findings: list[Finding] = []
    bad = conn.execute(
        f"SELECT * FROM ({_CHAIN_SQL}) c WHERE NOT (linked AND intact) ORDER BY id LIMIT 1"  # noqa: S608 - constant
    ).fetchone()
    if bad is not None:
        problem = (
            "its content does not match its hash" if not bad["intact"] else "an entry before it is missing"
        )
        findings.append(Finding(problem, bad["id"], bad["table_name"], bad["row_key"]))
    for table in audited_tables(conn):
        for row in conn.execute("SELECT row_key, problem FROM audit_drift(%s)", (table,)).fetchall():
            findings.append(Finding(str(row["problem"]), None, table, str(row["row_key"])))
    # The evidence behind recorded summaries and resolved alerts (late readings are recorded again by
    # `audit checkpoint`, not reported here).
    for row in conn.execute("SELECT * FROM audit_evidence_drift() WHERE NOT late").fetchall():
        findings.append(Finding(str(row["problem"]), None, str(row["table_name"]), str(row["row_key"])))
    return findings


def head(conn: Conn) -> dict[str, Any]:
    """The newest entry's id and hash: publish it elsewhere to detect a rewritten or truncated tail."""
    row = conn.execute(
        "SELECT id, encode(hash, 'hex') AS hash FROM audit_log ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return {"id": row["id"], "hash": row["hash"]} if row else {"id": 0, "hash": "00" * 32}


def entity_owner(conn: Conn, *, table: str, key: str) -> int | None:
    """The cooperative an audited entity belongs to (from its recorded states), None if nobody's.

    Trace records (events, custody, certificates of a batch, codes ...) belong to their batch's
    cooperative; a lineage edge to its child batch's (the lot it went into)."""
    row = conn.execute(
        """SELECT CASE
                    -- Webhooks are staff configuration (where alerts are sent), nobody's own.
                    WHEN %(t)s = 'coldchain_webhooks' THEN NULL
                    WHEN %(t)s = 'cooperatives' THEN %(k)s
                    WHEN %(t)s = 'channels' THEN (SELECT g.cooperative_id::text FROM gateways g
                                                   WHERE g.id = coalesce(l.after, l.before) ->> 'gateway_id')
                    -- Cold chain: an alert and a channel's profile belong to the channel's gateway.
                    WHEN %(t)s IN ('alerts', 'coldchain_channel_profiles') THEN
                        (SELECT g.cooperative_id::text FROM channels c JOIN gateways g ON g.id = c.gateway_id
                          WHERE c.id::text = coalesce(l.after, l.before) ->> 'channel_id')
                    WHEN coalesce(l.after, l.before) ? 'cooperative_id'
                         AND coalesce(l.after, l.before) ->> 'cooperative_id' IS NOT NULL
                      THEN coalesce(l.after, l.before) ->> 'cooperative_id'
                    ELSE (SELECT b.cooperative_id::text FROM batches b
                           WHERE b.id::text = coalesce(coalesce(l.after, l.before) ->> 'batch_id',
                                                       coalesce(l.after, l.before) ->> 'child_id'))
                  END AS owner
             FROM audit_log l WHERE l.table_name = %(t)s AND l.row_key = %(k)s
            ORDER BY l.id DESC LIMIT 1""",
        {"t": table, "k": key},
    ).fetchone()
    if row is None or row["owner"] is None or not str(row["owner"]).isdigit():
        return None
    return int(row["owner"])


def url_origin(url: str) -> str:
    """`https://hooks.example.com/…`: scheme, host and port only, never userinfo, path or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return HIDDEN
    if not parts.scheme or not host:
        return HIDDEN
    host = f"[{host}]" if ":" in host else host
    rest = "/…" if url.rstrip("/") != f"{parts.scheme}://{parts.netloc}" else ""
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{rest}"


def _scrub(value: Any, path: str, rule: str | None, found: list[str]) -> Any:
    if value is None:
        return None
    if rule == "hidden":
        found.append(path)
        return HIDDEN
    if isinstance(value, str):
        if rule == "origin":
            shown = url_origin(value)
        else:
            shown = _URL.sub(lambda m: url_origin(m[0]) if _URL_WITH_SECRETS.match(m[0]) else m[0], value)
        if shown != value:
            found.append(path)
        return shown
    if isinstance(value, dict):
        return {k: _scrub(v, f"{path}.{k}", None, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, f"{path}.{i}", None, found) for i, v in enumerate(value)]
    return value


def redact(table: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as a non-admin sees it: secret-bearing values cut down (`SECRET_COLUMNS`, URLs with
    credentials or a query) and listed in `redacted`. Its `canonical` text would show them, so it is
    withheld too: `hash`, `prev_hash` and `valid` (the server's check) remain; admins can re-hash."""
    rules = SECRET_COLUMNS.get(table, {})
    found: list[str] = []
    shown = {
        side: None
        if entry[side] is None
        else {k: _scrub(v, f"{side}.{k}", rules.get(k), found) for k, v in entry[side].items()}
        for side in ("before", "after")
    }
    if not found:
        return {**entry, "redacted": []}
    return {**entry, **shown, "canonical": None, "redacted": [*found, "canonical"]}


def history(conn: Conn, *, table: str, key: str, reveal_secrets: bool = False) -> dict[str, Any]:
    """An entity's entries with what an outsider needs to re-check each hash; unless `reveal_secrets`
    (admins), secret-bearing values are redacted (`redact`)."""
    if table not in audited_tables(conn):
        raise NotFound(f"no audited table named {table!r}")
    rows = conn.execute(
        """SELECT l.id, l.action, l.actor, l.at, l.before, l.after,
                  encode(l.prev_hash, 'hex') AS prev_hash, encode(l.hash, 'hex') AS hash,
                  audit_canonical(l.table_name, l.row_key, l.action, l.actor, l.at, l.before, l.after)
                      AS canonical,
                  l.hash = audit_entry_hash(l.prev_hash, l.table_name, l.row_key, l.action, l.actor,
                                            l.at, l.before, l.after)
                  AND l.prev_hash = coalesce((SELECT p.hash FROM audit_log p WHERE p.id < l.id
                                               ORDER BY p.id DESC LIMIT 1), audit_genesis()) AS valid
             FROM audit_log l
            WHERE l.table_name = %s AND l.row_key = %s
            ORDER BY l.id""",
        (table, key),
    ).fetchall()
    if not rows:
        raise NotFound(f"no audit entries for {table} {key!r}")
    entries = [{**r, "redacted": []} if reveal_secrets else redact(table, r) for r in rows]
    return {"table": table, "key": key, "entries": entries, "head": head(conn)}
