"""Label sheets as background jobs: bounded, with progress, cancellable (issue 12, item 5).

A request only queues a job (`submit`); a runner thread in each API process claims queued jobs one at
a time (FOR UPDATE SKIP LOCKED, so processes never share one), renders the sheet page by page with
`codes.label_sheet_pdf`, writes its progress and a heartbeat after every page, and stops at the next
page once the job is cancelled. A job whose runner died (no heartbeat for STALE) is claimed again.
The size of a job is capped (`AGRITRACE_LABELS_PER_JOB_MAX`), which bounds a runner's memory.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agritrace.db import Conn, connect
from agritrace.errors import AgriTraceError, Conflict, NotFound
from agritrace.settings import get_settings
from agritrace.trace import codes as trace_codes
from agritrace.trace import service as trace_service

log = logging.getLogger("agritrace.labels")

LABELS_PER_PAGE = 24
STALE = "5 minutes"
KEEP = "1 day"
_COLUMNS = "j.id, j.batch_id, j.status, j.total, j.done, j.error, j.created_at, j.started_at, j.finished_at"


class TooManyLabels(AgriTraceError):
    status = 422
    type_slug = "too-many-labels"
    title = "Too many labels for one sheet"


class JobNotFound(NotFound):
    pass


class _Cancelled(Exception):
    pass


def submit(conn: Conn, *, batch_id: int, cooperative_id: int | None, requested_by: str) -> dict[str, Any]:
    """Queues a label sheet of the batch's codes; TooManyLabels past the cap."""
    trace_service.get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)  # 404 if not theirs
    row = conn.execute("SELECT count(*) AS n FROM codes WHERE batch_id = %s", (batch_id,)).fetchone()
    assert row is not None
    cap = get_settings().labels_per_job_max
    if row["n"] > cap:
        raise TooManyLabels(
            f"the batch has {row['n']} codes; one sheet holds at most {cap}: split the batch and issue "
            "its codes per sub-lot"
        )
    job = conn.execute(
        f"""INSERT INTO label_jobs (batch_id, total, requested_by) VALUES (%s, %s, %s)
            RETURNING {_COLUMNS.replace("j.", "")}""",  # noqa: S608 - a module constant
        (batch_id, row["n"], requested_by),
    ).fetchone()
    assert job is not None
    return job


def get(conn: Conn, *, job_id: int, cooperative_id: int | None) -> dict[str, Any]:
    job = conn.execute(
        f"""SELECT {_COLUMNS}, b.lot FROM label_jobs j JOIN batches b ON b.id = j.batch_id
             WHERE j.id = %s AND (%s::bigint IS NULL OR b.cooperative_id = %s)""",  # noqa: S608
        (job_id, cooperative_id, cooperative_id),
    ).fetchone()
    if job is None:
        raise JobNotFound(f"no label job {job_id}")
    return job


def cancel(conn: Conn, *, job_id: int, cooperative_id: int | None) -> dict[str, Any]:
    """Cancels a queued or running job (its runner stops at the next page); 409 once finished."""
    job = get(conn, job_id=job_id, cooperative_id=cooperative_id)
    if job["status"] not in ("queued", "running"):
        raise Conflict(f"label job {job_id} is {job['status']}")
    conn.execute(
        "UPDATE label_jobs SET status = 'cancelled', finished_at = now() WHERE id = %s AND status IN ('queued', 'running')",
        (job_id,),
    )
    return get(conn, job_id=job_id, cooperative_id=cooperative_id)


def pdf(conn: Conn, *, job_id: int, cooperative_id: int | None) -> tuple[dict[str, Any], bytes]:
    job = get(conn, job_id=job_id, cooperative_id=cooperative_id)
    if job["status"] != "done":
        raise Conflict(f"label job {job_id} is {job['status']} ({job['done']} of {job['total']} labels)")
    row = conn.execute("SELECT pdf FROM label_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None and row["pdf"] is not None
    return job, bytes(row["pdf"])


_CLAIM = """
UPDATE label_jobs SET status = 'running', started_at = now(), heartbeat_at = now(), done = 0
 WHERE id = (SELECT id FROM label_jobs
              WHERE status = 'queued' OR (status = 'running' AND heartbeat_at < now() - %s::interval)
              ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, batch_id, total
"""


def run_one(conn: Conn) -> bool:
    """Renders the oldest queued job, if any; returns whether there was one. `conn` autocommits."""
    conn.execute("DELETE FROM label_jobs WHERE finished_at < now() - %s::interval", (KEEP,))
    job = conn.execute(_CLAIM, (STALE,)).fetchone()
    if job is None:
        return False
    job_id = job["id"]
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done % LABELS_PER_PAGE == 0 or done == job["total"]:
            row = conn.execute(
                "UPDATE label_jobs SET done = %s, heartbeat_at = now() WHERE id = %s RETURNING status",
                (done, job_id),
            ).fetchone()
            if row is None or row["status"] != "running":
                raise _Cancelled

    try:
        batch = trace_service.get_batch(conn, batch_id=job["batch_id"])
        labels = trace_codes.list_codes(conn, batch_id=job["batch_id"])
        sheet = trace_codes.label_sheet_pdf(
            labels=labels[: job["total"]],
            product_name=trace_codes.label_name(batch),
            lot=batch["lot"],
            progress=progress,
        )
    except _Cancelled:
        log.info("label job %s cancelled after %s labels", job_id, done)
        return True
    except Exception as exc:
        log.exception("label job %s failed", job_id)
        conn.execute(
            "UPDATE label_jobs SET status = 'failed', error = %s, finished_at = now() WHERE id = %s",
            (str(exc)[:500], job_id),
        )
        return True
    conn.execute(
        """UPDATE label_jobs SET status = 'done', pdf = %s, done = total, finished_at = now()
            WHERE id = %s AND status = 'running'""",
        (sheet, job_id),
    )
    return True


class Runner:
    """The label-job thread of one API process."""

    def __init__(self, url: str, *, poll: float = 1.0) -> None:
        self._url = url
        self._poll = poll
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="label-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self._url, autocommit=True) as conn:
                    while not self._stop.is_set() and run_one(conn):
                        pass
            except Exception:
                log.exception("label jobs: runner error")
            self._wake.wait(self._poll)
            self._wake.clear()
