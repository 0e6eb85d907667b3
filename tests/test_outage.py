"""The one policy for a lost database (agritrace.outage): wait and try again, never exit for it."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from agritrace import outage

AGRITRACE = str(Path(sys.executable).parent / "agritrace")
NOWHERE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"


def test_the_retry_delays_grow_to_five_seconds_and_stay_there() -> None:
    assert list(itertools.islice(outage.delays(), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_process_waits_for_the_database_until_it_answers() -> None:
    tries: list[int] = []

    def open_() -> str:
        tries.append(1)
        if len(tries) < 3:
            psycopg.connect(NOWHERE)  # refused: the database is away
        return "connected"

    assert outage.when_up(open_, stop=threading.Event(), what="test") == "connected"
    assert len(tries) == 3


def test_a_process_told_to_stop_stops_waiting_for_the_database() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert outage.when_up(lambda: psycopg.connect(NOWHERE), stop=stop, what="test") is None


def test_a_periodic_job_survives_a_lost_database_and_runs_again() -> None:
    stop = threading.Event()
    rounds: list[str] = []

    def round_() -> None:
        rounds.append("tried")
        if len(rounds) == 1:
            psycopg.connect(NOWHERE)
        if len(rounds) == 3:
            stop.set()

    outage.run_every(0.01, round_, what="test", stop=stop)
    assert rounds == ["tried", "tried", "tried"]


def test_a_periodic_job_ends_on_an_error_that_is_not_an_outage() -> None:
    def round_() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        outage.run_every(0.01, round_, what="test", stop=threading.Event())


@pytest.mark.parametrize(
    "command",
    [("dashboards", "rollup", "--every", "1"), ("audit", "checkpoint", "--every", "1", "--no-publish")],
)
def test_the_periodic_processes_wait_out_a_lost_database_instead_of_exiting(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        AGRITRACE_DATABASE_URL=NOWHERE,
        AGRITRACE_AUDIT_CHECKPOINT_DIR=str(tmp_path),
    )
    process = subprocess.Popen(
        [AGRITRACE, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(4)  # it used to exit at once (rollup) or keep going only on its own timer
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "database unavailable" in stderr or "trying again" in stderr, stderr
