"""SenML (RFC 8428) JSON packs from gateways, parsed into plain readings; pure, no I/O.

A pack is rejected whole (and dead-lettered by the worker, raw bytes kept) when any record is
invalid: storing part of a pack would make the gateway's view and ours disagree silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from agritrace.ingest.messages import Rejected

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


class SenMLError(Rejected):
    """A pack we cannot accept; `reason` is a stable slug stored in the dead-letter table."""


class Reading(NamedTuple):
    """One resolved SenML record: channel name, absolute time (epoch seconds), value, unit.

    A named tuple rather than a frozen dataclass: the worker builds hundreds of thousands a second,
    and a tuple is several times cheaper to create.
    """

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


def _wrong_type(label: str, value: object, expected: str) -> SenMLError:
    return SenMLError("wrong-type", f"{label!r} must be {expected}, got {type(value).__name__}")


def _number(record: dict[str, Any], label: str, default: float) -> float:
    """A finite number. JSON gives exact types, so `type() is` checks suffice (and refuse bool)."""
    value = record.get(label, default)
    kind = type(value)
    if kind is float:
        number: float = value
    elif kind is int:
        try:
            number = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits: no double holds it
            number = math.inf
    else:
        raise _wrong_type(label, value, "a number")
    if number - number != 0.0:  # inf - inf and nan - nan are nan: a cheap isfinite()
        raise SenMLError("not-finite", f"{label!r} is not a finite number")
    return number


def _text(record: dict[str, Any], label: str, default: str) -> str:
    value = record.get(label, default)
    if type(value) is not str:
        raise _wrong_type(label, value, "a string")
    return value


def _finite_constant(token: str) -> float:
    # json.loads accepts NaN/Infinity by default; SenML (and JSON) does not.
    raise SenMLError("not-finite", f"{token} is not a JSON number")


_ABSENT = object()
_EXACT = 2**53  # integers a double holds exactly
_DECODER = json.JSONDecoder(parse_constant=_finite_constant)
# Resolved names already checked against NAME_RE: a gateway sends the same few names again and again.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX = 100_000


def _check_name(name: str) -> None:
    if name in _VALID_NAMES:
        return
    if NAME_RE.fullmatch(name) is None:
        raise SenMLError("bad-name", f"resolved name {name[:60]!r} is not a valid SenML name")
    if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
        _VALID_NAMES.clear()
    _VALID_NAMES.add(name)


def parse_pack(payload: bytes, *, now: float, limits: Limits = Limits()) -> tuple[list[Reading], int]:
    """Parses a SenML JSON pack; returns (numeric readings, count of records skipped as non-numeric).

    This runs for every reading the city's gateways send, so the loop is written for speed: exact
    type checks, a cache of valid names, and no per-record function call on the common path.
    """
    if len(payload) > limits.max_bytes:
        raise SenMLError("oversize", f"{len(payload)} bytes, at most {limits.max_bytes}")
    try:
        # Decoded here, strictly: json.loads(bytes) would also take UTF-16/32 and a UTF-8 BOM, which
        # JSON on the wire (RFC 8259 section 8.1) and so SenML does not allow.
        pack = _DECODER.decode(payload.decode("utf-8"))
    except SenMLError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise SenMLError("not-json", str(exc)[:200]) from None
    if type(pack) is not list or not pack:
        raise SenMLError("not-senml", "a SenML pack is a non-empty JSON array of records")
    if len(pack) > limits.max_records:
        raise SenMLError("oversize", f"{len(pack)} records, at most {limits.max_records}")
    readings: list[Reading] = []
    append = readings.append
    skipped = 0
    base_name, base_time, base_unit, base_value = "", 0.0, "", 0.0
    earliest, latest = now - limits.max_age, now + limits.max_ahead
    known_labels, units, valid_names = KNOWN_LABELS, UNITS, _VALID_NAMES
    new_reading = tuple.__new__  # Reading(...) without the Python-level __new__ frame
    for record in pack:
        if type(record) is not dict:
            raise SenMLError("not-senml", "each record must be a JSON object")
        # Unknown labels ending in "_" must be understood (RFC 8428 section 4.4); others are ignored.
        if not known_labels.issuperset(record):
            must_understand = [k for k in record if k not in known_labels and k.endswith("_")]
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
        value = record.get("v", _ABSENT)
        if type(value) is float and value - value == 0.0:  # the common case, inline
            value += base_value
            if value - value != 0.0:  # two finite numbers may still overflow when added
                raise SenMLError("not-finite", "'bv' + 'v' is not a finite number")
        elif value is not _ABSENT:
            value = base_value + _number(record, "v", 0.0)
            if value - value != 0.0:
                raise SenMLError("not-finite", "'bv' + 'v' is not a finite number")
        else:
            flag = _other_value(record)
            if flag is None:
                skipped += "vs" in record or "vd" in record or "s" in record
                continue
            value = flag
        name = record.get("n", "")
        if type(name) is not str:
            raise _wrong_type("n", name, "a string")
        name = base_name + name
        if name not in valid_names:
            _check_name(name)
        unit = record.get("u", base_unit)
        if type(unit) is not str:
            raise _wrong_type("u", unit, "a string")
        if not unit:
            unit = None
        elif unit not in units:
            raise SenMLError("unknown-unit", f"{unit[:32]!r} is not a SenML unit")
        t = record.get("t", 0.0)
        kind = type(t)
        if kind is int and -_EXACT < t < _EXACT:  # whole seconds, as most gateways send
            t = float(t)
        elif kind is not float or t - t != 0.0:
            t = _number(record, "t", 0.0)
        t += base_time
        if -RELATIVE_TIME_LIMIT < t < RELATIVE_TIME_LIMIT:
            t += now
        if t < earliest or t > latest:
            raise SenMLError("time-out-of-window", f"time {t:.0f} is outside the accepted window")
        append(new_reading(Reading, (name, t, value, unit)))
    return readings, skipped


def _other_value(record: dict[str, Any]) -> float | None:
    """A record without "v": a boolean as 0/1, or None when it carries no number (checked)."""
    if "vb" in record:
        flag = record["vb"]
        if type(flag) is not bool:
            raise SenMLError("wrong-type", "'vb' must be true or false")
        return 1.0 if flag else 0.0
    if "vs" in record or "vd" in record:
        _text(record, "vs" if "vs" in record else "vd", "")
    elif "n" in record and "s" not in record:
        raise SenMLError("not-senml", "a record with a name needs a value")
    return None
