"""The broker admits only known accounts; the ingest account can read gateway topics."""

from __future__ import annotations

import secrets
import threading

import paho.mqtt.client as mqtt
import pytest

from agritrace.devices import broker
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import get_settings


def test_broker_refuses_anonymous_and_wrong_passwords() -> None:
    settings = get_settings()
    ingest = broker.ingest_username(settings, 1)
    for username, password in [("", ""), (ingest, "wrong-" + secrets.token_hex(4))]:
        client = new_client(f"t-{secrets.token_hex(4)}", username=username, password=password)
        with pytest.raises(ConnectionError):
            connect_blocking(client, settings, timeout=5)


def test_ingest_account_setup_is_idempotent_and_can_subscribe() -> None:
    settings = get_settings()
    settings = settings.model_copy(
        update={"ingest_client_prefix": f"agritrace-ingest-t{secrets.token_hex(4)}"}
    )
    with broker.admin_session(settings) as dynsec:
        broker.ensure_ingest_account(dynsec, settings, 1)
        broker.ensure_ingest_account(dynsec, settings, 1)
    username = broker.ingest_username(settings, 1)
    client = new_client(
        username, username=username, password=settings.mqtt_ingest_password.get_secret_value()
    )
    connect_blocking(client, settings)
    granted = threading.Event()
    client.on_subscribe = lambda _c, _u, _m, codes, _p: granted.set() if not codes[0].is_failure else None
    client.subscribe("$share/t/agritrace/v1/+/senml", qos=1)
    assert granted.wait(5)
    client.disconnect()
    client.loop_stop()
    assert isinstance(client, mqtt.Client)
    with broker.admin_session(settings) as dynsec:
        dynsec.run({"command": "deleteClient", "username": username})
