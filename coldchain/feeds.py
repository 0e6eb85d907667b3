"""Alert feeds per audience (issue 14): read-only broker accounts for a regulator (every alert) and
for a cooperative (its own gateways' alerts only). Alerts are published on
agritrace/v1/alerts/{gateway_id}/{alert_id}; a cooperative's role holds one ACL pair per gateway of
the cooperative, added when a gateway is created and brought back to exactly its gateways by
`agritrace broker setup`. Accounts live in the reserved `agritrace-` namespace (no gateway can take
one), their client id is pinned to the username, and an existing one is a 409, never reset."""

from __future__ import annotations

import re

from agritrace.db import Conn
from agritrace.devices.broker import ALREADY, DynamicSecurity, create_pinned_client
from agritrace.errors import InvalidInput, NotFound

ALERTS_TOPIC = "agritrace/v1/alerts/#"
REGULATOR_ROLE = "agritrace-alert-feed-all"
REGULATOR_PREFIX = "agritrace-feed-"
COOPERATIVE_PREFIX = "agritrace-feed-cooperative-"
READ = ("subscribePattern", "publishClientReceive")


def cooperative_role(cooperative_id: int) -> str:
    """The broker role that reads the alerts of one cooperative's gateways."""
    return f"agritrace-alert-feed-cooperative-{cooperative_id}"


def gateway_topic(gateway_id: str) -> str:
    return f"agritrace/v1/alerts/{gateway_id}/#"


def _role_acls(dynsec: DynamicSecurity, role: str) -> set[tuple[str, str]]:
    dynsec.run({"command": "createRole", "rolename": role}, tolerate=ALREADY)
    (got,) = dynsec.run({"command": "getRole", "rolename": role})
    return {(a["acltype"], a["topic"]) for a in got.get("data", {}).get("role", {}).get("acls", [])}


def _set_acls(dynsec: DynamicSecurity, role: str, want: set[tuple[str, str]], *, exact: bool) -> None:
    """Gives a role these read ACLs (and, if `exact`, no others)."""
    have = _role_acls(dynsec, role)
    commands = [
        {"command": "addRoleACL", "rolename": role, "acltype": t, "topic": topic, "allow": True}
        for t, topic in sorted(want - have)
    ]
    if exact:
        commands += [
            {"command": "removeRoleACL", "rolename": role, "acltype": t, "topic": topic}
            for t, topic in sorted(have - want)
        ]
    if commands:
        dynsec.run(*commands, tolerate=ALREADY)


def add_gateway(dynsec: DynamicSecurity, *, cooperative_id: int, gateway_id: str) -> None:
    """Lets the cooperative's alert feed read a new gateway's alerts (at gateway provisioning)."""
    want = {(t, gateway_topic(gateway_id)) for t in READ}
    _set_acls(dynsec, cooperative_role(cooperative_id), want, exact=False)


def sync_cooperative(dynsec: DynamicSecurity, conn: Conn, *, cooperative_id: int) -> None:
    """Brings a cooperative's feed role to exactly its gateways' alert topics."""
    gateways = conn.execute("SELECT id FROM gateways WHERE cooperative_id = %s", (cooperative_id,)).fetchall()
    want = {(t, gateway_topic(g["id"])) for g in gateways for t in READ}
    _set_acls(dynsec, cooperative_role(cooperative_id), want, exact=True)


def sync_all(dynsec: DynamicSecurity, conn: Conn) -> int:
    """`broker setup`: every cooperative's feed role and the regulators' role; returns how many roles."""
    _set_acls(dynsec, REGULATOR_ROLE, {(t, ALERTS_TOPIC) for t in READ}, exact=True)
    cooperatives = conn.execute("SELECT id FROM cooperatives ORDER BY id").fetchall()
    for c in cooperatives:
        sync_cooperative(dynsec, conn, cooperative_id=c["id"])
    return len(cooperatives) + 1


def create_regulator_feed(dynsec: DynamicSecurity, name: str) -> dict[str, str]:
    """A new account that may read every alert and publish nothing."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", name):
        raise InvalidInput("feed name: 1-41 lower-case letters, digits or '-'")
    if name.startswith("cooperative-"):
        raise InvalidInput("a regulator's feed name may not start with 'cooperative-'")
    _set_acls(dynsec, REGULATOR_ROLE, {(t, ALERTS_TOPIC) for t in READ}, exact=True)
    username = REGULATOR_PREFIX + name
    password = create_pinned_client(dynsec, username, REGULATOR_ROLE)
    return {"username": username, "client_id": username, "password": password, "topic": ALERTS_TOPIC}


def cooperative_id(conn: Conn, *, name: str) -> int:
    row = conn.execute("SELECT id FROM cooperatives WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no cooperative named {name!r}")
    return int(row["id"])


def create_cooperative_feed(dynsec: DynamicSecurity, conn: Conn, *, cooperative_id: int) -> dict[str, str]:
    """A new account that may read the alerts of the cooperative's gateways (now and later ones)."""
    sync_cooperative(dynsec, conn, cooperative_id=cooperative_id)
    username = f"{COOPERATIVE_PREFIX}{cooperative_id}"
    password = create_pinned_client(dynsec, username, cooperative_role(cooperative_id))
    return {
        "username": username,
        "client_id": username,
        "password": password,
        "topic": "agritrace/v1/alerts/{gateway_id}/#",
    }
