"""Register codecs: Modbus registers (or bits) to engineering values and back, per device profile.

Registers are the 16-bit unsigned integers a Modbus client returns, each read on the wire as two
bytes A, B with value A·256 + B. A point's byte order says whether the device put its bytes in
that order ("big") or swapped them ("little"); its word order says whether a 32-bit value starts
with its high register ("big") or low register ("little"). pymodbus' own conversion helpers know
word order but not byte swap, so this module does it with `struct`.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Sequence

from sensors.errors import IlmaError
from sensors.profiles import ByteOrder, DataType, RegisterPoint, WordOrder

__all__ = ["CodecError", "decode", "encode"]

# struct format of each register type, read from big-endian bytes ABCD.
_FORMAT = {
    DataType.U16: ">H",
    DataType.S16: ">h",
    DataType.U32: ">I",
    DataType.S32: ">i",
    DataType.F32: ">f",
}


class CodecError(IlmaError, ValueError):
    """Registers that do not decode to a value, or a value a point's registers cannot hold."""


def decode(point: RegisterPoint, registers: Sequence[int]) -> float:
    """The engineering value `raw * scale + offset` of `point` from its registers.

    registers : `point.n_registers` ints in 0..65535 as the client read them; for a bool point,
    one bit (a bool or 0/1). CodecError on a wrong length, a value out of range or a float32
    that is NaN or infinite (a sensor fault marker, or a wrong word order).
    """
    _check_length(point, registers)
    raw: float
    if point.type is DataType.BOOL:
        bit = registers[0]
        if bit not in (0, 1):  # True == 1 and False == 0
            raise CodecError(f"a bool point takes one bit, 0 or 1, got {bit!r}")
        raw = int(bit)
    else:
        data = _to_bytes(point, registers)
        raw = struct.unpack(_FORMAT[point.type], data)[0]
        if not math.isfinite(raw):
            raise CodecError(
                f"registers {_hex(registers)} hold a float32 {raw}: the device reports no "
                "value, or the byte or word order is wrong"
            )
    value = raw * point.scale + point.offset
    if not math.isfinite(value):
        raise CodecError(f"raw {raw} × scale {point.scale} + offset {point.offset} overflows")
    return float(value)


def encode(point: RegisterPoint, value: float) -> list[int]:
    """The registers (for a bool point, `[0]` or `[1]`) that make `point` read back `value`.

    Integer types round `(value - offset) / scale` to the nearest integer (ties to even); f32
    takes the nearest float32. CodecError when value is NaN or infinite or its raw value is
    outside the type's range: a value is never wrapped or clipped silently.
    """
    try:
        v = float(value)
    except (OverflowError, TypeError, ValueError) as exc:
        raise CodecError(f"expected a finite number, got {value!r}") from exc
    if not math.isfinite(v):
        raise CodecError(f"expected a finite number, got {v}")
    raw = (v - point.offset) / point.scale
    if not math.isfinite(raw):
        raise CodecError(
            f"{v} is out of range: (value - offset {point.offset}) / scale {point.scale} overflows"
        )
    if point.type is DataType.F32:
        try:
            data = struct.pack(_FORMAT[DataType.F32], raw)
        except OverflowError as exc:
            raise CodecError(
                f"{v} is out of range for f32: raw {raw:g} exceeds the largest float32"
            ) from exc
        return _to_registers(point, data)
    raw_int = round(raw)
    lo, hi = point.type.raw_range
    if not lo <= raw_int <= hi:
        raise CodecError(
            f"{v} is out of range for {point.type} with scale {point.scale} and offset "
            f"{point.offset}: raw {raw_int} is outside {lo:g}..{hi:g}"
        )
    if point.type is DataType.BOOL:
        return [raw_int]
    return _to_registers(point, struct.pack(_FORMAT[point.type], raw_int))


def _check_length(point: RegisterPoint, registers: Sequence[int]) -> None:
    n = point.n_registers
    if len(registers) != n:
        what = "bit" if point.type is DataType.BOOL else "register"
        raise CodecError(
            f"type {point.type} takes {n} {what}{'s' if n != 1 else ''}, got {len(registers)}"
        )


def _to_bytes(point: RegisterPoint, registers: Sequence[int]) -> bytes:
    """The value's bytes in big-endian order ABCD, from registers in the device's order."""
    words: list[int] = []
    for r in registers:
        try:
            word = operator.index(r)  # any integer type (numpy too); floats and strings are not
        except TypeError as exc:
            raise CodecError(f"a register is an integer 0..65535, got {r!r}") from exc
        if not 0 <= word <= 0xFFFF:
            raise CodecError(f"a register is an integer 0..65535, got {word}")
        words.append(word)
    if point.word_order is WordOrder.LITTLE:
        words.reverse()
    byte_order = ">" if point.byte_order is ByteOrder.BIG else "<"
    return struct.pack(f"{byte_order}{len(words)}H", *words)


def _to_registers(point: RegisterPoint, data: bytes) -> list[int]:
    """Registers in the device's order from the value's big-endian bytes: `_to_bytes` inverted."""
    byte_order = ">" if point.byte_order is ByteOrder.BIG else "<"
    words = list(struct.unpack(f"{byte_order}{len(data) // 2}H", data))
    if point.word_order is WordOrder.LITTLE:
        words.reverse()
    return words


def _hex(registers: Sequence[int]) -> str:
    return "[" + ", ".join(f"0x{r:04X}" for r in registers) + "]"
