"""The wire contract: payloads round-trip, decoders fail only with WireError, topics parse."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import law
from controller.wire import (
    CommandSet,
    ControllerState,
    ControllerStatus,
    GatewayState,
    GatewayStatus,
    Kind,
    Mode,
    Quantity,
    Reading,
    Telemetry,
    Topic,
    WireError,
    ZoneCommand,
    command_topic,
    controller_status_topic,
    decode_commands,
    decode_controller_status,
    decode_gateway_status,
    decode_telemetry,
    encode,
    gateway_status_topic,
    law_mode,
    mode_of,
    parse_topic,
    reason_text,
    telemetry_filter,
    telemetry_topic,
)
from sensors.errors import IlmaError

DECODERS = (decode_telemetry, decode_commands, decode_gateway_status, decode_controller_status)


def telemetry() -> Telemetry:
    return Telemetry.of(
        gateway="gw-1",
        boot_t=1.8e9,
        seq=7,
        t=1.8e9 + 60,
        readings=(
            Reading(zone="office-1", point=Quantity.CO2_PPM, t=1.8e9 + 59, value=612.0),
            Reading(zone="office-1", point=Quantity.PEOPLE_IN, t=1.8e9 + 59, value=None, quality=1),
            Reading(
                zone="hall", point=Quantity.T_ZONE_C, t=1.8e9, value=21.5, quality=32, replayed=True
            ),
        ),
    )


def commands() -> CommandSet:
    return CommandSet(
        controller="ctrl-a",
        seq=3,
        t=1.8e9,
        lease_s=300.0,
        valid_until=1.8e9 + 300,
        commands=(
            ZoneCommand(
                zone="office-1",
                mode=Mode.OCCUPIED,
                airflow_m3s=0.12,
                t_heat_c=21.0,
                t_cool_c=24.5,
                reason="occupancy+co2",
            ),
        ),
    )


def test_every_payload_round_trips() -> None:
    assert decode_telemetry(encode(telemetry())) == telemetry()
    assert decode_commands(encode(commands())) == commands()
    gs = GatewayStatus(gateway="gw-1", state=GatewayState.DEGRADED, t=5.0, fallback_zones=("a",))
    assert decode_gateway_status(encode(gs)) == gs
    cs = ControllerStatus(controller="c", state=ControllerState.ONLINE, t=1.0, period_s=60)
    assert decode_controller_status(encode(cs)) == cs


def test_a_missing_value_is_null_on_the_wire() -> None:
    doc = json.loads(encode(telemetry()))
    assert doc["readings"]["value"][1] is None
    assert doc["readings"]["replayed"][2] is True
    assert doc["readings"]["zone"] == ["office-1", "office-1", "hall"]  # columns, one per field
    assert doc["v"] == 1


def test_command_id_names_controller_and_sequence() -> None:
    assert commands().command_id == "ctrl-a/3"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["readings"]["value"].__setitem__(0, float("inf")),
        lambda d: d["readings"]["point"].__setitem__(0, "co2"),
        lambda d: d["readings"]["zone"].__setitem__(0, "office 1/#"),
        lambda d: d["readings"]["quality"].__setitem__(0, -1),
        lambda d: d["readings"]["t"].pop(),
        lambda d: d.update(v=2),
        lambda d: d.update(seq=-1),
        lambda d: d.pop("gateway"),
    ],
    ids=[
        "infinite",
        "unknown-point",
        "bad-zone-name",
        "bad-quality",
        "ragged",
        "version",
        "seq",
        "missing",
    ],
)
def test_a_bad_telemetry_payload_is_a_wire_error(mutate: object) -> None:
    doc = json.loads(encode(telemetry()))
    mutate(doc)  # type: ignore[operator]
    payload = json.dumps(doc).replace("Infinity", "1e999").encode()
    with pytest.raises(WireError, match="Telemetry"):
        decode_telemetry(payload)


def test_wire_error_is_an_ilma_value_error() -> None:
    with pytest.raises(IlmaError):
        decode_commands(b"{")
    with pytest.raises(ValueError, match="malformed"):
        decode_commands(b"\xff\xfe")


def test_unknown_keys_from_a_newer_peer_are_ignored() -> None:
    doc = json.loads(encode(commands()))
    doc["priority"] = 3
    doc["commands"][0]["damper_pct"] = 40
    assert decode_commands(json.dumps(doc).encode()) == commands()


def test_commands_outside_physical_bounds_are_refused() -> None:
    doc = json.loads(encode(commands()))
    doc["commands"][0]["airflow_m3s"] = -0.1
    with pytest.raises(WireError):
        decode_commands(json.dumps(doc).encode())
    doc = json.loads(encode(commands()))
    doc["lease_s"] = 0
    with pytest.raises(WireError):
        decode_commands(json.dumps(doc).encode())


@given(st.binary(max_size=300))
def test_decoders_raise_only_wire_error_on_arbitrary_bytes(payload: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(WireError):
            decode(payload)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(JSON, st.sampled_from(["readings", "commands", "state", "gateway", "t"]))
def test_decoders_raise_only_wire_error_on_arbitrary_json(value: object, key: str) -> None:
    for doc in (value, {key: value}, {**json.loads(encode(telemetry())), key: value}):
        payload = json.dumps(doc).encode()
        for decode in DECODERS:
            with contextlib.suppress(WireError):
                decode(payload)


def test_topics_parse_back() -> None:
    assert parse_topic(telemetry_topic("s1", "gw-1")) == Topic("s1", Kind.TELEMETRY, "gw-1")
    assert parse_topic(command_topic("s1", "gw-1")) == Topic("s1", Kind.COMMANDS, "gw-1")
    assert parse_topic(gateway_status_topic("s", "g")) == Topic("s", Kind.GATEWAY_STATUS, "g")
    assert parse_topic(controller_status_topic("s")) == Topic("s", Kind.CONTROLLER_STATUS, None)
    assert telemetry_topic("s1", "gw-1") == "ilma/v1/s1/gw/gw-1/telemetry"


@pytest.mark.parametrize(
    "topic", ["ilma/v2/s/gw/g/telemetry", "ilma/v1/s/gw/g", "ilma/v1/s/gw/g/other", "x", ""]
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(WireError, match="not an ilma"):
        parse_topic(topic)


def test_shared_subscription_filter() -> None:
    assert telemetry_filter() == "ilma/v1/+/gw/+/telemetry"
    assert telemetry_filter("s1", group="ctl") == "$share/ctl/ilma/v1/s1/gw/+/telemetry"


def test_every_core_mode_has_a_wire_name_and_back() -> None:
    for m in law.Mode:
        assert law_mode(mode_of(int(m))) is m
    assert {m.name for m in Mode} == {m.name for m in law.Mode}


def test_reason_text_names_the_flags() -> None:
    assert reason_text(int(law.Reason.OCCUPANCY | law.Reason.CO2)) == "occupancy+co2"
    assert reason_text(0) == "none"


def test_telemetry_rows_go_up_as_columns_and_come_back_as_rows() -> None:
    t = telemetry()
    rows = decode_telemetry(encode(t)).rows
    assert rows == t.rows
    assert rows[1] == Reading("office-1", Quantity.PEOPLE_IN, 1.8e9 + 59, None, 1, False)
    assert len(t) == 3
