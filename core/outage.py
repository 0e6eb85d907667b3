"""What a long-running process does when it loses the database: one policy, stated once.

The ingest workers, the dashboards rollup loop and the audit checkpointer never exit because
PostgreSQL went away. Each logs a warning and tries again after 0.5 s, then 1, 2, 4 and every 5 s
until the database is back (or the process is told to stop); the first success resets the delays.
Meanwhile nothing is acknowledged that was not committed: an ingest worker's messages wait in flight
at the broker, a rollup or checkpoint round simply runs again. (The cold-chain evaluator,
`coldchain/evaluator.py`, still has its own 2 s loop: see docs/architecture.md.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 5.0


def delays() -> Iterator[float]:
    """Seconds to wait before each new try: 0.5, 1, 2, 4, then 5 forever."""
    delay = FIRST_DELAY
    while True:
        yield delay
        delay = min(MAX_DELAY, delay * 2)


def when_up(open_: Callable[[], T], *, stop: threading.Event, what: str) -> T | None:
    """Calls `open_` (typically: open a connection) until it stops raising `psycopg.OperationalError`,
    waiting between tries as the policy says; None if `stop` is set first."""
    for delay in delays():
        if stop.is_set():
            return None
        try:
            return open_()
        except psycopg.OperationalError as exc:
            log.warning("%s: database unavailable (%s); trying again in %g s", what, exc, delay)
            if stop.wait(delay):
                return None
    raise AssertionError("unreachable")  # pragma: no cover - delays() never ends


def run_every(
    every: float,
    round_: Callable[[], object],
    *,
    what: str,
    stop: threading.Event | None = None,
    transient: tuple[type[Exception], ...] = (),
) -> None:
    """Runs `round_` every `every` seconds until `stop` is set (forever without one). A round that
    loses the database (or raises one of `transient`) is tried again as the policy says, sooner than
    `every`, instead of ending the loop."""
    stop = stop or threading.Event()
    lost: tuple[type[Exception], ...] = (psycopg.OperationalError, *transient)
    retry = delays()
    while True:
        started = time.monotonic()
        try:
            round_()
        except lost as exc:
            wait = next(retry)
            log.warning("%s: %s; trying again in %g s", what, exc, wait)
        else:
            retry = delays()
            wait = max(0.0, every - (time.monotonic() - started))
        if stop.wait(wait):
            return
