"""The broker's accounts, managed through Mosquitto's dynamic-security plugin ($CONTROL topic)."""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt

from agritrace import checkpoint
from agritrace.errors import AgriTraceError, InvalidInput
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


# Service accounts (the ingest workers, the alert publisher, the dynamic-security admin) live in
# this namespace; no gateway id may enter it (the API schema, the gateways CHECK constraint and
# `provision_gateway` all refuse one), so a tenant can never create, reset or impersonate them.
SERVICE_PREFIX = "agritrace"
ALERTS_ROLE = "agritrace-alerts"
# What a gateway may do, and nothing else: publish packs (numbered or not) and its birth/will, and
# read its own receipts. Any other topic is refused at the broker (MQTT 5 reason code 0x87).
GATEWAY_ACLS = (
    ("publishClientSend", "agritrace/v1/{id}/senml"),
    ("publishClientSend", "agritrace/v1/{id}/senml/+"),
    ("publishClientSend", "agritrace/v1/{id}/status"),
    ("subscribePattern", "agritrace/v1/{id}/receipts"),
    ("publishClientReceive", "agritrace/v1/{id}/receipts"),
)
INGEST_ACLS = (
    ("subscribePattern", "$share/+/agritrace/v1/+/senml"),
    ("subscribePattern", "$share/+/agritrace/v1/+/senml/+"),
    ("subscribePattern", "$share/+/agritrace/v1/+/status"),
    ("publishClientReceive", "agritrace/v1/+/senml"),
    ("publishClientReceive", "agritrace/v1/+/senml/+"),
    ("publishClientReceive", "agritrace/v1/+/status"),
    ("publishClientSend", "agritrace/v1/+/receipts"),
)
ALERTS_ACLS = (("publishClientSend", "agritrace/v1/alerts/#"),)
# Signed audit checkpoints (core/checkpoint.py): one retained message that one account may publish
# and reader accounts (regulators' archivers: `agritrace broker audit-reader NAME`) may read.
AUDIT_TOPIC = checkpoint.AUDIT_TOPIC
AUDIT_ROLE = "agritrace-audit"
AUDIT_ACLS = (("publishClientSend", AUDIT_TOPIC),)
AUDIT_READERS_ROLE = "agritrace-audit-readers"
AUDIT_READERS_ACLS = (("subscribePattern", AUDIT_TOPIC), ("publishClientReceive", AUDIT_TOPIC))
AUDIT_READER_PREFIX = "agritrace-reader-"


class ReservedName(AgriTraceError):
    status = 422
    type_slug = "reserved-name"
    title = "The name is reserved for the platform's own accounts"


class BrokerClientExists(AgriTraceError):
    status = 409
    type_slug = "broker-client-exists"
    title = "The broker already has a client with this name"


def is_reserved(name: str) -> bool:
    """Whether a broker username or client id belongs to the platform's service namespace."""
    return name.lower().startswith(SERVICE_PREFIX) or name == "alerts"


def ingest_username(settings: Settings, worker_id: int) -> str:
    """Worker N's broker username, which is also the only client id it may connect with."""
    return f"{settings.ingest_client_prefix}-{worker_id}"


def _ensure_role(dynsec: DynamicSecurity, role: str, acls: tuple[tuple[str, str], ...]) -> None:
    """Creates a role with exactly these ACLs (extra ones, e.g. from an older release, removed)."""
    dynsec.run({"command": "createRole", "rolename": role}, tolerate=ALREADY)
    (got,) = dynsec.run({"command": "getRole", "rolename": role})
    have = {(a["acltype"], a["topic"]) for a in got.get("data", {}).get("role", {}).get("acls", [])}
    want = set(acls)
    commands = [
        {"command": "removeRoleACL", "rolename": role, "acltype": t, "topic": topic}
        for t, topic in sorted(have - want)
    ] + [
        {"command": "addRoleACL", "rolename": role, "acltype": t, "topic": topic, "allow": True}
        for t, topic in sorted(want - have)
    ]
    if commands:
        dynsec.run(*commands)


def ensure_service_account(dynsec: DynamicSecurity, *, username: str, password: str, role: str) -> None:
    """Creates or refreshes a service account: its password, its role, and its one client id."""
    if not is_reserved(username):
        raise ReservedName(f"service accounts are named {SERVICE_PREFIX}-…, not {username!r}")
    dynsec.run(
        {"command": "createClient", "username": username, "password": password, "clientid": username},
        tolerate=ALREADY,
    )
    dynsec.run(
        {"command": "setClientPassword", "username": username, "password": password},
        {"command": "setClientId", "username": username, "clientid": username},
        {"command": "enableClient", "username": username},
    )
    # Mosquitto 2.0 answers "Internal error" when a client is given a role it already has.
    if role not in client_roles(dynsec, username):
        dynsec.run({"command": "addClientRole", "username": username, "rolename": role})


def ensure_ingest_account(dynsec: DynamicSecurity, settings: Settings, worker_id: int) -> None:
    """Creates or refreshes ingest worker N's own account (client id pinned to its username)."""
    _ensure_role(dynsec, INGEST_ROLE, INGEST_ACLS)
    ensure_service_account(
        dynsec,
        username=ingest_username(settings, worker_id),
        password=settings.mqtt_ingest_password.get_secret_value(),
        role=INGEST_ROLE,
    )


def ensure_alerts_account(dynsec: DynamicSecurity, settings: Settings) -> None:
    """Creates or refreshes the alert publisher's account: it may publish alert topics only."""
    _ensure_role(dynsec, ALERTS_ROLE, ALERTS_ACLS)
    ensure_service_account(
        dynsec,
        username=settings.mqtt_alerts_username,
        password=settings.mqtt_alerts_password.get_secret_value(),
        role=ALERTS_ROLE,
    )


def ensure_audit_account(dynsec: DynamicSecurity, settings: Settings) -> None:
    """Creates or refreshes the checkpoint publisher's account and the audit readers' role."""
    _ensure_role(dynsec, AUDIT_ROLE, AUDIT_ACLS)
    _ensure_role(dynsec, AUDIT_READERS_ROLE, AUDIT_READERS_ACLS)
    ensure_service_account(
        dynsec,
        username=settings.mqtt_audit_username,
        password=settings.mqtt_audit_password.get_secret_value(),
        role=AUDIT_ROLE,
    )


def create_audit_reader(dynsec: DynamicSecurity, name: str) -> tuple[str, str]:
    """A new account that may only read the retained audit checkpoint; returns (username, password).
    Its client id is pinned to its username; an existing account of that name is a 409, not reset."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", name):
        raise InvalidInput("reader name: 1-41 lower-case letters, digits or '-'")
    username = AUDIT_READER_PREFIX + name
    _ensure_role(dynsec, AUDIT_READERS_ROLE, AUDIT_READERS_ACLS)
    return username, create_pinned_client(dynsec, username, AUDIT_READERS_ROLE)


def create_pinned_client(dynsec: DynamicSecurity, username: str, role: str) -> str:
    """A new broker account with one role whose client id is pinned to its username; returns its
    password (shown once). An existing account of that name is a 409, never reset or adopted."""
    password = new_password()
    (created,) = dynsec.run(
        {"command": "createClient", "username": username, "password": password, "clientid": username},
        tolerate=ALREADY,
    )
    if created.get("error"):
        raise BrokerClientExists(f"the broker already has a client {username!r}; nothing was changed")
    dynsec.run({"command": "addClientRole", "username": username, "rolename": role})
    return password


def client_roles(dynsec: DynamicSecurity, username: str) -> list[str]:
    """The roles a broker client has."""
    (response,) = dynsec.run({"command": "getClient", "username": username})
    return [r["rolename"] for r in response.get("data", {}).get("client", {}).get("roles", [])]


def gateway_role(gateway_id: str) -> str:
    """The broker role that lets one gateway use its own topics only."""
    return f"agritrace-gateway-{gateway_id}"


def new_password() -> str:
    """A fresh gateway password (shown once; Mosquitto keeps only a salted hash)."""
    return secrets.token_urlsafe(24)


def _gateway_acls(gateway_id: str) -> tuple[tuple[str, str], ...]:
    return tuple((t, topic.format(id=gateway_id)) for t, topic in GATEWAY_ACLS)


def provision_gateway(dynsec: DynamicSecurity, gateway_id: str, password: str) -> None:
    """Creates the gateway's client (client id pinned to the gateway id) and its role. A client that
    already exists under this name is never adopted, reset or deleted: it is refused (409)."""
    if is_reserved(gateway_id):
        raise ReservedName(f"{gateway_id!r} is in the platform's reserved namespace")
    (created,) = dynsec.run(
        {"command": "createClient", "username": gateway_id, "password": password, "clientid": gateway_id},
        tolerate=ALREADY,
    )
    if created.get("error"):
        # Whoever made it (a registration rolled back after this step, an account made by hand),
        # it is not provably this gateway's: an operator removes it (`agritrace broker remove`).
        raise BrokerClientExists(f"the broker already has a client {gateway_id!r}; nothing was changed")
    role = gateway_role(gateway_id)
    _ensure_role(dynsec, role, _gateway_acls(gateway_id))
    dynsec.run({"command": "addClientRole", "username": gateway_id, "rolename": role})


def pin_gateway(dynsec: DynamicSecurity, gateway_id: str) -> bool:
    """Brings a registered gateway's broker client up to today's rules: its client id pinned to its
    gateway id and exactly today's topic ACLs (gateways provisioned by older releases). False when
    the broker has no such client (it cannot connect; `gateways rotate` issues one)."""
    if is_reserved(gateway_id):
        raise ReservedName(f"{gateway_id!r} is in the platform's reserved namespace")
    (pinned,) = dynsec.run(
        {"command": "setClientId", "username": gateway_id, "clientid": gateway_id}, tolerate=("not found",)
    )
    if pinned.get("error"):
        return False
    role = gateway_role(gateway_id)
    _ensure_role(dynsec, role, _gateway_acls(gateway_id))
    if role not in client_roles(dynsec, gateway_id):
        dynsec.run({"command": "addClientRole", "username": gateway_id, "rolename": role})
    return True


def set_gateway_password(dynsec: DynamicSecurity, gateway_id: str, password: str) -> None:
    """Replaces the registered gateway's password (provisioning its client if the broker lost it);
    a disable/enable cycle drops any session using the old one."""
    (done,) = dynsec.run(
        {"command": "setClientPassword", "username": gateway_id, "password": password},
        tolerate=("not found",),
    )
    if done.get("error"):
        provision_gateway(dynsec, gateway_id, password)


def set_gateway_enabled(dynsec: DynamicSecurity, gateway_id: str, enabled: bool) -> None:
    """Enables or disables the gateway's client (disabling also disconnects it)."""
    dynsec.run({"command": "enableClient" if enabled else "disableClient", "username": gateway_id})


def remove_gateway(dynsec: DynamicSecurity, gateway_id: str) -> None:
    """Deletes the gateway's client and role from the broker (tests, decommissioning); never a
    service account."""
    if is_reserved(gateway_id):
        raise ReservedName(f"{gateway_id!r} is in the platform's reserved namespace")
    missing = ("not found", "Client not found", "Role not found")
    dynsec.run({"command": "deleteClient", "username": gateway_id}, tolerate=missing)
    dynsec.run({"command": "deleteRole", "rolename": gateway_role(gateway_id)}, tolerate=missing)
