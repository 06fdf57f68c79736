"""MQTT sensor payloads: mapped fields decode, and anything else is a PayloadError."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensors.payloads import MAX_PAYLOAD_BYTES, PayloadError, decode_fields

COUNTER = {"people_in": "in", "people_out": "out"}


def test_a_counter_payload_decodes() -> None:
    d = decode_fields(b'{"in": 12, "out": 9, "battery": 80}', COUNTER)
    assert d.values == {"people_in": 12.0, "people_out": 9.0}
    assert d.t is None


def test_nested_fields_and_the_sensor_time() -> None:
    d = decode_fields(
        b'{"counts": {"in": 3, "out": 1.0}, "ts": 1800000000.5}',
        {"people_in": "counts.in", "people_out": "counts.out"},
        time_field="ts",
    )
    assert d.values == {"people_in": 3.0, "people_out": 1.0}
    assert d.t == 1800000000.5


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"in": 1}', "no field 'out'"),
        (b'{"in": "12", "out": 1}', "not a number"),
        (b'{"in": true, "out": 1}', "not a number"),
        (b'{"in": null, "out": 1}', "not a number"),
        (b'{"in": 1e999, "out": 1}', "not finite"),
        (b'{"in": NaN, "out": 1}', "not finite"),
        (b'{"in": ' + b"9" * 400 + b', "out": 1}', "not finite"),
    ],
)
def test_bad_payloads_are_payload_errors(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_fields(payload, COUNTER)


def test_an_oversized_payload_is_refused_before_parsing() -> None:
    big = json.dumps({"in": 1, "out": 2, "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    with pytest.raises(PayloadError, match="larger than"):
        decode_fields(big, COUNTER)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_payload_error(payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode_fields(payload, COUNTER, time_field="ts")


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["in", "out", "ts", "counts"]), inner)
    ),
    max_leaves=12,
)


@given(JSON)
def test_arbitrary_json_raises_only_payload_error(doc: object) -> None:
    try:
        d = decode_fields(json.dumps(doc).encode(), {"a": "in", "b": "counts.out"}, "ts")
    except PayloadError:
        return
    assert all(isinstance(v, float) for v in d.values.values())
