"""Gateways' SenML packs (RFC 8428): what is accepted, how names/times/values resolve, what is refused."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agritrace.ingest.messages import StatusError, parse_status, parse_topic
from agritrace.ingest.senml import UNITS, Limits, SenMLError, parse_pack

NOW = 1_800_000_000.0

names = st.from_regex(r"[a-z][a-z0-9_]{0,10}(/[a-z0-9_]{1,10}){0,2}", fullmatch=True)
values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
offsets = st.floats(min_value=-86400, max_value=60, allow_nan=False)
units = st.sampled_from(sorted(UNITS))


@given(
    base=names,
    records=st.lists(st.tuples(names, values, offsets, units), min_size=1, max_size=30),
)
def test_a_pack_resolves_names_times_and_values_as_the_rfc_says(
    base: str, records: list[tuple[str, float, float, str]]
) -> None:
    pack = [{"bn": base + "/", "bt": NOW}] + [{"n": n, "v": v, "t": t, "u": u} for n, v, t, u in records]
    pack[0].update(pack.pop(1))  # base fields and the first record share one object
    readings, skipped = parse_pack(json.dumps(pack).encode(), now=NOW)
    assert skipped == 0
    assert [(r.name, r.value, r.unit) for r in readings] == [
        (base + "/" + n, v, u) for n, v, _t, u in records
    ]
    assert [r.time for r in readings] == pytest.approx([NOW + t for _n, _v, t, _u in records])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_either_a_pack_or_a_reasoned_refusal(payload: bytes) -> None:
    try:
        readings, _ = parse_pack(payload, now=NOW)
    except SenMLError as exc:
        assert exc.reason
    else:
        assert all(math.isfinite(r.value) for r in readings)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=5),
        lambda c: (
            st.lists(c) | st.dictionaries(st.sampled_from(["n", "v", "t", "bt", "bn", "u", "vb", "vs"]), c)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes_the_parser(doc: object) -> None:
    with contextlib.suppress(SenMLError):
        parse_pack(json.dumps(doc).encode(), now=NOW)


def test_relative_times_count_from_now_and_absolute_times_stand() -> None:
    pack = [{"n": "a", "v": 1, "t": -10}, {"n": "b", "v": 2, "t": NOW - 5}, {"n": "c", "v": 3}]
    readings, _ = parse_pack(json.dumps(pack).encode(), now=NOW)
    assert [r.time for r in readings] == [NOW - 10, NOW - 5, NOW]


def test_base_value_and_base_unit_apply_and_booleans_become_0_or_1() -> None:
    pack = [
        {"bn": "room1/", "bu": "Cel", "bv": 10, "n": "temp", "v": 1.5},
        {"n": "door", "vb": True, "u": "/"},
    ]
    readings, _ = parse_pack(json.dumps(pack).encode(), now=NOW)
    assert [(r.name, r.value, r.unit) for r in readings] == [
        ("room1/temp", 11.5, "Cel"),
        ("room1/door", 1.0, "/"),
    ]


def test_string_values_are_skipped_not_refused() -> None:
    readings, skipped = parse_pack(b'[{"n":"fw","vs":"1.2.3"},{"n":"t","v":1,"u":"Cel"}]', now=NOW)
    assert skipped == 1 and [r.name for r in readings] == ["t"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not-json"),
        (b"\xff\xfe", "not-json"),
        (b'{"n": "t", "v": 1}', "not-senml"),
        (b"[]", "not-senml"),
        (b'[{"n": "t"}]', "not-senml"),
        (b'[{"n": "t", "v": "12"}]', "wrong-type"),
        (b'[{"n": "t", "v": NaN}]', "not-finite"),
        (b'[{"n": "t", "v": Infinity}]', "not-finite"),
        (b'[{"n": "t", "v": 1e400}]', "not-finite"),
        (b'[{"n": "t", "bv": 1e308, "v": 1e308}]', "not-finite"),
        (b'[{"n": "t", "v": 1, "u": "degC"}]', "unknown-unit"),
        (b'[{"n": "t", "v": 1, "t": 4102444800}]', "time-out-of-window"),
        (b'[{"n": "t", "v": 1, "t": 946684800}]', "time-out-of-window"),
        (b'[{"n": "bad name!", "v": 1}]', "bad-name"),
        (b'[{"n": "t", "v": 1, "x_": 1}]', "not-senml"),
    ],
)
def test_bad_packs_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(SenMLError) as refused:
        parse_pack(payload, now=NOW)
    assert refused.value.reason == reason


def test_oversize_packs_are_refused() -> None:
    with pytest.raises(SenMLError, match="oversize"):
        parse_pack(b"[" + b" " * 300 + b"]", now=NOW, limits=Limits(max_bytes=100))
    with pytest.raises(SenMLError, match="oversize"):
        parse_pack(json.dumps([{"n": "t", "v": 1}] * 5).encode(), now=NOW, limits=Limits(max_records=4))


@given(st.binary(max_size=100))
def test_a_status_payload_is_online_offline_or_a_reasoned_refusal(payload: bytes) -> None:
    try:
        assert isinstance(parse_status(payload), bool)
    except StatusError as exc:  # not a SenML error: a status payload is not a pack
        assert exc.reason == "bad-status"


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"OFFLINE", False),
        (b'"online"', True),
        (b'{"online": false}', False),
        (b'{"status": "online"}', True),
    ],
)
def test_birth_and_will_payloads_a_gateway_may_send(payload: bytes, online: bool) -> None:
    assert parse_status(payload) is online


def test_a_pack_in_utf16_or_with_a_byte_order_mark_is_not_json() -> None:
    pack = '[{"n": "temp", "v": 1}]'
    for payload in (pack.encode("utf-16"), pack.encode("utf-8-sig"), pack.encode("utf-32")):
        with pytest.raises(SenMLError) as err:
            parse_pack(payload, now=1.8e9)
        assert err.value.reason == "not-json"


def test_an_integer_too_big_for_a_double_is_not_finite_and_does_not_crash_the_worker() -> None:
    for pack in ('[{"n": "temp", "v": %s}]', '[{"n": "temp", "v": 1, "t": %s}]'):
        with pytest.raises(SenMLError) as err:
            parse_pack((pack % ("9" * 400)).encode(), now=1.8e9)
        assert err.value.reason == "not-finite"


@pytest.mark.parametrize(
    ("topic", "gateway", "kind", "valid"),
    [
        ("agritrace/v1/gw-1/senml", "gw-1", "senml", True),
        ("agritrace/v1/gw-1/status", "gw-1", "status", True),
        ("agritrace/v1/gw-1/other", "gw-1", "other", False),
        ("agritrace/v1/gw-1/senml/extra", None, "unknown", False),
        ("agritrace/v1", None, "unknown", False),
    ],
)
def test_a_topic_names_its_gateway_and_kind(topic: str, gateway: str | None, kind: str, valid: bool) -> None:
    parsed = parse_topic(topic)
    assert (parsed.gateway_id, parsed.kind, parsed.valid) == (gateway, kind, valid)
