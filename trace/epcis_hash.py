"""The CBV 2.0 event hash: an EPCIS event's eventID computed from its own content, so that anyone
holding the event can recompute it (CBV 2.0, "EPCIS Event Hash ID"; RFC 6920 `ni` URIs).

The pre-hash string, in the standard's words, briefly:
- elements in the canonical property order (`_ORDER`), concatenated without separators, a value as
  `key=value`, a parent element as its bare key followed by its children; omitted elements add nothing;
- the elements of a list sorted as strings (case-sensitive, by code point), the list's name once;
- a typed element (bizTransaction, source, destination) as `key=value` then `type=...` (the reference
  implementation keeps the order the document happens to list them in, and sorts neither them nor
  sourceList before destinationList: our documents list the value first, so both agree on them);
- numbers without trailing zeros, timestamps in UTC with milliseconds and `Z`;
- standard vocabulary (bare `in_transit`, `urn:epcglobal:cbv:...`, CURIEs) as its web URI; EPC URNs
  as canonical GS1 Digital Link URIs (`https://id.gs1.org/...`, finest key only, no query);
- ILMD and user extensions as `{namespace}localName[=value]`, sorted; extensions of readPoint,
  bizLocation, sensorElement, sensorMetadata and sensorReport at the end of that element;
- `ni:///sha-256;<hex>?ver=CBV2.0`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

CBV = "https://ref.gs1.org/cbv/"
GS1_VOC = "https://gs1.org/voc/"
STANDARD_PREFIXES = {"cbv": CBV, "gs1": GS1_VOC, "epcis": "https://ref.gs1.org/epcis/"}
VERSION = "CBV2.0"

_QUANTITY = ("epcClass", "quantity", "uom")
_METADATA = (
    "time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "bizRules",
)  # fmt: skip
_REPORT = (
    "type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "time",
    "microorganism", "chemicalSubstance", "value", "component", "stringValue", "booleanValue",
    "hexBinaryValue", "uriValue", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue",
    "uom", "coordinateReferenceSystem",
)  # fmt: skip
# The canonical property order (after eventType). certificationInfo (new in EPCIS 2.0) follows the
# time zone, as the reference implementation places it.
_ORDER = (
    "eventTime", "eventTimeZoneOffset", "certificationInfo", "epcList", "parentID", "inputEPCList",
    "childEPCs", "quantityList", "childQuantityList", "inputQuantityList", "outputEPCList",
    "outputQuantityList", "action", "transformationID", "bizStep", "disposition", "persistentDisposition",
    "readPoint", "bizLocation", "bizTransactionList", "sourceList", "destinationList", "sensorElementList",
    "ilmd",
)  # fmt: skip
# Fields that are not part of the hash: the identifier itself, and what a repository adds on capture.
_NOT_HASHED = {
    "type", "eventID", "recordTime", "errorDeclaration", "@context", "id", "@id", "rdfs:comment", "comment",
}  # fmt: skip
_TIMES = {"eventTime", "time", "startTime", "endTime"}
_VOCABULARY = {
    "bizStep": "BizStep-",
    "disposition": "Disp-",
    "set": "Disp-",
    "unset": "Disp-",
}
_URN_VOCABULARY = {
    "bizstep": "BizStep-",
    "disp": "Disp-",
    "btt": "BTT-",
    "sdt": "SDT-",
    "er": "ER-",
}

# GS1 Digital Link: the primary keys and the qualifiers kept with them (the finest level only).
_DL_KEYS = {
    "00": (), "01": ("21", "10", "235"), "253": (), "255": (), "401": (), "402": (), "414": ("254",),
    "417": (), "8003": (), "8004": (), "8006": ("21", "10"), "8010": ("8011",), "8017": (), "8018": (),
}  # fmt: skip
_DL_FINEST = {"01": ("21", "235", "10"), "8006": ("21", "10")}


def check_digit(digits: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def _from_epc_urn(uri: str) -> str:
    """EPC (class, pattern) URNs of the common schemes as canonical Digital Link URIs."""
    m = re.match(r"^urn:epc:(id|class|idpat):([a-z]+):(.*)$", uri)
    if not m:
        return uri
    kind, scheme, rest = m.groups()
    parts = rest.split(".")
    if scheme in ("sgtin", "lgtin") and len(parts) == 3:
        company, item, tail = parts
        body = item[:1] + company + item[1:]
        gtin = body + check_digit(body)
        if kind == "idpat" or tail == "*":
            return f"https://id.gs1.org/01/{gtin}"
        return f"https://id.gs1.org/01/{gtin}/{'10' if scheme == 'lgtin' else '21'}/{tail}"
    if scheme == "sgln" and len(parts) == 3:
        company, location, extension = parts
        gln = company + location + check_digit(company + location)
        return f"https://id.gs1.org/414/{gln}" + ("" if extension == "0" else f"/254/{extension}")
    if scheme == "sscc" and len(parts) == 2:
        company, serial = parts
        body = serial[:1] + company + serial[1:]
        return f"https://id.gs1.org/00/{body}{check_digit(body)}"
    if scheme == "pgln" and len(parts) == 2:
        body = parts[0] + parts[1]
        return f"https://id.gs1.org/417/{body}{check_digit(body)}"
    if scheme in ("gdti", "sgcn") and len(parts) == 3 and kind == "id":
        body = parts[0] + parts[1]
        return (
            f"https://id.gs1.org/{'253' if scheme == 'gdti' else '255'}/{body}{check_digit(body)}{parts[2]}"
        )
    if scheme == "giai" and len(parts) == 2:
        return f"https://id.gs1.org/8004/{parts[0]}{parts[1]}"
    if scheme == "grai" and len(parts) == 3:
        company, asset, serial = parts
        body = "0" + company + asset
        return f"https://id.gs1.org/8003/{body}{check_digit(body)}{serial}"
    return uri


def _digital_link(uri: str) -> str:
    """A GS1 Digital Link URI (any domain) constrained: id.gs1.org, no query, the finest key only."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return uri
    segments = [s for s in parts.path.split("/") if s]
    for start in range(len(segments) - 1):
        key = segments[start]
        if key not in _DL_KEYS:
            continue
        pairs = segments[start:]
        if len(pairs) % 2:
            continue
        values = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        if not set(values) - {key} <= set(_DL_KEYS[key]) | {"22"}:
            continue
        value = values[key]
        if key in ("01", "8006") and value.isdigit():
            value = value.zfill(14)
        out = f"https://id.gs1.org/{key}/{value}"
        for qualifier in _DL_FINEST.get(key, ()):
            if qualifier in values:
                out += f"/{qualifier}/{values[qualifier]}"
                break
        else:
            for qualifier in _DL_KEYS[key]:
                if qualifier in values:
                    out += f"/{qualifier}/{values[qualifier]}"
        return out
    return uri


def _uri(value: str, namespaces: Mapping[str, str]) -> str:
    value = value.strip()
    m = re.match(r"^urn:epcglobal:cbv:([a-z]+):(.+)$", value)
    if m and m.group(1) in _URN_VOCABULARY:
        return CBV + _URN_VOCABULARY[m.group(1)] + m.group(2)
    if value.startswith("urn:epc:"):
        return _from_epc_urn(value)
    prefix, sep, local = value.partition(":")
    if sep and not local.startswith("//"):
        if prefix in namespaces:
            return namespaces[prefix] + local
        if prefix in STANDARD_PREFIXES:
            return STANDARD_PREFIXES[prefix] + local
    return _digital_link(value)


def _number(value: Any) -> str:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value).strip()
    if d == d.to_integral_value():
        return str(d.quantize(Decimal(1)))
    return format(d.normalize(), "f")


def _timestamp(value: str) -> str:
    text = value.strip().replace("z", "Z")
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$", text)
    if not m:
        return text
    whole = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    fraction = Decimal("0." + (m.group(2) or "0")).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    millis = int(fraction * 1000)
    utc = whole.astimezone(UTC)
    if millis == 1000:
        utc = utc.replace(microsecond=0) + (datetime(2000, 1, 1, 0, 0, 1) - datetime(2000, 1, 1))
        millis = 0
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _value(key: str, value: Any, namespaces: Mapping[str, str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return _number(value)
    text = str(value).strip()
    if key in _TIMES:
        return _timestamp(text)
    if key in _VOCABULARY and ":" not in text:
        return CBV + _VOCABULARY[key] + text
    if key in ("type", "exception") and ":" not in text:
        return GS1_VOC + text
    if key == "uom" or key == "action" or key == "eventTimeZoneOffset":
        return text
    if key in ("quantity", "value", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue"):
        return _number(text)
    return _uri(text, namespaces)


def _extension_key(key: str, namespaces: Mapping[str, str]) -> str | None:
    """`prefix:local` of a user extension as `{namespace}local`; None for a standard field."""
    if key.startswith("{"):
        return key
    prefix, sep, local = key.partition(":")
    if not sep:
        return None
    if prefix in namespaces:
        return "{" + namespaces[prefix] + "}" + local
    if prefix in STANDARD_PREFIXES:
        return "{" + STANDARD_PREFIXES[prefix] + "}" + local
    if key.startswith(("http://", "https://")):
        return "{" + key.rsplit("/", 1)[0] + "/}" + key.rsplit("/", 1)[1]
    return "{" + prefix + "}" + local


def _extension(key: str, value: Any, namespaces: Mapping[str, str]) -> list[str]:
    name = _extension_key(key, namespaces) or key
    if isinstance(value, dict):
        children = sorted(s for k, v in value.items() for s in _extension(k, v, namespaces))
        return [name + "".join(children)]
    if isinstance(value, list):
        return sorted(s for v in value for s in _extension(key, v, namespaces))
    return [f"{name}={_value('', value, namespaces)}"]


def _extensions(obj: Mapping[str, Any], standard: set[str], namespaces: Mapping[str, str]) -> str:
    items = [
        s
        for k, v in obj.items()
        if k not in standard and k not in _NOT_HASHED and not k.startswith("@")
        for s in _extension(k, v, namespaces)
    ]
    return "".join(sorted(items))


def _fields(obj: Mapping[str, Any], order: tuple[str, ...], namespaces: Mapping[str, str]) -> str:
    return "".join(f"{k}={_value(k, obj[k], namespaces)}" for k in order if k in obj and obj[k] is not None)


def _sensor_element(element: Mapping[str, Any], namespaces: Mapping[str, str]) -> str:
    out = "sensorElement"
    meta = element.get("sensorMetadata")
    if meta:
        out += "sensorMetadata" + _fields(meta, _METADATA, namespaces)
        out += _extensions(meta, set(_METADATA), namespaces)
    reports = []
    for report in element.get("sensorReport", []):
        text = "sensorReport" + _fields(report, _REPORT, namespaces)
        reports.append(text + _extensions(report, set(_REPORT), namespaces))
    out += "".join(sorted(reports))
    return out + _extensions(element, {"sensorMetadata", "sensorReport"}, namespaces)


def prehash(event: Mapping[str, Any], namespaces: Mapping[str, str] | None = None) -> str:
    """The pre-hash string of one event; `namespaces`: the document's context prefixes."""
    ns = dict(namespaces or {})
    out = [f"eventType={event['type']}"]
    for key in _ORDER:
        value = event.get(key)
        if value is None or value == [] or value == {}:
            continue
        if key in ("epcList", "inputEPCList", "childEPCs", "outputEPCList"):
            out.append(key + "".join(sorted(f"epc={_uri(v, ns)}" for v in value)))
        elif key.endswith("uantityList"):
            elements = ["quantityElement" + _fields(q, _QUANTITY, ns) for q in value]
            out.append(key + "".join(sorted(elements)))
        elif key == "certificationInfo":
            values = value if isinstance(value, list) else [value]
            out.append("".join(sorted(f"certificationInfo={_uri(v, ns)}" for v in values)))
        elif key == "persistentDisposition":
            parts = [f"{k}={_value(k, v, ns)}" for k in ("set", "unset") for v in sorted(value.get(k, []))]
            out.append(key + "".join(parts))
        elif key in ("readPoint", "bizLocation"):
            out.append(f"{key}id={_uri(value['id'], ns)}" + _extensions(value, {"id"}, ns))
        elif key in ("bizTransactionList", "sourceList", "destinationList"):
            name = key.removesuffix("List")
            elements = []
            for item in value:
                text = f"{name}={_uri(item[name], ns)}"
                if item.get("type"):
                    prefix = {"bizTransaction": "BTT-"}.get(name, "SDT-")
                    kind = str(item["type"]).strip()
                    text += "type=" + (CBV + prefix + kind if ":" not in kind else _uri(kind, ns))
                elements.append(text)
            out.append(key + "".join(sorted(elements)))
        elif key == "sensorElementList":
            out.append(key + "".join(sorted(_sensor_element(e, ns) for e in value)))
        elif key == "ilmd":
            out.append("ilmd" + "".join(sorted(s for k, v in value.items() for s in _extension(k, v, ns))))
        else:
            out.append(f"{key}={_value(key, value, ns)}")
    out.append(_extensions(event, set(_ORDER), ns))
    return "".join(out)


def event_hash(event: Mapping[str, Any], namespaces: Mapping[str, str] | None = None) -> str:
    """The event's CBV 2.0 hash as an `ni` URI: `ni:///sha-256;<hex>?ver=CBV2.0`."""
    digest = hashlib.sha256(prehash(event, namespaces).encode()).hexdigest()
    return f"ni:///sha-256;{digest}?ver={VERSION}"


def context_namespaces(context: Any) -> dict[str, str]:
    """The prefixes a document's `@context` defines inline (the EPCIS context's own are standard)."""
    out: dict[str, str] = {}
    for item in context if isinstance(context, list) else [context]:
        if isinstance(item, dict):
            out.update({k: v for k, v in item.items() if isinstance(v, str) and not k.startswith("@")})
    return out
