"""Signed checkpoints of the audit chain (issue 12): what makes the chain hold against the database's
own users.

The hash chain in `audit_log` proves that entries were not changed *relative to each other*; whoever
can write the table (its owner, a superuser, a restored dump) can recompute the whole chain from
genesis after an edit, cut off its tail, or TRUNCATE it and attach the tables again. A checkpoint is
the chain head (entry id and hash) signed with an Ed25519 key that lives outside the database, and
kept outside it too: a directory, and a retained MQTT message that regulators' subscribers copy.
`verify` against a checkpoint fails when the entry it names is gone or has another hash.

Document (JSON, one file per checkpoint):
    {"checkpoint": {"v": 1, "database": ..., "entry_id": 42, "hash": "<hex>", "at": "<UTC ISO>"},
     "key_id": "<sha256 of the raw public key, hex, first 16>", "signature": "<base64>"}
The signature is over `payload()`: the checkpoint object as JSON with sorted keys and no spaces
(UTF-8), so `openssl pkeyutl -verify -rawin` can check it with the public key alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agritrace import audit
from agritrace.db import Conn
from agritrace.errors import AgriTraceError, InvalidInput
from agritrace.mqtt import connect_blocking, new_client
from agritrace.settings import Settings

# The retained message regulators' subscribers copy (devices/broker.py grants it to one account).
AUDIT_TOPIC = "agritrace/v1/audit/checkpoint"

VERSION = 1
LATEST = "latest.json"


class SigningKeyMissing(AgriTraceError):
    """No signing key where the settings say (run `agritrace audit keygen`)."""


# --- keys ------------------------------------------------------------------------------------------
def generate_key(path: Path) -> bool:
    """Writes a new Ed25519 private key (PEM, mode 600) unless one is there; True if it wrote one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return True


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyMissing(f"no audit signing key at {path}: run `agritrace audit keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file (PEM), or the public half of a private key file."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} is not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- checkpoints -----------------------------------------------------------------------------------
def database_id(conn: Conn) -> str:
    """Which database a checkpoint is of: the cluster's system identifier and the database name."""
    row = conn.execute(
        "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database() AS id"
    ).fetchone()
    assert row is not None
    return str(row["id"])


def payload(checkpoint: dict[str, Any]) -> bytes:
    return json.dumps(checkpoint, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def make(conn: Conn, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A signed checkpoint of the chain's head now."""
    top = audit.head(conn)
    checkpoint = {
        "v": VERSION,
        "database": database_id(conn),
        "entry_id": int(top["id"]),
        "hash": str(top["hash"]),
        "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    signature = key.sign(payload(checkpoint))
    return {
        "checkpoint": checkpoint,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(signature).decode(),
    }


def write(document: dict[str, Any], directory: Path) -> Path:
    """Stores a checkpoint as its own file and as latest.json (both replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    cp = document["checkpoint"]
    stamp = cp["at"].replace("-", "").replace(":", "")
    path = directory / f"checkpoint-{cp['entry_id']:012d}-{stamp}.json"
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    for target in (path, directory / LATEST):
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
            f.write(text)
        os.chmod(f.name, 0o644)
        os.replace(f.name, target)
    return path


def read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
        cp = document["checkpoint"]
        if not (isinstance(cp["entry_id"], int) and isinstance(cp["hash"], str)):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: not an audit checkpoint ({exc.__class__.__name__})") from None
    return dict(document)


@dataclass(frozen=True)
class Problem:
    problem: str

    def __str__(self) -> str:
        return self.problem


def check(conn: Conn, document: dict[str, Any], public_key: Ed25519PublicKey) -> list[Problem]:
    """What is wrong with the database relative to a checkpoint (empty: everything it covers holds)."""
    cp = document["checkpoint"]
    try:
        public_key.verify(base64.b64decode(document["signature"]), payload(cp))
    except (InvalidSignature, ValueError, KeyError):
        return [Problem("the checkpoint's signature does not verify with this public key")]
    problems: list[Problem] = []
    if cp.get("database") != database_id(conn):
        problems.append(Problem(f"the checkpoint is of another database ({cp.get('database')})"))
    if cp["entry_id"] == 0:
        return problems
    row = conn.execute(
        "SELECT encode(hash, 'hex') AS hash FROM audit_log WHERE id = %s", (cp["entry_id"],)
    ).fetchone()
    top = audit.head(conn)
    if row is None:
        what = "the log ends before it" if top["id"] < cp["entry_id"] else "it is missing"
        problems.append(
            Problem(
                f"audit_log entry {cp['entry_id']} of the checkpoint of {cp['at']}: {what} "
                f"(entries deleted or the log truncated)"
            )
        )
    elif row["hash"] != cp["hash"]:
        problems.append(
            Problem(
                f"audit_log entry {cp['entry_id']} differs from the checkpoint of {cp['at']} "
                f"(the chain was rewritten)"
            )
        )
    return problems


def publish(document: dict[str, Any], settings: Settings, *, timeout: float = 10.0) -> None:
    """Publishes the checkpoint as the retained message of the audit topic (QoS 1, waits for PUBACK)."""
    username = settings.mqtt_audit_username
    client = new_client(username, username=username, password=settings.mqtt_audit_password.get_secret_value())
    connect_blocking(client, settings)
    try:
        info = client.publish(AUDIT_TOPIC, json.dumps(document, sort_keys=True), qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise ConnectionError(f"the broker did not acknowledge the checkpoint on {AUDIT_TOPIC}")
    finally:
        client.disconnect()
        client.loop_stop()
