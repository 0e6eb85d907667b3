"""What arrives on the ingest topics: the topic names, gateway status payloads, refusals, dead letters.

Gateways publish SenML packs on `agritrace/v1/{gateway_id}/senml` and birth/will on `…/status`
(the pack format itself: `senml.py`). A message we cannot accept is kept whole as a `DeadLetter`
with a stable `reason` slug (docs/ingest.md lists them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

PREFIX = "agritrace/v1"
KINDS = ("senml", "status")


class Rejected(ValueError):
    """A message we cannot accept; `reason` is a stable slug stored in the dead-letter table."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StatusError(Rejected):
    """A birth/will payload that says neither online nor offline (reason `bad-status`)."""


@dataclass(slots=True)
class Incoming:
    """A message as received, before it is committed and acked."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    arrived: float


class DeadLetter(NamedTuple):
    """A refused message as stored in `dead_letters` (the column order of the worker's COPY)."""

    topic: str
    gateway_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Topic:
    """A message's topic: the gateway it names (None if it names none) and its kind."""

    gateway_id: str | None
    kind: str  # "senml", "status", or what else the last level says ("unknown" when malformed)

    @property
    def valid(self) -> bool:
        return self.gateway_id is not None and self.kind in KINDS


def parse_topic(topic: str) -> Topic:
    """`agritrace/v1/{gateway_id}/{kind}` split into its gateway and kind (the one place that does)."""
    parts = topic.split("/")
    if len(parts) == 4:
        return Topic(parts[2], parts[3])
    return Topic(None, "unknown")


def subscriptions(group: str) -> list[tuple[str, int]]:
    """What a worker of shared-subscription group `group` subscribes to (QoS 1)."""
    return [(f"$share/{group}/{PREFIX}/+/{kind}", 1) for kind in KINDS]


def parse_status(payload: bytes) -> bool:
    """A birth/will payload: "online"/"offline", or JSON {"online": bool} / {"status": "online"}."""
    text = payload.decode("utf-8", errors="replace").strip()
    lowered = text.strip('"').lower()
    if lowered in ("online", "offline"):
        return lowered == "online"
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("online"), bool):
            return bool(doc["online"])
        if str(doc.get("status", "")).lower() in ("online", "offline"):
            return str(doc["status"]).lower() == "online"
    raise StatusError("bad-status", "status payload must be 'online' or 'offline'")
