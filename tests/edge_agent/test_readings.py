"""Tests for edge_agent.rows: rows, device and MQTT updates, validation, telemetry, live()."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacnet_modbus.modbus import PollResult
from controller.wire import MAX_ABS_VALUE, Quantity, Telemetry, decode_telemetry, encode
from edge_agent.agent import Agent
from edge_agent.audit import AuditLog
from edge_agent.buffer import DiskBuffer
from edge_agent.config import GatewayConfig, load_gateway
from edge_agent.metrics import AgentMetrics
from edge_agent.readings import MQTT_STALE_AFTER_S, STALE_AFTER_PERIODS, ReadingTable, Row
from sensors.payloads import MAX_PAYLOAD_BYTES, PayloadError
from sensors.validation import Quality

if TYPE_CHECKING:
    import aiomqtt

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "gateways" / "helsinki-office-east.toml"
SITE = REPO / "config" / "sites" / "helsinki-office.toml"
DEVICES = REPO / "config" / "devices"
TOPIC = "sensors/door-ms1/counts"  # the example's MQTT door counter, for meeting-small-1
NOW = 1_800_000_000.0
CYCLE_S = 10.0  # the example's cycle

Q = Quantity
GOOD, MISSING, OUT_OF_RANGE, STALE = (
    int(q) for q in (Quality.GOOD, Quality.MISSING, Quality.OUT_OF_RANGE, Quality.STALE)
)


_EXAMPLE = load_gateway(EXAMPLE)


@pytest.fixture
def cfg() -> GatewayConfig:
    return _EXAMPLE


@pytest.fixture
def table(cfg: GatewayConfig) -> ReadingTable:
    return ReadingTable(cfg)


def _gateway(tmp_path: Path, extra: str) -> GatewayConfig:
    """A small gateway: one room sensor polled every 60 s, and what `extra` adds."""
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[gateway]
name = "gw"
site = "{SITE}"
profiles = "{DEVICES}"
cycle_s = 5.0

[[bus]]
name = "rs485"
kind = "rtu"
device = "/dev/ttyUSB0"

[[device]]
name = "rs-1"
bus = "rs485"
device_id = 11
profile = "room-sensor"
period_s = 60.0

[[zone]]
name = "office-e1"
fallback = "relinquish"
read = {{ co2_ppm = "rs-1/co2_ppm" }}
{extra}
""",
        encoding="utf-8",
    )
    return load_gateway(path)


def _at(table: ReadingTable, zone: str, quantity: Quantity) -> int:
    return table.index[(zone, quantity)]


def _quality(table: ReadingTable, zone: str, quantity: Quantity) -> int:
    return int(table.quality[_at(table, zone, quantity)])


def _clean(table: ReadingTable, zone: str, quantity: Quantity) -> float:
    return float(table.clean[_at(table, zone, quantity)])


def _sent(t: Telemetry) -> dict[tuple[str, str], tuple[float | None, int, float]]:
    return {(r.zone, r.point.value): (r.value, r.quality, r.t) for r in t.rows}


# --- rows -------------------------------------------------------------------------------------


def test_rows_come_from_the_zones_reads_then_the_mqtt_sensors(table: ReadingTable) -> None:
    assert table.rows == (
        Row("office-e1", Q.CO2_PPM, device="rs-e1", point="co2_ppm"),
        Row("office-e1", Q.T_ZONE_C, device="rs-e1", point="t_zone_c"),
        Row("office-e1", Q.RH_PCT, device="rs-e1", point="rh_pct"),
        Row("meeting-medium-1", Q.CO2_PPM, device="rs-m1", point="co2_ppm"),
        Row("meeting-medium-1", Q.T_ZONE_C, device="rs-m1", point="t_zone_c"),
        Row("meeting-medium-1", Q.PEOPLE_IN, device="pc-m1", point="people_in"),
        Row("meeting-medium-1", Q.PEOPLE_OUT, device="pc-m1", point="people_out"),
        Row("meeting-medium-1", Q.AIRFLOW_M3S, device="vav-m1", point="airflow_m3s"),
        Row("meeting-medium-1", Q.T_SUPPLY_C, device="vav-m1", point="t_supply_c"),
        Row("meeting-small-1", Q.PEOPLE_IN, topic=TOPIC),
        Row("meeting-small-1", Q.PEOPLE_OUT, topic=TOPIC),
    )
    assert set(table.devices) == {"rs-e1", "rs-m1", "pc-m1", "vav-m1"}  # vav-e1 is only written
    assert table.mqtt_fields == {TOPIC: {"9": "in", "10": "out"}}
    assert table.mqtt_time_field == {TOPIC: "ts"}
    assert table.index[("meeting-small-1", Q.PEOPLE_OUT)] == 10
    assert table.zone_names == ("office-e1", "meeting-medium-1", "meeting-small-1")
    # Devices go stale after three of their poll periods, MQTT sensors after an hour.
    stale = table.limits.stale_after_s
    np.testing.assert_array_equal(stale[:9], STALE_AFTER_PERIODS * CYCLE_S)
    np.testing.assert_array_equal(stale[9:], MQTT_STALE_AFTER_S)
    # Range limits per quantity (sensors.validation).
    assert table.limits.hi[_at(table, "office-e1", Q.CO2_PPM)] == 5000.0
    # Nothing read yet.
    assert np.all(np.isnan(table.value))
    assert np.all(table.quality == MISSING)


def test_a_devices_own_poll_period_sets_its_staleness(tmp_path: Path) -> None:
    table = ReadingTable(_gateway(tmp_path, ""))
    assert table.limits.stale_after_s.tolist() == [STALE_AFTER_PERIODS * 60.0]


# --- device updates and validation ------------------------------------------------------------


def test_a_poll_updates_its_devices_rows_only(table: ReadingTable) -> None:
    table.update_device(
        "rs-e1", {"co2_ppm": 650.0, "t_zone_c": 21.5, "rh_pct": 35.0, "status": 0.0}, NOW
    )
    assert table.value[:3].tolist() == [650.0, 21.5, 35.0]
    assert table.t[:3].tolist() == [NOW] * 3
    assert np.all(np.isnan(table.value[3:]))
    assert np.all(np.isnan(table.t[3:]))
    # A point the poll could not read is NaN, at the time of the poll.
    table.update_device("rs-e1", {"co2_ppm": 660.0, "t_zone_c": 21.6}, NOW + 10)
    assert math.isnan(table.value[_at(table, "office-e1", Q.RH_PCT)])
    assert table.t[_at(table, "office-e1", Q.RH_PCT)] == NOW + 10
    # A device no zone reads from changes nothing.
    before = table.value.copy()
    table.update_device("vav-e1", {"airflow_setpoint_m3s": 0.3}, NOW + 10)
    np.testing.assert_array_equal(table.value, before)


def test_validation_flags_missing_out_of_range_and_stale(table: ReadingTable) -> None:
    table.update_device("rs-e1", {"co2_ppm": 6000.0, "t_zone_c": 21.5}, NOW)  # rh_pct failed
    table.update_device("rs-m1", {"co2_ppm": 480.0, "t_zone_c": 21.0}, NOW - 31.0)  # 3 cycles + 1 s
    table.update_device("pc-m1", {"people_in": 100.0, "people_out": 98.0}, NOW - 29.0)
    table.validate(NOW, CYCLE_S)
    assert _quality(table, "office-e1", Q.CO2_PPM) == OUT_OF_RANGE
    assert _quality(table, "office-e1", Q.T_ZONE_C) == GOOD
    assert _quality(table, "office-e1", Q.RH_PCT) == MISSING
    assert _quality(table, "meeting-medium-1", Q.CO2_PPM) == STALE
    assert _quality(table, "meeting-medium-1", Q.T_ZONE_C) == STALE
    assert _quality(table, "meeting-medium-1", Q.PEOPLE_IN) == GOOD
    assert _quality(table, "meeting-medium-1", Q.AIRFLOW_M3S) == MISSING  # never read
    assert _quality(table, "meeting-small-1", Q.PEOPLE_IN) == MISSING
    # Clean values: the reading where good, NaN elsewhere.
    assert _clean(table, "office-e1", Q.T_ZONE_C) == 21.5
    assert _clean(table, "meeting-medium-1", Q.PEOPLE_OUT) == 98.0
    unclean = [
        ("office-e1", Q.CO2_PPM),
        ("office-e1", Q.RH_PCT),
        ("meeting-medium-1", Q.CO2_PPM),
        ("meeting-medium-1", Q.AIRFLOW_M3S),
    ]
    for zone, q in unclean:
        assert math.isnan(_clean(table, zone, q)), (zone, q)


def test_a_reading_goes_stale_as_time_passes(table: ReadingTable) -> None:
    table.update_device("rs-e1", {"co2_ppm": 650.0, "t_zone_c": 21.5, "rh_pct": 35.0}, NOW)
    table.update_mqtt(TOPIC, b'{"in": 3, "out": 1, "ts": %d}' % NOW, NOW)
    for dt in (10.0, 20.0, 30.0):
        table.validate(NOW + dt, CYCLE_S)
        assert _quality(table, "office-e1", Q.CO2_PPM) == GOOD, dt
    table.validate(NOW + 30.5, CYCLE_S)
    assert _quality(table, "office-e1", Q.CO2_PPM) == STALE
    assert math.isnan(_clean(table, "office-e1", Q.CO2_PPM))
    # The MQTT counter publishes when it likes: it is good for an hour.
    assert _quality(table, "meeting-small-1", Q.PEOPLE_IN) == GOOD
    table.validate(NOW + MQTT_STALE_AFTER_S + 1.0, CYCLE_S)
    assert _quality(table, "meeting-small-1", Q.PEOPLE_IN) == STALE


# --- telemetry --------------------------------------------------------------------------------


def test_telemetry_carries_only_rows_with_a_newer_reading(table: ReadingTable) -> None:
    table.update_device("rs-e1", {"co2_ppm": 650.0, "t_zone_c": 21.5, "rh_pct": 35.0}, NOW - 1)
    table.update_device("pc-m1", {"people_in": 100.0}, NOW - 1)  # people_out failed
    table.validate(NOW, CYCLE_S)
    first = table.telemetry("east-1", 1.7e9, 0, NOW)
    assert (first.gateway, first.boot_t, first.seq, first.t) == ("east-1", 1.7e9, 0, NOW)
    sent = _sent(first)
    assert sent[("office-e1", "co2_ppm")] == (650.0, GOOD, NOW - 1)  # the reading's own time
    assert sent[("meeting-medium-1", "people_in")] == (100.0, GOOD, NOW - 1)
    assert sent[("meeting-medium-1", "people_out")] == (None, MISSING, NOW - 1)
    # Rows never read go up as missing, at the message's time: the controller learns of them.
    assert sent[("meeting-medium-1", "airflow_m3s")] == (None, MISSING, NOW)
    assert sent[("meeting-small-1", "people_in")] == (None, MISSING, NOW)
    assert len(sent) == len(table.rows)
    # The codec takes the message as it is.
    assert decode_telemetry(encode(first)) == first

    # One device polled again: its rows, and the never-read ones, nothing else.
    table.update_device("rs-e1", {"co2_ppm": 655.0, "t_zone_c": 21.5, "rh_pct": 35.0}, NOW + 9)
    table.validate(NOW + 10, CYCLE_S)
    second = _sent(table.telemetry("east-1", 1.7e9, 1, NOW + 10))
    never_read = {
        ("meeting-medium-1", q) for q in ("co2_ppm", "t_zone_c", "airflow_m3s", "t_supply_c")
    }
    never_read |= {("meeting-small-1", "people_in"), ("meeting-small-1", "people_out")}
    assert (
        set(second)
        == {("office-e1", "co2_ppm"), ("office-e1", "t_zone_c"), ("office-e1", "rh_pct")}
        | never_read
    )
    assert second[("office-e1", "co2_ppm")] == (655.0, GOOD, NOW + 9)
    # Nothing new: only the never-read rows.
    table.validate(NOW + 20, CYCLE_S)
    assert set(_sent(table.telemetry("east-1", 1.7e9, 2, NOW + 20))) == never_read
    # A poll that carries the same time as the last one sent is not newer.
    table.update_device("rs-e1", {"co2_ppm": 700.0, "t_zone_c": 21.5, "rh_pct": 35.0}, NOW + 9)
    assert set(_sent(table.telemetry("east-1", 1.7e9, 3, NOW + 30))) == never_read


def test_telemetry_reports_a_sensor_that_went_silent(table: ReadingTable) -> None:
    table.update_device("rs-e1", {"co2_ppm": 650.0, "t_zone_c": 21.5, "rh_pct": 35.0}, NOW)
    table.validate(NOW, CYCLE_S)
    table.telemetry("east-1", 1.7e9, 0, NOW)
    table.update_device("rs-e1", {}, NOW + 10)  # the poll failed: every point NaN
    table.validate(NOW + 10, CYCLE_S)
    sent = _sent(table.telemetry("east-1", 1.7e9, 1, NOW + 10))
    assert sent[("office-e1", "co2_ppm")] == (None, MISSING, NOW + 10)


def test_a_device_fault_marker_goes_up_as_missing_and_out_of_range(table: ReadingTable) -> None:
    # vav-m1's airflow is a float32 input: some devices report "no value" as 3.0e38 (finite).
    table.update_device("vav-m1", {"airflow_m3s": 3.0e38, "t_supply_c": -3.0e38}, NOW)
    table.validate(NOW, CYCLE_S)
    message = table.telemetry("east-1", 1.7e9, 0, NOW)
    sent = _sent(message)
    assert sent[("meeting-medium-1", "airflow_m3s")] == (None, OUT_OF_RANGE, NOW)
    assert sent[("meeting-medium-1", "t_supply_c")] == (None, OUT_OF_RANGE, NOW)
    assert {(r.zone, r.quantity) for r in table.beyond_wire} == {
        ("meeting-medium-1", Q.AIRFLOW_M3S),
        ("meeting-medium-1", Q.T_SUPPLY_C),
    }
    assert decode_telemetry(encode(message)) == message
    assert math.isnan(_clean(table, "meeting-medium-1", Q.AIRFLOW_M3S))
    # The next sensible reading goes up as it is, and is no longer counted.
    table.update_device("vav-m1", {"airflow_m3s": 0.2, "t_supply_c": 17.5}, NOW + 10)
    table.validate(NOW + 10, CYCLE_S)
    sent = _sent(table.telemetry("east-1", 1.7e9, 1, NOW + 10))
    assert sent[("meeting-medium-1", "airflow_m3s")] == (0.2, GOOD, NOW + 10)
    assert table.beyond_wire == ()


def test_a_value_beyond_the_wire_is_flagged_whatever_the_validation_said(
    table: ReadingTable,
) -> None:
    # Stale, so validation does not flag the range: the message must still carry no such value.
    table.update_device("rs-e1", {"co2_ppm": 1e13}, NOW - 100.0)
    table.validate(NOW, CYCLE_S)
    assert _quality(table, "office-e1", Q.CO2_PPM) == STALE
    sent = _sent(table.telemetry("east-1", 1.7e9, 0, NOW))
    assert sent[("office-e1", "co2_ppm")] == (None, STALE | OUT_OF_RANGE, NOW - 100.0)


def test_the_largest_value_the_wire_carries_goes_up_as_it_is(table: ReadingTable) -> None:
    table.update_device("pc-m1", {"people_in": MAX_ABS_VALUE, "people_out": -MAX_ABS_VALUE}, NOW)
    table.validate(NOW, CYCLE_S)
    sent = _sent(table.telemetry("east-1", 1.7e9, 0, NOW))
    # Out of the counter's range (validation), but a number the wire can carry.
    assert sent[("meeting-medium-1", "people_in")] == (MAX_ABS_VALUE, OUT_OF_RANGE, NOW)
    assert sent[("meeting-medium-1", "people_out")] == (-MAX_ABS_VALUE, OUT_OF_RANGE, NOW)
    assert table.beyond_wire == ()


@given(value=st.floats())
def test_any_device_value_makes_a_message_the_codec_takes(value: float) -> None:
    table = ReadingTable(_EXAMPLE)
    table.update_device("vav-m1", {"airflow_m3s": value}, NOW)
    table.validate(NOW, CYCLE_S)
    message = table.telemetry("east-1", 1.7e9, 0, NOW)
    assert decode_telemetry(encode(message)) == message
    sent_value, quality, _ = _sent(message)[("meeting-medium-1", "airflow_m3s")]
    if sent_value is None:
        assert quality & (MISSING | OUT_OF_RANGE)
    else:
        assert sent_value == value


# --- MQTT sensors -----------------------------------------------------------------------------


def test_an_mqtt_counter_message_updates_its_rows(table: ReadingTable) -> None:
    table.update_mqtt(TOPIC, b'{"in": 12, "out": 9, "ts": 1799999990.5, "battery": 87}', NOW)
    i_in, i_out = (
        _at(table, "meeting-small-1", Q.PEOPLE_IN),
        _at(table, "meeting-small-1", Q.PEOPLE_OUT),
    )
    assert (table.value[i_in], table.value[i_out]) == (12.0, 9.0)
    # The sensor's own timestamp, not the arrival time.
    assert (table.t[i_in], table.t[i_out]) == (1799999990.5, 1799999990.5)
    table.validate(NOW, CYCLE_S)
    sent = _sent(table.telemetry("east-1", 1.7e9, 0, NOW))
    assert sent[("meeting-small-1", "people_in")] == (12.0, GOOD, 1799999990.5)
    assert sent[("meeting-small-1", "people_out")] == (9.0, GOOD, 1799999990.5)


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b'{"in": "x", "out": 9, "ts": 1}',
        b'{"in": 12, "ts": 1}',  # no "out"
        b'{"in": 12, "out": 9}',  # no timestamp, though the file names one
        b'{"in": true, "out": 9, "ts": 1}',
        b'{"in": 1e999, "out": 9, "ts": 1}',
        b'{"in": NaN, "out": 9, "ts": 1}',
        b"[12, 9]",
        b"12",
        b"",
        b"\xff\xfe",
        b'{"in": 12, "out": 9, "ts": 1, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
    ],
)
def test_a_malformed_mqtt_payload_is_a_payload_error_and_changes_nothing(
    table: ReadingTable, payload: bytes
) -> None:
    table.update_mqtt(TOPIC, b'{"in": 5, "out": 2, "ts": 1799999000}', NOW)
    value, t = table.value.copy(), table.t.copy()
    with pytest.raises(PayloadError):
        table.update_mqtt(TOPIC, payload, NOW + 1)
    np.testing.assert_array_equal(table.value, value)
    np.testing.assert_array_equal(table.t, t)


@given(payload=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_payload_updates_the_counter_or_raises_payload_error(payload: bytes) -> None:
    table = ReadingTable(_EXAMPLE)
    try:
        table.update_mqtt(TOPIC, payload, NOW)
    except PayloadError:
        assert np.all(np.isnan(table.value))
    else:
        assert np.all(np.isfinite(table.value[9:]))


def test_a_huge_mqtt_sensor_value_goes_up_as_missing_and_out_of_range(
    table: ReadingTable,
) -> None:
    # Valid JSON and a finite number: the decoder takes it; only the wire's range refuses it.
    table.update_mqtt(TOPIC, b'{"in": 1e13, "out": 9, "ts": %d}' % NOW, NOW)
    table.validate(NOW, CYCLE_S)
    message = table.telemetry("east-1", 1.7e9, 0, NOW)
    sent = _sent(message)
    assert sent[("meeting-small-1", "people_in")] == (None, OUT_OF_RANGE, NOW)
    assert sent[("meeting-small-1", "people_out")] == (9.0, GOOD, NOW)
    assert [(r.zone, r.quantity, r.topic) for r in table.beyond_wire] == [
        ("meeting-small-1", Q.PEOPLE_IN, TOPIC)
    ]
    assert decode_telemetry(encode(message)) == message


def test_the_agent_counts_huge_values_and_keeps_cycling(tmp_path: Path) -> None:
    """The review's reproduction: such a value made Telemetry.of() raise inside cycle(), which
    ended the daemon's TaskGroup."""
    cfg = _gateway(
        tmp_path,
        '[[mqtt_sensor]]\ntopic = "sensors/rh-7"\nzone = "office-e1"\nfields = { rh_pct = "rh" }\n'
        f'[buffer]\npath = "{tmp_path}/buffer.sqlite"\n[audit]\npath = "{tmp_path}/audit.sqlite"\n',
    )
    clock = iter(NOW + k for k in range(1000))
    buffer = DiskBuffer(cfg.file.buffer.path, 100, synchronous="NORMAL")
    audit = AuditLog(cfg.file.audit.path, 100, synchronous="NORMAL")
    agent = Agent(cfg, buffer, audit, AgentMetrics(), clock=lambda: next(clock))

    async def poll() -> PollResult:
        return PollResult({"co2_ppm": 3.0e38}, requests=1)

    agent.devices["rs-1"].poll = poll  # type: ignore[method-assign]

    def sensor(payload: bytes) -> aiomqtt.Message:
        message = SimpleNamespace(topic=SimpleNamespace(value="sensors/rh-7"), payload=payload)
        return cast("aiomqtt.Message", message)

    async def run() -> None:
        await agent._on_message(sensor(b'{"rh": 1e13}'), 0.0)
        await agent.cycle(agent.clock(), CYCLE_S)
        await agent._on_message(sensor(b'{"rh": 40}'), 0.0)
        await agent.cycle(agent.clock(), CYCLE_S)

    try:
        asyncio.run(run())
    finally:
        buffer.close()
        audit.close()
    assert agent.seq == 2  # both cycles published
    sample = agent.metrics.registry.get_sample_value
    beyond = "ilma_agent_readings_beyond_wire_total"
    assert sample(beyond, {"zone": "office-e1", "point": "co2_ppm"}) == 1.0
    assert sample(beyond, {"zone": "office-e1", "point": "rh_pct"}) == 1.0
    # A reading, not a malformed payload: nothing was dropped.
    assert sample("ilma_agent_rejected_payloads_total", {"kind": "sensor"}) is None


def test_nested_fields_and_arrival_time(tmp_path: Path) -> None:
    cfg = _gateway(
        tmp_path,
        '[[mqtt_sensor]]\ntopic = "sensors/door-7"\nzone = "office-e1"\n'
        'fields = { people_in = "counts.in", people_out = "counts.out", co2_ppm = "air.co2" }\n',
    )
    table = ReadingTable(cfg)
    payload = {"counts": {"in": 40, "out": 38}, "air": {"co2": 612.5}, "ts": 1}
    table.update_mqtt("sensors/door-7", json.dumps(payload).encode(), NOW)
    mqtt_rows = [i for i, r in enumerate(table.rows) if r.topic == "sensors/door-7"]
    assert [(table.rows[i].quantity, table.value[i], table.t[i]) for i in mqtt_rows] == [
        (Q.PEOPLE_IN, 40.0, NOW),
        (Q.PEOPLE_OUT, 38.0, NOW),
        (Q.CO2_PPM, 612.5, NOW),
    ]  # no time_field: the arrival time
    with pytest.raises(PayloadError, match=r"counts\.out"):
        table.update_mqtt("sensors/door-7", b'{"counts": {"in": 41}, "air": {"co2": 600}}', NOW)
    with pytest.raises(PayloadError):
        table.update_mqtt("sensors/door-7", b'{"counts": 41, "air": {"co2": 600}}', NOW)


def test_a_sensor_timestamp_that_is_not_an_epoch_never_breaks_telemetry(
    table: ReadingTable,
) -> None:
    try:
        table.update_mqtt(TOPIC, b'{"in": 12, "out": 9, "ts": -1}', NOW)
    except PayloadError:
        return  # refused at the boundary: fine
    table.validate(NOW, CYCLE_S)
    table.telemetry("east-1", 1.7e9, 0, NOW)


def test_a_sensor_timestamp_from_the_future_does_not_silence_the_sensor(
    table: ReadingTable,
) -> None:
    in_ms = int(NOW * 1000)
    with contextlib.suppress(PayloadError):  # refused at the boundary: fine
        table.update_mqtt(TOPIC, b'{"in": 12, "out": 9, "ts": %d}' % in_ms, NOW)
    table.validate(NOW, CYCLE_S)
    table.telemetry("east-1", 1.7e9, 0, NOW)
    table.update_mqtt(TOPIC, b'{"in": 13, "out": 9, "ts": %d}' % (NOW + 10), NOW + 10)
    table.validate(NOW + 10, CYCLE_S)
    sent = _sent(table.telemetry("east-1", 1.7e9, 1, NOW + 10))
    assert sent.get(("meeting-small-1", "people_in"), (None,))[0] == 13.0


# --- live() -----------------------------------------------------------------------------------


def test_live_gives_the_clean_values_as_the_cores_columns(table: ReadingTable) -> None:
    table.update_device("rs-e1", {"co2_ppm": 650.0, "t_zone_c": 21.5, "rh_pct": 35.0}, NOW)
    table.update_device("rs-m1", {"co2_ppm": 6000.0, "t_zone_c": 22.0}, NOW)  # CO2 out of range
    table.update_device("pc-m1", {"people_in": 100.0, "people_out": 96.0}, NOW)
    table.update_device("vav-m1", {"airflow_m3s": 0.2, "t_supply_c": 17.5}, NOW)
    table.update_mqtt(TOPIC, b'{"in": 12, "out": 9, "ts": %d}' % NOW, NOW)
    table.validate(NOW, CYCLE_S)
    zones = ("meeting-small-1", "office-e1", "meeting-medium-1", "lobby")
    live = table.live(zones)
    nan = math.nan
    np.testing.assert_array_equal(live.counter_in, [12.0, nan, 100.0, nan])
    np.testing.assert_array_equal(live.counter_out, [9.0, nan, 96.0, nan])
    np.testing.assert_array_equal(live.co2_ppm, [nan, 650.0, nan, nan])
    np.testing.assert_array_equal(live.t_zone_c, [nan, 21.5, 22.0, nan])
    np.testing.assert_array_equal(live.t_supply_c, [nan, nan, 17.5, nan])
    # No outdoor sensor at this gateway.
    assert np.all(np.isnan(live.t_out_c))
    assert np.all(np.isnan(live.t_out_24h_c))
    for column in live:
        assert column.shape == (4,)
        assert column.dtype == np.float64


def test_live_before_any_reading_is_all_missing(table: ReadingTable) -> None:
    table.validate(NOW, CYCLE_S)
    live = table.live(table.zone_names)
    for column in live:
        assert np.all(np.isnan(column))
