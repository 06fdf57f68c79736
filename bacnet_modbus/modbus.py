"""Modbus TCP and RTU: one connection and one lock per bus, coalesced reads, self-healing devices.

A bus (a TCP connection to a device or gateway, or a serial line) carries one request at a time:
its lock is held for one request, never for a whole device, so devices on one bus interleave.
A device reads its points with the fewest requests its quirks allow (bacnet_modbus.planner). A
device that stops answering backs off by itself, exponentially with jitter, and while it backs
off costs its bus nothing but one probe request per backoff period, so a dead device never
stalls the live ones on the same bus.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from bacnet_modbus.codec import CodecError, decode, encode
from bacnet_modbus.planner import PlanError, ReadRequest, plan_reads, split_request, unpack
from sensors.errors import IlmaError
from sensors.profiles import DeviceProfile, RegisterPoint, RequestQuirks, Table

log = logging.getLogger(__name__)

# Modbus exception codes (Modbus Application Protocol v1.1b3 §7).
ILLEGAL_DATA_ADDRESS = 2
# Worth asking again: acknowledge (5), device busy (6), gateway target failed to respond (11).
RETRYABLE = frozenset({5, 6, 11})


class FieldBusError(IlmaError, OSError):
    """A request that got no usable answer: connection lost, timeout, or a Modbus exception."""


class DeviceException(FieldBusError):  # noqa: N818  (the Modbus spec calls these "exceptions")
    """The device answered with a Modbus exception code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class BusKind(StrEnum):
    TCP = "tcp"
    RTU = "rtu"


@dataclass(frozen=True)
class BusAddress:
    """Where a bus is: a TCP host and port, or a serial device and its line settings."""

    kind: BusKind
    host: str = "127.0.0.1"
    port: int = 502
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.kind is BusKind.TCP else self.device


class ModbusBus:
    """One Modbus connection, used by one request at a time; reconnects on demand."""

    def __init__(self, name: str, address: BusAddress, timeout_s: float = 1.0) -> None:
        self.name = name
        self.address = address
        self.timeout_s = timeout_s
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        a = self.address
        # retries=0 and no reconnect task of pymodbus' own: retries, backoff and reconnects are
        # ours, per device, so that one dead device cannot hold the bus.
        if a.kind is BusKind.TCP:
            return AsyncModbusTcpClient(
                a.host, port=a.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            a.device,
            baudrate=a.baudrate,
            parity=a.parity,
            stopbits=a.stopbits,
            bytesize=a.bytesize,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    async def _connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        self._client = self._make_client()
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            log.debug("bus %s: connect to %s failed: %s", self.name, self.address, exc)
        if not ok:
            self._client.close()
            self._client = None
            raise FieldBusError(f"bus {self.name}: cannot connect to {self.address}")
        return self._client

    async def read(self, table: Table, address: int, count: int, device_id: int) -> list[int]:
        """`count` registers (or bits, as 0/1) from `address` of `table`; FieldBusError if none.
        The caller holds `lock`."""
        client = await self._connected()
        call = {
            Table.HOLDING: client.read_holding_registers,
            Table.INPUT: client.read_input_registers,
            Table.COIL: client.read_coils,
            Table.DISCRETE: client.read_discrete_inputs,
        }[table]
        response = await self._call(call, address, count=count, device_id=device_id)
        if table.is_bit:
            # pymodbus pads the bits to whole bytes but does not check the answer's byte count
            # against `count`: a device (or a gateway) that answers short gives fewer bits.
            bits = list(response.bits)
            if len(bits) < count:
                raise FieldBusError(
                    f"bus {self.name}: device {device_id} answered a read of {count} {table} "
                    f"bits from {address} with {len(bits)}"
                )
            return [int(b) for b in bits[:count]]
        registers = list(response.registers)
        if len(registers) != count:
            raise FieldBusError(
                f"bus {self.name}: device {device_id} answered a read of {count} {table} "
                f"registers from {address} with {len(registers)}"
            )
        return registers

    async def write(
        self, table: Table, address: int, values: Sequence[int], device_id: int
    ) -> None:
        """Write registers (FC6 for one, FC16 for more) or one coil (FC5). Caller holds `lock`."""
        client = await self._connected()
        if table is Table.COIL:
            await self._call(client.write_coil, address, bool(values[0]), device_id=device_id)
        elif table is not Table.HOLDING:
            raise FieldBusError(f"table {table} is read-only")
        elif len(values) == 1:
            await self._call(client.write_register, address, values[0], device_id=device_id)
        else:
            await self._call(client.write_registers, address, list(values), device_id=device_id)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:  # noqa: ANN401
        try:
            # pymodbus has its own timeout; ours is the backstop should it never return.
            async with asyncio.timeout(self.timeout_s * 2 + 1):
                response = await fn(*args, **kw)
        except (TimeoutError, ModbusException, OSError) as exc:
            # A lost answer leaves the connection in an unknown state: start afresh next time.
            self.close()
            raise FieldBusError(f"bus {self.name}: {type(exc).__name__}: {exc}") from exc
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise DeviceException(f"bus {self.name}: Modbus exception {code}", code)
        return response

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass
class PollResult:
    """One poll of a device: engineering values by point (NaN where a read failed)."""

    values: dict[str, float]
    requests: int = 0  # requests sent
    errors: int = 0  # requests that failed
    latency_s: float = 0.0  # from the first request to the last answer
    skipped: bool = False  # backing off: nothing was asked


@dataclass
class _Health:
    failures: int = 0  # consecutive failed polls
    retry_at: float = 0.0  # monotonic time of the next attempt while backing off
    down: bool = False


# A failed device waits this long before its next try, doubling per failure up to the cap.
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0


@dataclass
class ModbusDevice:
    """A device on a bus, read through its profile with the quirks it needs."""

    name: str
    bus: ModbusBus
    device_id: int
    profile: DeviceProfile
    quirks: RequestQuirks
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    _plan: tuple[ReadRequest, ...] = ()
    _health: _Health = field(default_factory=_Health)

    def __post_init__(self) -> None:
        self._plan = plan_reads(self.profile.points, self.quirks)

    @property
    def plan(self) -> tuple[ReadRequest, ...]:
        return self._plan

    @property
    def down(self) -> bool:
        return self._health.down

    def point(self, name: str) -> RegisterPoint:
        return self.profile.points[name]

    async def poll(self) -> PollResult:
        """Read every point once. While backing off, only one probe request is tried when its
        time has come (and nothing before)."""
        now = self.clock()
        values = dict.fromkeys(self.profile.points, math.nan)
        h = self._health
        if h.down and now < h.retry_at:
            return PollResult(values, skipped=True)
        result = PollResult(values)
        t0 = self.clock()
        plan = self._plan[:1] if h.down else self._plan
        tries = 1 if h.down else 1 + self.quirks.retries
        for i, request in enumerate(list(plan)):
            if i and self.quirks.pause_s > 0:
                await asyncio.sleep(self.quirks.pause_s)
            try:
                by_point = self._unpack(request, await self._read(request, tries, result))
            except FieldBusError:
                continue
            for name, regs in by_point.items():
                try:
                    values[name] = decode(self.profile.points[name], regs)
                except CodecError as exc:
                    log.debug("device %s point %s: %s", self.name, name, exc)
        result.latency_s = self.clock() - t0
        self._account(result.errors < result.requests or result.requests == 0)
        return result

    async def _read(self, request: ReadRequest, tries: int, result: PollResult) -> list[int]:
        for attempt in range(tries):
            result.requests += 1
            try:
                async with self.bus.lock:
                    values = await self.bus.read(
                        request.table, request.address, request.count, self.device_id
                    )
                self._unpack(request, values)  # an answer that does not fit is a failed read
            except DeviceException as exc:
                if exc.code == ILLEGAL_DATA_ADDRESS and self._splittable(request):
                    result.requests -= 1
                    return await self._read_split(request, tries, result)
                result.errors += 1
                if exc.code not in RETRYABLE or attempt + 1 == tries:
                    raise
            except FieldBusError:
                result.errors += 1
                if attempt + 1 == tries:
                    raise
            else:
                return values
        raise FieldBusError("unreachable")  # pragma: no cover

    def _unpack(self, request: ReadRequest, values: list[int]) -> dict[str, list[int]]:
        """Each point's registers of an answer; FieldBusError (not the planner's PlanError, which
        would end the caller's poll) when the answer does not fit the request."""
        try:
            return unpack(request, values)
        except PlanError as exc:
            raise FieldBusError(f"device {self.name}: {exc}") from exc

    def _splittable(self, request: ReadRequest) -> bool:
        return len(split_request(request, self.profile.points)) > 1

    async def _read_split(self, request: ReadRequest, tries: int, result: PollResult) -> list[int]:
        """The device refuses reads through its unmapped addresses: read around the gaps from
        now on, and assemble this request's answer from the parts."""
        parts = split_request(request, self.profile.points)
        log.info(
            "device %s refuses reads across gaps at %s %d..%d: reading %d parts instead",
            self.name, request.table, request.address, request.address + request.count - 1,
            len(parts),
        )  # fmt: skip
        self._plan = tuple(p for r in self._plan for p in ((*parts,) if r == request else (r,)))
        registers = [0] * request.count
        for part in parts:
            got = await self._read(part, tries, result)
            start = part.address - request.address
            registers[start : start + part.count] = got
        return registers

    def _account(self, ok: bool) -> None:
        h = self._health
        if ok:
            if h.down:
                log.info("device %s (bus %s) answers again", self.name, self.bus.name)
            h.failures, h.down = 0, False
            return
        h.failures += 1
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (h.failures - 1))
        h.retry_at = self.clock() + delay * self.rng.uniform(0.8, 1.2)
        if not h.down:
            log.warning(
                "device %s (bus %s, id %d) does not answer; retrying with backoff",
                self.name, self.bus.name, self.device_id,
            )  # fmt: skip
        h.down = True

    async def read_point(self, name: str) -> float:
        """One point's value now (for read-back after a write); FieldBusError if unreadable."""
        point = self.profile.points[name]
        async with self.bus.lock:
            regs = await self.bus.read(
                point.table, point.address, point.n_registers, self.device_id
            )
        return decode(point, regs)

    async def write_point(self, name: str, value: float) -> None:
        """Encode and write one point. The caller has checked the point's limits; CodecError if
        the value does not fit the register type, FieldBusError if the write failed."""
        point = self.profile.points[name]
        registers = encode(point, value)
        async with self.bus.lock:
            await self.bus.write(point.table, point.address, registers, self.device_id)
