"""Virtual Modbus devices: device profiles served by a real pymodbus server, values set live.

A virtual device holds an engineering value per point of its profile and serves it through the
profile's register map (same codecs as the agent: bacnet_modbus.codec), so the agent reads and
writes it exactly as it would a real device; unmapped registers between its points read as 0
(or, with "refuse_gaps", answer "illegal data address", as some devices do). Devices share a
bus: a TCP server, or an RTU server on a serial line (a socat pseudo-terminal in tests) that,
like a real RS-485 line, stays silent for an address nobody answers to and can take the time
the bytes would take at the line's baud rate.

Run as a process: ``python -m sim.devices --spec SPEC.json``. The spec names the buses and
devices; a JSON control file, re-read when it changes, sets point values and silences devices
(``{"values": {"dev": {"point": 1.0}}, "silent": ["dev"]}``); a JSON state file, rewritten
when anything changes, shows every point's value (what the agent wrote included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from bacnet_modbus.codec import CodecError, decode, encode
from sensors.profiles import DeviceProfile, RegisterPoint, Table, load_profiles

log = logging.getLogger(__name__)

# Function codes by the table they touch (Modbus Application Protocol v1.1b3 §6).
_FC_TABLE = {
    1: Table.COIL, 5: Table.COIL, 15: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 23: Table.HOLDING,
    4: Table.INPUT,
}  # fmt: skip
_BLOCK_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)


@dataclass
class VirtualDevice:
    """One device: a profile, a Modbus address and a value per point."""

    name: str
    device_id: int
    profile: DeviceProfile
    values: dict[str, float] = field(default_factory=dict)
    # True: a read through unmapped registers gets "illegal data address" (some devices do;
    # the client then reads around the gaps). False: they read as 0.
    refuse_gaps: bool = False
    # Points set from outside (control file) since the last access: pushed into the registers
    # even when writable (a BMS operator changing a setpoint).
    _dirty: set[str] = field(default_factory=set)
    # Points a client wrote, kept as the device holds them.
    _registers: dict[Table, list[int]] = field(default_factory=dict)
    _starts: dict[Table, int] = field(default_factory=dict)
    changed: bool = True

    def __post_init__(self) -> None:
        for name, p in self.profile.points.items():
            if p.table.is_bit:
                raise ValueError(f"{self.name}: bit points ({name}) are not simulated")
            default = p.default if p.default is not None else (p.min if p.min is not None else 0.0)
            self.values.setdefault(name, max(default, p.min) if p.min is not None else default)
        self._dirty = set(self.profile.points)

    def set(self, point: str, value: float) -> None:
        if point not in self.profile.points:
            raise KeyError(f"{self.name} has no point {point!r}")
        self.values[point] = float(value)
        self._dirty.add(point)
        self.changed = True

    def simdevice(self, action: Any) -> SimDevice:  # noqa: ANN401  (pymodbus' action type)
        """The pymodbus device: one block per table, only the mapped registers defined."""
        blocks: list[list[SimData]] = []
        for table in _BLOCK_ORDER:
            points = [p for p in self.profile.points.values() if p.table is table]
            if not points:
                # pymodbus wants every block; a lone register far away stands for "none".
                kind = SimType.BITS if table.is_bit else SimType.REGISTERS
                blocks.append(
                    [SimData(65_000, count=16 if table.is_bit else 1, values=0, datatype=kind)]
                )
                continue
            if self.refuse_gaps:  # only the mapped registers exist
                blocks.append(
                    [
                        SimData(
                            p.address, count=p.n_registers, values=0, datatype=SimType.REGISTERS
                        )
                        for p in sorted(points, key=lambda p: p.address)
                    ]
                )
            else:  # unmapped registers between the points read as 0, as the profiles say
                start = min(p.address for p in points)
                end = max(p.address + p.n_registers for p in points)
                blocks.append(
                    [SimData(start, count=end - start, values=0, datatype=SimType.REGISTERS)]
                )
        return SimDevice(
            id=self.device_id,
            simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
            action=action,
        )

    def sync(self, table: Table, start: int, registers: list[int], writing: bool) -> None:
        """Before an access: client writes since the last access become values; values become
        registers (the point's encoding)."""
        self._registers[table] = registers
        self._starts[table] = start
        for name, p in self.profile.points.items():
            if p.table is not table:
                continue
            at = p.address - start
            regs = registers[at : at + p.n_registers]
            if p.writable and name not in self._dirty:
                # What a client wrote is the device's value now.
                try:
                    value = decode(p, regs)
                except CodecError:
                    continue
                if value != self.values.get(name):
                    self.values[name] = value
                    self.changed = True
            else:
                registers[at : at + p.n_registers] = _encode_clamped(p, self.values[name])
                self._dirty.discard(name)
        del writing

    def settle_writes(self) -> None:
        """After the server applied a write: the written registers become the values."""
        for table, registers in self._registers.items():
            self.sync(table, self._starts[table], registers, writing=False)


def _encode_clamped(p: RegisterPoint, value: float) -> list[int]:
    try:
        return encode(p, value)
    except CodecError:
        lo, hi = p.type.raw_range
        raw = min(max((value - p.offset) / p.scale, lo), hi) if math.isfinite(value) else 0.0
        return encode(p, raw * p.scale + p.offset)


@dataclass
class VirtualBus:
    """Devices on one TCP endpoint or one serial line."""

    kind: str  # "tcp" or "rtu"
    devices: list[VirtualDevice]
    port: int = 0  # tcp
    device: str = ""  # rtu: the serial device (one end of a pty pair)
    baudrate: int = 9600
    # Serve at the speed of the line: a request and its answer take their bytes' time.
    emulate_baud: bool = False
    silent: set[str] = field(default_factory=set)  # devices that do not answer
    _server: ModbusTcpServer | ModbusSerialServer | None = None

    def _action_for(self, dev: VirtualDevice) -> Any:  # noqa: ANN401
        async def action(  # noqa: PLR0917  (the signature pymodbus calls)
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            del address
            if dev.name in self.silent:
                if self.kind == "tcp":
                    return ExcCodes.GATEWAY_NO_RESPONSE
                await asyncio.sleep(3600)  # on a serial line, the answer never comes
            table = _FC_TABLE.get(fc)
            if table is None:
                return ExcCodes.ILLEGAL_FUNCTION
            dev.sync(table, start, registers, set_values is not None)
            if set_values is not None:
                # The server writes the registers after this returns: take them next access.
                asyncio.get_running_loop().call_soon(dev.settle_writes)
            if self.emulate_baud:
                # RTU frame: id, fc, addr/count or byte count, data, CRC; 11 bits per byte (8N1 +
                # start + stop), plus 3.5 character times of silence each way.
                n_bytes = 8 + 5 + 2 * count
                await asyncio.sleep((n_bytes + 7) * 11 / self.baudrate)
            return None

        return action

    def _silent_filter(self, sending: bool, data: bytes) -> bytes:
        """An RTU line: nothing goes out for a silent device's address."""
        if sending and data and self.kind == "rtu":
            ids = {d.device_id for d in self.devices if d.name in self.silent}
            if data[0] in ids:
                return b""
        return data

    async def serve(self) -> None:
        devices = [d.simdevice(self._action_for(d)) for d in self.devices]
        if self.kind == "tcp":
            self._server = ModbusTcpServer(
                devices, address=("127.0.0.1", self.port), trace_packet=self._silent_filter
            )
        else:
            self._server = ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                port=self.device,
                baudrate=self.baudrate,
                ignore_missing_devices=True,  # RS-485: an address nobody has gets no answer
                trace_packet=self._silent_filter,
            )
        await self._server.serve_forever()

    async def shutdown(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]


@dataclass
class Plant:
    """Every virtual bus of a spec, with its control and state files."""

    buses: list[VirtualBus]
    control: Path | None = None
    state: Path | None = None
    _control_mtime: float = -1.0

    @property
    def devices(self) -> dict[str, VirtualDevice]:
        return {d.name: d for b in self.buses for d in b.devices}

    def apply_control(self) -> None:
        """Re-read the control file if it changed."""
        if self.control is None:
            return
        try:
            mtime = self.control.stat().st_mtime_ns
            if mtime == self._control_mtime:
                return
            doc = json.loads(self.control.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.debug("control file not read: %s", exc)
            return
        self._control_mtime = mtime
        devices = self.devices
        for name, values in doc.get("values", {}).items():
            for point, value in values.items():
                devices[name].set(point, value)
        silent = set(doc.get("silent", []))
        for bus in self.buses:
            bus.silent = {d.name for d in bus.devices} & silent

    def write_state(self) -> None:
        devices = self.devices
        if self.state is None or not any(d.changed for d in devices.values()):
            return
        doc = {name: dict(d.values) for name, d in devices.items()}
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        tmp.replace(self.state)
        for d in devices.values():
            d.changed = False

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for i, bus in enumerate(self.buses):
                tg.create_task(bus.serve(), name=f"bus-{i}")
            tg.create_task(self._files(), name="files")

    async def _files(self) -> None:
        while True:
            self.apply_control()
            self.write_state()
            await asyncio.sleep(0.05)


def plant_from_spec(spec: dict[str, Any], profiles: dict[str, DeviceProfile]) -> Plant:
    buses = []
    for b in spec["buses"]:
        devices = [
            VirtualDevice(
                d["name"],
                int(d["id"]),
                profiles[d["profile"]],
                dict(d.get("values", {})),
                refuse_gaps=bool(d.get("refuse_gaps", False)),
            )
            for d in b["devices"]
        ]
        buses.append(
            VirtualBus(
                kind=b["kind"],
                devices=devices,
                port=int(b.get("port", 0)),
                device=str(b.get("device", "")),
                baudrate=int(b.get("baudrate", 9600)),
                emulate_baud=bool(b.get("emulate_baud", False)),
            )
        )
    control = spec.get("control")
    state = spec.get("state")
    return Plant(buses, Path(control) if control else None, Path(state) if state else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.devices", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="JSON: buses and devices")
    parser.add_argument(
        "--profiles", type=Path, default=Path(__file__).parents[1] / "config" / "devices"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    plant = plant_from_spec(spec, load_profiles(args.profiles))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(plant.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
