"""SenML (RFC 8428) JSON packs from gateways, parsed into plain readings; pure, no I/O.

A pack is rejected whole (and dead-lettered by the worker, raw bytes kept) when any record is
invalid: storing part of a pack would make the gateway's view and ours disagree silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# RFC 8428 section 4.5.3: times below 2**28 are relative to "now".
RELATIVE_TIME_LIMIT = 2**28
# RFC 8428 section 4.5.1: the resolved name's characters.
NAME_RE = re.compile(r"^[A-Za-z0-9][-:./_A-Za-z0-9]{0,199}$")
KNOWN_LABELS = frozenset(
    {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
)

# The SenML units registry (RFC 8428 section 12.1, and RFC 8798 secondary units) that sensors
# in cold rooms, trucks, orchards and tea gardens report.
UNITS = frozenset(
    {
        "m", "kg", "g", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J", "W", "C", "V",
        "F", "Ohm", "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy", "Sv", "kat", "m2", "m3", "l",
        "m/s", "m/s2", "m3/s", "l/s", "W/m2", "cd/m2", "bit", "bit/s", "lat", "lon", "pH", "dB", "dBW",
        "Bspl", "count", "/", "%", "%RH", "%EL", "EL", "1/s", "1/min", "beat/min", "beats", "S/m",
        "B", "VA", "VAs", "var", "vars", "J/m", "kg/m3", "deg", "NTU", "ms", "min", "h", "MHz", "kW",
        "kVA", "kvar", "Ah", "Wh", "kWh", "varh", "kvarh", "kVAh", "Wh/km", "KiB", "GB", "Mbit/s",
        "B/s", "MB/s", "mV", "mA", "dBm", "ug/m3", "mm/h", "m/h", "ppm", "/100", "/1000", "hPa", "mm",
        "cm", "km", "km/h", "ppb", "ppt", "mW", "mg/l", "ug/l", "g/l",
    }
)  # fmt: skip


class SenMLError(ValueError):
    """A pack we cannot accept; `reason` is a stable slug stored in the dead-letter table."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reading:
    """One resolved SenML record: channel name, absolute time (epoch seconds), value, unit."""

    name: str
    time: float
    value: float
    unit: str | None


@dataclass(frozen=True, slots=True)
class Limits:
    """What a pack may contain; the worker builds this from settings."""

    max_bytes: int = 256 * 1024
    max_records: int = 2000
    max_age: float = 30 * 86400.0  # store-and-forward after a month offline is still accepted
    max_ahead: float = 300.0  # gateway clocks drift; more than this is a broken clock


def _number(record: dict[str, Any], label: str, default: float) -> float:
    value = record.get(label, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SenMLError("wrong-type", f"{label!r} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits: no double holds it
        number = math.inf
    if not math.isfinite(number):
        raise SenMLError("not-finite", f"{label!r} is not a finite number")
    return number


def _text(record: dict[str, Any], label: str, default: str) -> str:
    value = record.get(label, default)
    if not isinstance(value, str):
        raise SenMLError("wrong-type", f"{label!r} must be a string, got {type(value).__name__}")
    return value


def _finite_constant(token: str) -> float:
    # json.loads accepts NaN/Infinity by default; SenML (and JSON) does not.
    raise SenMLError("not-finite", f"{token} is not a JSON number")


def parse_pack(payload: bytes, *, now: float, limits: Limits = Limits()) -> tuple[list[Reading], int]:
    """Parses a SenML JSON pack; returns (numeric readings, count of records skipped as non-numeric)."""
    if len(payload) > limits.max_bytes:
        raise SenMLError("oversize", f"{len(payload)} bytes, at most {limits.max_bytes}")
    try:
        # Decoded here, strictly: json.loads(bytes) would also take UTF-16/32 and a UTF-8 BOM, which
        # JSON on the wire (RFC 8259 section 8.1) and so SenML does not allow.
        pack = json.loads(payload.decode("utf-8"), parse_constant=_finite_constant)
    except SenMLError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise SenMLError("not-json", str(exc)[:200]) from None
    if not isinstance(pack, list) or not pack:
        raise SenMLError("not-senml", "a SenML pack is a non-empty JSON array of records")
    if len(pack) > limits.max_records:
        raise SenMLError("oversize", f"{len(pack)} records, at most {limits.max_records}")
    readings: list[Reading] = []
    skipped = 0
    base_name, base_time, base_unit, base_value = "", 0.0, "", 0.0
    for record in pack:
        if not isinstance(record, dict):
            raise SenMLError("not-senml", "each record must be a JSON object")
        # Unknown labels ending in "_" must be understood (RFC 8428 section 4.4); others are ignored.
        if not KNOWN_LABELS.issuperset(record):
            must_understand = [k for k in record if k not in KNOWN_LABELS and k.endswith("_")]
            if must_understand:
                raise SenMLError("not-senml", f"unsupported must-understand label {must_understand[0]!r}")
        if "bn" in record:
            base_name = _text(record, "bn", "")
        if "bt" in record:
            base_time = _number(record, "bt", 0.0)
        if "bu" in record:
            base_unit = _text(record, "bu", "")
        if "bv" in record:
            base_value = _number(record, "bv", 0.0)
        value = _value(record, base_value)
        if value is None:
            if not any(k in record for k in ("vs", "vd", "s")) and "n" in record:
                raise SenMLError("not-senml", "a record with a name needs a value")
            skipped += "vs" in record or "vd" in record or "s" in record
            continue
        name = base_name + _text(record, "n", "")
        if not NAME_RE.match(name):
            raise SenMLError("bad-name", f"resolved name {name[:60]!r} is not a valid SenML name")
        unit = _text(record, "u", base_unit) or None
        if unit is not None and unit not in UNITS:
            raise SenMLError("unknown-unit", f"{unit[:32]!r} is not a SenML unit")
        t = base_time + _number(record, "t", 0.0)
        if abs(t) < RELATIVE_TIME_LIMIT:
            t += now
        if t < now - limits.max_age or t > now + limits.max_ahead:
            raise SenMLError("time-out-of-window", f"time {t:.0f} is outside the accepted window")
        readings.append(Reading(name, t, value, unit))
    return readings, skipped


def _value(record: dict[str, Any], base_value: float) -> float | None:
    """The record's numeric value (booleans as 0/1), or None when it carries no number."""
    if "v" in record:
        value = base_value + _number(record, "v", 0.0)
        if not math.isfinite(value):  # two finite numbers may still overflow when added
            raise SenMLError("not-finite", "'bv' + 'v' is not a finite number")
        return value
    if "vb" in record:
        flag = record["vb"]
        if not isinstance(flag, bool):
            raise SenMLError("wrong-type", "'vb' must be true or false")
        return 1.0 if flag else 0.0
    if "vs" in record or "vd" in record:
        _text(record, "vs" if "vs" in record else "vd", "")
    return None
