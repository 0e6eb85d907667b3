"""The simulator gives the demo realistic gateways: valid SenML, daily cycles, dropouts, excursions."""

from __future__ import annotations

import json
import random

import pytest

from agritrace.ingest import simulate as sim
from agritrace.ingest.senml import parse_pack

NOON_CST = 1_780_000_000 - (1_780_000_000 % 86400) + 6 * 3600  # 14:00 in China Standard Time
MIDNIGHT_CST = NOON_CST - 14 * 3600


@pytest.mark.parametrize("kind", sorted(sim.KINDS))
def test_every_kind_of_gateway_sends_valid_senml(kind: str) -> None:
    gw = sim.SimGateway("gw-sim", "x", kind)
    pack = gw.pack(NOON_CST, random.Random(1), [])
    readings, skipped = parse_pack(json.dumps(pack).encode(), now=NOON_CST)
    assert skipped == 0 and len(readings) == len(sim.KINDS[kind][1])
    assert all(r.time == NOON_CST for r in readings)


def test_mango_cold_room_stays_in_its_band_and_the_orchard_is_dark_at_night() -> None:
    rng = random.Random(7)
    room = sim.SimGateway("gw-room", "x", "mango-coldroom")
    temps = [room.pack(NOON_CST + i * 600, rng, [])[0]["v"] for i in range(500)]
    assert min(temps) > 10 and max(temps) < 13
    orchard = sim.SimGateway("gw-plot", "x", "citrus-orchard")

    def light(t: float) -> float:
        return float(next(r["v"] for r in orchard.pack(t, rng, []) if r.get("n") == "light"))

    assert light(MIDNIGHT_CST) == 0 and light(NOON_CST) > 50000


def test_an_injected_excursion_shifts_only_its_signal_during_its_window() -> None:
    gw = sim.SimGateway("gw-room", "x", "mango-coldroom")
    exc = sim.Excursion.parse("gw-room:temp:+6:30", NOON_CST)
    during = gw.pack(NOON_CST + 60, random.Random(1), [exc])
    before = gw.pack(NOON_CST + 60, random.Random(1), [])
    after = gw.pack(NOON_CST + 31 * 60, random.Random(1), [exc])
    assert during[0]["v"] == pytest.approx(before[0]["v"] + 6)
    assert during[1]["v"] == before[1]["v"]  # humidity untouched
    assert after[0]["v"] < 13
