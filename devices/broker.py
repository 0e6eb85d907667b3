"""The broker's accounts, managed through Mosquitto's dynamic-security plugin ($CONTROL topic)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt

from agritrace.errors import AgriTraceError
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import Settings, get_settings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
INGEST_ROLE = "agritrace-ingest"
# Errors that mean "already as wanted" when (re)applying the accounts idempotently.
ALREADY = (
    "already exists",
    "Role already exists",
    "Client already exists",
    "ACL with this topic already exists",
)


class BrokerError(AgriTraceError):
    status = 502
    type_slug = "broker-error"
    title = "The MQTT broker refused or did not answer"


class DynamicSecurity:
    """Sends dynamic-security commands over an admin MQTT session and waits for each answer."""

    def __init__(self, client: mqtt.Client, *, timeout: float = 5.0) -> None:
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._responses: list[dict[str, Any]] = []
        self._tag = ""
        client.message_callback_add(RESPONSE_TOPIC, self._on_response)
        # Commands are sent only once the answers can reach us (re-sending would repeat them).
        subscribed = threading.Event()
        client.on_subscribe = lambda _c, _u, _mid, _codes, _p: subscribed.set()
        result, _mid = client.subscribe(RESPONSE_TOPIC, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS or not subscribed.wait(timeout):
            raise BrokerError(f"cannot subscribe to {RESPONSE_TOPIC}: {mqtt.error_string(result)}")

    @property
    def client(self) -> mqtt.Client:
        """The admin session the commands go over."""
        return self._client

    def _on_response(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        # Every admin session sees every answer on the response topic: keep only our own.
        responses = json.loads(msg.payload).get("responses", [])
        if responses and str(responses[0].get("correlationData", "")).startswith(self._tag):
            self._responses = responses
            self._answered.set()

    def run(self, *commands: dict[str, Any], tolerate: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Runs commands in one request; raises BrokerError on any error not in `tolerate`."""
        with self._lock:
            self._tag = secrets.token_hex(8)
            batch = [dict(c, correlationData=f"{self._tag}-{i}") for i, c in enumerate(commands)]
            self._answered.clear()
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            if not self._answered.wait(self._timeout):
                raise BrokerError("no answer from the broker's dynamic-security plugin")
            responses = list(self._responses)
        for r in responses:
            error = r.get("error")
            if error and not any(t in error for t in tolerate):
                raise BrokerError(f"{r.get('command')}: {error}")
        return responses


@contextmanager
def admin_session(settings: Settings | None = None) -> Iterator[DynamicSecurity]:
    """A short-lived admin session for the CLI and tests."""
    s = settings or get_settings()
    client = new_client(
        f"agritrace-admin-{secrets.token_hex(4)}",
        username=s.mqtt_admin_username,
        password=s.mqtt_admin_password.get_secret_value(),
    )
    try:
        connect_blocking(client, s)
    except ConnectionError as exc:
        raise BrokerError(str(exc)) from exc
    try:
        yield DynamicSecurity(client)
    finally:
        client.disconnect()
        client.loop_stop()


def ensure_ingest_account(dynsec: DynamicSecurity, settings: Settings) -> None:
    """Creates or refreshes the ingest workers' account: read every gateway topic, publish alerts."""
    acls = [
        ("subscribePattern", "agritrace/v1/#"),
        ("subscribePattern", "$share/+/agritrace/v1/#"),
        ("publishClientReceive", "agritrace/v1/#"),
        ("publishClientSend", "agritrace/v1/alerts/#"),
    ]
    dynsec.run({"command": "createRole", "rolename": INGEST_ROLE}, tolerate=ALREADY)
    dynsec.run(
        *[
            {"command": "addRoleACL", "rolename": INGEST_ROLE, "acltype": t, "topic": topic, "allow": True}
            for t, topic in acls
        ],
        tolerate=ALREADY,
    )
    username = settings.mqtt_ingest_username
    password = settings.mqtt_ingest_password.get_secret_value()
    dynsec.run({"command": "createClient", "username": username, "password": password}, tolerate=ALREADY)
    dynsec.run(
        {"command": "setClientPassword", "username": username, "password": password},
        {"command": "enableClient", "username": username},
    )
    # Mosquitto 2.0 answers "Internal error" when a client is given a role it already has.
    if INGEST_ROLE not in client_roles(dynsec, username):
        dynsec.run({"command": "addClientRole", "username": username, "rolename": INGEST_ROLE})


def client_roles(dynsec: DynamicSecurity, username: str) -> list[str]:
    """The roles a broker client has."""
    (response,) = dynsec.run({"command": "getClient", "username": username})
    return [r["rolename"] for r in response.get("data", {}).get("client", {}).get("roles", [])]


def gateway_role(gateway_id: str) -> str:
    """The broker role that lets one gateway publish under its own topic prefix only."""
    return f"agritrace-gateway-{gateway_id}"


def new_password() -> str:
    """A fresh gateway password (shown once; Mosquitto keeps only a salted hash)."""
    return secrets.token_urlsafe(24)


def provision_gateway(dynsec: DynamicSecurity, gateway_id: str, password: str) -> None:
    """Creates the gateway's client and role; publishing is allowed only on agritrace/v1/{id}/#."""
    role = gateway_role(gateway_id)
    dynsec.run({"command": "createRole", "rolename": role}, tolerate=ALREADY)
    dynsec.run(
        {
            "command": "addRoleACL",
            "rolename": role,
            "acltype": "publishClientSend",
            "topic": f"agritrace/v1/{gateway_id}/#",
            "allow": True,
        },
        tolerate=ALREADY,
    )
    (created,) = dynsec.run(
        {
            "command": "createClient",
            "username": gateway_id,
            "password": password,
            "roles": [{"rolename": role}],
        },
        tolerate=ALREADY,
    )
    if created.get("error"):
        # The caller has just inserted the gateway's row, so no registered gateway owns this client:
        # it is left over (a registration rolled back after the broker step, a database restored
        # from backup). Take it over with the new password, and drop any session using the old one.
        set_gateway_password(dynsec, gateway_id, password)
        if role not in client_roles(dynsec, gateway_id):
            dynsec.run({"command": "addClientRole", "username": gateway_id, "rolename": role})
        set_gateway_enabled(dynsec, gateway_id, False)
        set_gateway_enabled(dynsec, gateway_id, True)


def set_gateway_password(dynsec: DynamicSecurity, gateway_id: str, password: str) -> None:
    """Replaces the gateway's password; a disable/enable cycle drops any session using the old one."""
    dynsec.run({"command": "setClientPassword", "username": gateway_id, "password": password})


def set_gateway_enabled(dynsec: DynamicSecurity, gateway_id: str, enabled: bool) -> None:
    """Enables or disables the gateway's client (disabling also disconnects it)."""
    dynsec.run({"command": "enableClient" if enabled else "disableClient", "username": gateway_id})


def remove_gateway(dynsec: DynamicSecurity, gateway_id: str) -> None:
    """Deletes the gateway's client and role from the broker (tests, decommissioning)."""
    missing = ("not found", "Client not found", "Role not found")
    dynsec.run({"command": "deleteClient", "username": gateway_id}, tolerate=missing)
    dynsec.run({"command": "deleteRole", "rolename": gateway_role(gateway_id)}, tolerate=missing)
