"""Tests for bacnet_modbus.modbus: answers that do not fit their request are failed reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, cast

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from bacnet_modbus.modbus import BusAddress, BusKind, FieldBusError, ModbusBus, ModbusDevice
from sensors.profiles import DeviceProfile, Table

# Two coils and a holding register: the coils and the register take one read each.
RELAYS = DeviceProfile.model_validate(
    {
        "name": "relays",
        "point": {
            "fan": {"table": "coil", "address": 0, "type": "bool"},
            "damper": {"table": "coil", "address": 1, "type": "bool"},
            "mode": {"table": "holding", "address": 10, "type": "u16"},
        },
    }
)


class ScriptedBus:
    """A bus whose device answers a read of `count` values of a table with `answer(table, count)`
    (ModbusBus.read's contract, but for the length of the answer)."""

    name = "b"

    def __init__(self, answer: Callable[[Table, int], list[int]]) -> None:
        self.lock = asyncio.Lock()
        self.answer = answer
        self.reads: list[tuple[Table, int, int, int]] = []

    async def read(self, table: Table, address: int, count: int, device_id: int) -> list[int]:
        self.reads.append((table, address, count, device_id))
        return self.answer(table, count)


def _device(bus: ScriptedBus) -> ModbusDevice:
    return ModbusDevice("relays-1", cast("ModbusBus", bus), 7, RELAYS, RELAYS.request)


def _answer(bits: int, registers: int) -> Callable[[Table, int], list[int]]:
    """Answers with `bits` more (or fewer) bits and `registers` more registers than asked."""

    def answer(table: Table, count: int) -> list[int]:
        return [1] * (count + bits) if table.is_bit else [3] * (count + registers)

    return answer


@pytest.mark.parametrize(
    ("bits", "registers"),
    [(-1, 0), (-2, 0), (0, 1), (0, -1)],
    ids=["one-bit-short", "no-bits", "a-register-too-many", "a-register-short"],
)
def test_an_answer_that_does_not_fit_is_a_failed_read_not_a_crash(
    bits: int, registers: int
) -> None:
    """A short coil answer used to escape poll() as the planner's PlanError, which ended the
    agent's poll TaskGroup."""
    bus = ScriptedBus(_answer(bits, registers))
    result = asyncio.run(_device(bus).poll())
    tries = 1 + RELAYS.request.retries
    assert (result.requests, result.errors) == (1 + tries, tries)  # the bad read, retried
    assert len(bus.reads) == result.requests
    bad, good = (("fan", "damper"), ("mode",)) if bits else (("mode",), ("fan", "damper"))
    assert all(math.isnan(result.values[name]) for name in bad)
    assert all(result.values[name] in (1.0, 3.0) for name in good)


def test_a_device_that_only_answers_short_goes_down_and_backs_off() -> None:
    bus = ScriptedBus(lambda _table, count: [0] * (count - 1))
    device = _device(bus)
    result = asyncio.run(device.poll())
    assert result.errors == result.requests
    assert device.down
    assert all(math.isnan(v) for v in result.values.values())


def test_bits_padded_to_whole_bytes_are_a_full_answer() -> None:
    bus = ScriptedBus(lambda table, _count: [1, 0] + [0] * 6 if table.is_bit else [5])
    result = asyncio.run(_device(bus).poll())
    assert result.errors == 0
    assert result.values == {"fan": 1.0, "damper": 0.0, "mode": 5.0}


# --- ModbusBus.read: what pymodbus hands back -------------------------------------------------


class FakeClient:
    """Stands for a connected pymodbus client: every read gets `response`."""

    connected = True

    def __init__(self, response: ModbusPDU) -> None:
        self.response = response
        self.reads: list[tuple[int, int, int]] = []

    async def _read(self, address: int, *, count: int, device_id: int) -> ModbusPDU:
        self.reads.append((address, count, device_id))
        return self.response

    read_coils = read_discrete_inputs = read_holding_registers = read_input_registers = _read


def _bus(monkeypatch: pytest.MonkeyPatch, response: ModbusPDU) -> ModbusBus:
    bus = ModbusBus("rs485", BusAddress(BusKind.RTU, device="/dev/null"))
    client = FakeClient(response)

    async def connected() -> Any:  # the fake, standing for a pymodbus client
        return client

    monkeypatch.setattr(bus, "_connected", connected)
    return bus


@pytest.mark.parametrize(
    ("table", "response"),
    [(Table.COIL, ReadCoilsResponse()), (Table.DISCRETE, ReadDiscreteInputsResponse())],
)
def test_a_short_bit_answer_is_a_fieldbus_error_naming_the_read(
    monkeypatch: pytest.MonkeyPatch, table: Table, response: ModbusPDU
) -> None:
    # A read of 10 bits answered with a byte count of 1: pymodbus decodes 8 bits, unchecked.
    response.decode(bytes([1, 0b101]))
    assert len(response.bits) == 8
    bus = _bus(monkeypatch, response)
    with pytest.raises(FieldBusError, match=rf"rs485: device 7 .* 10 {table} bits from 40 with 8"):
        asyncio.run(bus.read(table, 40, 10, 7))
    # Eight asked for: the same answer is whole.
    assert asyncio.run(bus.read(table, 40, 8, 7)) == [1, 0, 1, 0, 0, 0, 0, 0]


def test_a_short_register_answer_is_a_fieldbus_error_naming_the_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = _bus(monkeypatch, ReadHoldingRegistersResponse(registers=[1, 2]))
    with pytest.raises(
        FieldBusError, match=r"rs485: device 7 .* 3 holding registers from 5 with 2"
    ):
        asyncio.run(bus.read(Table.HOLDING, 5, 3, 7))
