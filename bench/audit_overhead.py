"""What the audit trail costs a write: single-row INSERT+UPDATE transactions into a table with and
without the audit trigger, in a scratch database of its own (created from template1, dropped after).

    .venv/bin/python bench/audit_overhead.py [--rows 2000]

The unaudited figure is the ceiling measured in the same run.
"""

from __future__ import annotations

import argparse
import secrets
import time

from psycopg import sql

from agritrace import audit, db
from agritrace.api import tokens


def run(url: str, *, table: str, rows: int, actor: str) -> float:
    """Rows per second, one transaction per row (an insert and an update), as the API writes: the
    application's login, naming a live token as the actor (which the database checks)."""
    with db.connect(url) as conn:
        start = time.perf_counter()
        for i in range(rows):
            audit.set_actor(conn, actor)
            conn.execute(
                sql.SQL("INSERT INTO {} (id, kg) VALUES (%s, %s)").format(sql.Identifier(table)), (i, 1)
            )
            conn.execute(sql.SQL("UPDATE {} SET kg = 2 WHERE id = %s").format(sql.Identifier(table)), (i,))
            conn.commit()
        return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    with db.scratch_database(f"agritrace_bench_{secrets.token_hex(4)}") as url:
        with db.connect(db.owner_url(url), autocommit=True) as conn:  # DDL: the owner's
            for t in ("plain", "audited"):
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, kg numeric)").format(sql.Identifier(t))
                )
            conn.execute("SELECT audit_attach('audited')")
        with db.connect(url) as conn:
            actor = tokens.Principal(
                token_id=tokens.issue(conn, role="admin")["id"], role="admin", cooperative_id=None
            ).actor
            conn.commit()
        ceiling = run(url, table="plain", rows=args.rows, actor=actor)
        audited = run(url, table="audited", rows=args.rows, actor=actor)
        with db.connect(url) as conn:
            start = time.perf_counter()
            findings = audit.verify(conn)
            verify_s = time.perf_counter() - start
            entries = conn.execute("SELECT count(*) AS n FROM audit_log").fetchone()
        print(f"rows={args.rows} (each: insert + update, one transaction)")
        print(f"ceiling, no audit trigger : {ceiling:9.0f} rows/s")
        print(f"with the audit trigger    : {audited:9.0f} rows/s ({audited / ceiling:.0%} of the ceiling)")
        n = entries["n"] if entries else 0
        print(
            f"audit verify              : {n} entries in {verify_s:.2f} s ({n / verify_s:.0f} entries/s), ok={not findings}"
        )


if __name__ == "__main__":
    main()
