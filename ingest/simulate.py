"""Gateway simulator: mango cold rooms and trucks, citrus orchards, tea gardens and tea stores.

Readings follow a diurnal cycle with noise; gateways drop out and then forward what they stored
in a burst (absolute SenML times, so late readings land where they belong); excursions (a cold-room
door left open, a truck's cooling failing) can be injected. Used by `make up` for demo data.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agritrace import db
from agritrace.devices import broker, service
from agritrace.mqtt import new_client
from agritrace.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signal:
    """One sensor: a mean, a daily swing peaking at `peak_hour`, noise, and physical bounds."""

    name: str
    unit: str
    mean: float
    swing: float = 0.0
    noise: float = 0.0
    peak_hour: float = 14.0
    low: float = -math.inf
    high: float = math.inf

    def at(self, t: float, rng: random.Random) -> float:
        hour = (t / 3600 + 8) % 24  # China Standard Time: the sun peaks around 14:00 local
        value = self.mean + self.swing * math.cos((hour - self.peak_hour) / 24 * 2 * math.pi)
        return round(min(self.high, max(self.low, value + rng.gauss(0, self.noise))), 2)


KINDS: dict[str, tuple[str, list[Signal]]] = {
    # Mango (百色芒果) wants 10-13 °C, 85-95 %RH; below ~10 °C it suffers chilling injury.
    "mango-coldroom": ("coldroom1", [Signal("temp", "Cel", 11.5, 0.3, 0.15), Signal("rh", "%RH", 90, 1.5, 0.8, 4, 0, 100)]),
    "mango-truck": ("truck1", [Signal("temp", "Cel", 12.0, 0.8, 0.3), Signal("rh", "%RH", 88, 2, 1, 4, 0, 100),
                               Signal("battery", "V", 12.6, 0.2, 0.05)]),
    # Citrus orchard (沃柑, 砂糖橘): open air, a strong daily cycle.
    "citrus-orchard": ("plot-a", [Signal("air/temp", "Cel", 22, 6, 0.4), Signal("air/rh", "%RH", 72, -15, 2, 14, 0, 100),
                                  Signal("soil/moisture", "%", 32, 1, 0.3), Signal("light", "lx", 30000, 45000, 2000, 13, 0)]),
    "tea-garden": ("garden-1", [Signal("air/temp", "Cel", 18, 5, 0.4), Signal("air/rh", "%RH", 80, -10, 2, 14, 0, 100),
                                Signal("soil/moisture", "%", 38, 1, 0.3), Signal("light", "lx", 25000, 35000, 2000, 13, 0)]),
    # Dry tea storage (GB/T 30375): green tea at most 10 °C and 50 %RH.
    "tea-store": ("store-1", [Signal("temp", "Cel", 7.5, 0.3, 0.1), Signal("rh", "%RH", 42, 2, 0.8, 14, 0, 100)]),
}  # fmt: skip

DEMO: list[tuple[str, str, str]] = [  # gateway id, cooperative, kind
    ("demo-mango-coldroom-1", "百色芒果示范合作社", "mango-coldroom"),
    ("demo-mango-truck-1", "百色芒果示范合作社", "mango-truck"),
    ("demo-citrus-orchard-1", "沃柑示范合作社", "citrus-orchard"),
    ("demo-tea-garden-1", "高山茶示范合作社", "tea-garden"),
    ("demo-tea-store-1", "高山茶示范合作社", "tea-store"),
]


@dataclass(frozen=True)
class Excursion:
    """Adds `delta` to one signal of one gateway (or every gateway: "*") from `start` for `seconds`."""

    gateway: str
    signal: str
    delta: float
    start: float
    seconds: float

    @classmethod
    def parse(cls, spec: str, now: float) -> Excursion:
        """GATEWAY:SIGNAL:DELTA:MINUTES, e.g. demo-mango-coldroom-1:temp:+6:30 (starting now)."""
        gateway, signal, delta, minutes = spec.rsplit(":", 3)
        return cls(gateway, signal, float(delta), now, float(minutes) * 60)

    def applies(self, gateway: str, signal: str, t: float) -> bool:
        return (
            self.gateway in ("*", gateway)
            and self.signal == signal
            and self.start <= t < self.start + self.seconds
        )


@dataclass
class SimGateway:
    """One simulated gateway: its credentials, what it measures, and what it holds while offline."""

    gateway_id: str
    password: str
    kind: str
    client: mqtt.Client | None = None
    offline_until: float = 0.0
    stored: list[list[dict[str, Any]]] = field(default_factory=list)

    def pack(self, t: float, rng: random.Random, excursions: list[Excursion]) -> list[dict[str, Any]]:
        """A SenML pack for time t (absolute times: it may be forwarded much later)."""
        asset, signals = KINDS[self.kind]
        records: list[dict[str, Any]] = [{"bn": f"{asset}/", "bt": round(t, 3)}]
        for i, sig in enumerate(signals):
            value = sig.at(t, rng) + sum(
                e.delta for e in excursions if e.applies(self.gateway_id, sig.name, t)
            )
            record = {"n": sig.name, "u": sig.unit, "v": round(value, 2)}
            if i == 0:
                records[0].update(record)
            else:
                records.append(record)
        return records


def connect(gw: SimGateway, settings: Settings) -> None:
    """Connects with a will ("offline") and a birth message ("online") on the status topic."""
    client = new_client(gw.gateway_id, username=gw.gateway_id, password=gw.password)
    status = f"agritrace/v1/{gw.gateway_id}/status"
    client.will_set(status, "offline", qos=1, retain=True)
    client.on_connect = lambda c, _u, _f, reason, _p: (
        None if reason.is_failure else c.publish(status, "online", qos=1, retain=True)
    )
    client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=30)
    client.loop_start()
    gw.client = client


def drop(gw: SimGateway) -> None:
    """Goes offline the way a gateway losing its uplink does: the broker publishes its will."""
    if gw.client is not None:
        gw.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        gw.client.loop_stop()
        gw.client = None


def tick(
    gateways: list[SimGateway],
    settings: Settings,
    *,
    now: float,
    rng: random.Random,
    excursions: list[Excursion],
    dropout: float,
) -> int:
    """One round: every gateway measures; online ones publish (and forward what they stored)."""
    sent = 0
    for gw in gateways:
        pack = gw.pack(now, rng, excursions)
        if gw.offline_until > now:
            gw.stored.append(pack)
            continue
        if gw.client is None:
            connect(gw, settings)
        elif rng.random() < dropout:
            drop(gw)
            gw.offline_until = now + rng.uniform(30, 600)
            gw.stored.append(pack)
            continue
        assert gw.client is not None
        # Store-and-forward: the backlog goes first, in one burst.
        for old in [*gw.stored, pack]:
            gw.client.publish(f"agritrace/v1/{gw.gateway_id}/senml", json.dumps(old), qos=1)
            sent += 1
        gw.stored.clear()
    return sent


def state_file() -> Path:
    """Where demo credentials are kept (mode 600): the local stack's state directory."""
    return (get_settings().state_dir or Path.cwd() / ".local") / "simulator-gateways.json"


def demo_gateways(settings: Settings, path: Path | None = None, *, prefix: str = "demo") -> list[SimGateway]:
    """Provisions the demo cooperatives and gateways once; later runs reuse the stored credentials."""
    path = path or state_file()
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    result = []
    with db.connect(settings.database_url) as conn, broker.admin_session(settings) as dynsec:
        for demo_id, cooperative, kind in DEMO:
            gateway_id = demo_id.replace("demo", prefix, 1)
            known = conn.execute("SELECT 1 FROM gateways WHERE id = %s", (gateway_id,)).fetchone() is not None
            password = stored.get(gateway_id)
            if not known:
                coop = service.get_or_create_cooperative(conn, name=cooperative)
                try:
                    gateway_id, password = service.create_gateway(
                        conn,
                        dynsec=dynsec,
                        cooperative_id=coop,
                        gateway_id=gateway_id,
                        description=f"demo {kind}",
                    )
                except broker.BrokerError:  # the broker kept a client our database forgot (a reset)
                    broker.remove_gateway(dynsec, gateway_id)
                    gateway_id, password = service.create_gateway(
                        conn,
                        dynsec=dynsec,
                        cooperative_id=coop,
                        gateway_id=gateway_id,
                        description=f"demo {kind}",
                    )
            elif password is None:
                password = service.rotate_credentials(conn, dynsec=dynsec, gateway_id=gateway_id)
            else:
                # The password may be stale (broker state reset): setting it again is idempotent.
                broker.set_gateway_password(dynsec, gateway_id, password)
            conn.commit()
            stored[gateway_id] = password
            result.append(SimGateway(gateway_id, password, kind))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(stored, indent=2))
    return result


def load_gateways(path: Path, kind: str | None) -> list[SimGateway]:
    """Gateways from a file of `gateways create --json` documents (a JSON list), with an optional "kind"."""
    docs = json.loads(path.read_text())
    docs = [docs] if isinstance(docs, dict) else docs  # one `gateways create --json` output
    kinds = sorted(KINDS)
    return [
        SimGateway(d["gateway_id"], d["mqtt"]["password"], d.get("kind") or kind or kinds[i % len(kinds)])
        for i, d in enumerate(docs)
    ]


def run(
    gateways: list[SimGateway],
    settings: Settings,
    *,
    interval: float,
    rounds: int | None,
    excursions: list[Excursion],
    dropout: float,
    seed: int | None,
    stop: threading.Event | None = None,
) -> int:
    """Publishes every `interval` seconds for `rounds` rounds (None: until stopped); returns packs sent."""
    rng = random.Random(seed)
    stop = stop or threading.Event()
    sent, done = 0, 0
    next_at = time.time()
    while not stop.is_set() and (rounds is None or done < rounds):
        sent += tick(gateways, settings, now=time.time(), rng=rng, excursions=excursions, dropout=dropout)
        done += 1
        next_at += interval
        stop.wait(max(0.0, next_at - time.time()))
    for gw in gateways:
        if gw.client is not None:
            gw.client.disconnect()
            gw.client.loop_stop()
    return sent
