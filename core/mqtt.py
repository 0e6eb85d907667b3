"""MQTT client construction shared by the API, the CLI and the ingest workers (paho-mqtt 2.x, MQTT 5)."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agritrace.settings import Settings


def new_client(
    client_id: str,
    *,
    username: str,
    password: str,
    manual_ack: bool = False,
    reconnect_delay: tuple[float, float] = (1, 10),
) -> mqtt.Client:
    """Builds an MQTT 5 client with automatic reconnects (first retry after the lower delay,
    doubling up to the upper one)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
    )
    client.username_pw_set(username, password)
    client.reconnect_delay_set(min_delay=reconnect_delay[0], max_delay=reconnect_delay[1])  # type: ignore[arg-type]
    return client


def connect_properties(*, session_expiry: int = 0, receive_maximum: int | None = None) -> Properties:
    """CONNECT properties: how long the broker keeps the session, and our in-flight window."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry:
        props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def connect_blocking(
    client: mqtt.Client,
    settings: Settings,
    *,
    clean_start: bool = True,
    properties: Properties | None = None,
    timeout: float = 10.0,
) -> None:
    """Connects, starts the network thread and waits for CONNACK; raises ConnectionError if refused."""
    done = threading.Event()
    result: dict[str, Any] = {}
    previous = client.on_connect

    def on_connect(c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        result.setdefault("reason", reason)
        done.set()
        if previous is not None:
            previous(c, u, f, reason, p)  # type: ignore[call-arg]

    client.on_connect = on_connect
    client.connect(
        settings.mqtt_host, settings.mqtt_port, keepalive=30, clean_start=clean_start, properties=properties
    )
    client.loop_start()
    ok = done.wait(timeout)
    client.on_connect = previous
    if not ok or result["reason"].is_failure:
        client.loop_stop()
        client.disconnect()
        why = result.get("reason", "no CONNACK")
        raise ConnectionError(f"MQTT {settings.mqtt_host}:{settings.mqtt_port}: {why}")
