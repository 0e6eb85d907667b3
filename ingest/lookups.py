"""The ingest worker's lookups on its parsing thread: is a gateway registered, which channel id does a
reading's name resolve to (registering channels seen for the first time), both cached for the life of
the process. One autocommit connection, reopened after a lost database (`agritrace.outage`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

from agritrace import db
from agritrace.ingest.store import Batch

T = TypeVar("T")


class Stopping(Exception):
    """The worker was told to stop while waiting for the database."""


class Lookups:
    """Registered gateways and channel ids, cached; `open_conn` returns None once the worker stops."""

    def __init__(self, open_conn: Callable[[], db.Conn | None]) -> None:
        self._open_conn = open_conn
        self._conn: db.Conn | None = None
        self._known_gateways: set[str] = set()
        self.channels: dict[str, dict[str, int]] = {}  # gateway -> resolved name -> channel id
        self.units: dict[int, str | None] = {}  # channel id -> its unit

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def gateway_known(self, gateway: str) -> bool:
        if gateway in self._known_gateways:
            return True
        row = self._run(
            lambda conn: conn.execute("SELECT 1 FROM gateways WHERE id = %s", (gateway,)).fetchone()
        )
        if row is not None:
            self._known_gateways.add(gateway)
        return row is not None

    def register_channels(self, batch: Batch) -> None:
        """Registers the batch's channels seen for the first time and caches their ids. Autocommit:
        committed before the readings are written, so a cached id never points at a rolled-back row."""
        missing: dict[tuple[str, str], str | None] = {}
        for gateway, readings in batch.packs:
            known = self.channels.get(gateway, {})
            for r in readings:
                if r.name not in known:
                    missing.setdefault((gateway, r.name), r.unit)
        if missing:
            self._run(lambda conn: self._insert_channels(conn, missing))

    def _insert_channels(self, conn: db.Conn, missing: dict[tuple[str, str], str | None]) -> None:
        keys = sorted(missing)
        conn.execute(
            """INSERT INTO channels (gateway_id, name, unit)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING""",
            ([k[0] for k in keys], [k[1] for k in keys], [missing[k] for k in keys]),
        )
        rows = conn.execute(
            """SELECT c.id, c.gateway_id, c.name, c.unit FROM channels c
               JOIN unnest(%s::text[], %s::text[]) AS m(gateway_id, name) USING (gateway_id, name)""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
        for row in rows:
            self.channels.setdefault(row["gateway_id"], {})[row["name"]] = row["id"]
            self.units[row["id"]] = row["unit"]

    def _run(self, work: Callable[[db.Conn], T]) -> T:
        """Runs `work` on the connection, reopening it after a lost connection."""
        while True:
            if self._conn is None or self._conn.closed:
                self._conn = self._open_conn()
                if self._conn is None:
                    raise Stopping
            try:
                return work(self._conn)
            except psycopg.OperationalError:
                self._conn.close()
