"""Tests for bacnet_modbus.codec: golden registers per type and order, round trips, no crashes."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bacnet_modbus.codec import CodecError, decode, encode
from sensors.errors import IlmaError
from sensors.profiles import (
    ByteOrder,
    DataType,
    RegisterPoint,
    Table,
    WordOrder,
    load_profiles,
)

DEVICES = Path(__file__).resolve().parents[2] / "config" / "devices"

B, L = ByteOrder.BIG, ByteOrder.LITTLE
WB, WL = WordOrder.BIG, WordOrder.LITTLE
INT_TYPES = (DataType.BOOL, DataType.U16, DataType.S16, DataType.U32, DataType.S32)
# Independent of the code under test: the ranges as the Modbus data model defines them.
RANGES = {
    DataType.BOOL: (0, 1),
    DataType.U16: (0, 2**16 - 1),
    DataType.S16: (-(2**15), 2**15 - 1),
    DataType.U32: (0, 2**32 - 1),
    DataType.S32: (-(2**31), 2**31 - 1),
}
FLOAT32_MAX = (2 - 2**-23) * 2**127


def _point(
    type_: DataType,
    byte_order: ByteOrder = B,
    word_order: WordOrder = WB,
    scale: float = 1.0,
    offset: float = 0.0,
) -> RegisterPoint:
    return RegisterPoint(
        table=Table.COIL if type_ is DataType.BOOL else Table.HOLDING,
        address=0,
        type=type_,
        scale=scale,
        offset=offset,
        byte_order=byte_order,
        word_order=word_order,
    )


Order = tuple[ByteOrder, WordOrder]
# (type, byte order, word order, scale, offset, engineering value, registers as the client reads)
Golden = tuple[DataType, ByteOrder, WordOrder, float, float, float, list[int]]

# --- golden table -----------------------------------------------------------------------------

GOLDEN: list[Golden] = [
    # f32 21.5 is 0x41AC0000.
    (DataType.F32, B, WB, 1.0, 0.0, 21.5, [0x41AC, 0x0000]),
    (DataType.F32, B, WL, 1.0, 0.0, 21.5, [0x0000, 0x41AC]),
    (DataType.F32, L, WB, 1.0, 0.0, 21.5, [0xAC41, 0x0000]),
    (DataType.F32, L, WL, 1.0, 0.0, 21.5, [0x0000, 0xAC41]),
    # f32 -1.0 is 0xBF800000; the float32 nearest 0.1 is 0x3DCCCCCD.
    (DataType.F32, B, WB, 1.0, 0.0, -1.0, [0xBF80, 0x0000]),
    (DataType.F32, B, WB, 1.0, 0.0, 0.10000000149011612, [0x3DCC, 0xCCCD]),
    (DataType.F32, L, WL, 1.0, 0.0, 0.10000000149011612, [0xCDCC, 0xCC3D]),
    (DataType.F32, B, WB, 1.0, 0.0, -0.0, [0x8000, 0x0000]),
    # f32 in l/s on the wire, m3/s in ilma: 250.0 l/s (0x437A0000) is 0.25 m3/s.
    (DataType.F32, B, WB, 0.001, 0.0, 0.25, [0x437A, 0x0000]),
    # u16 and s16
    (DataType.U16, B, WB, 1.0, 0.0, 0x1234, [0x1234]),
    (DataType.U16, L, WB, 1.0, 0.0, 0x1234, [0x3412]),
    (DataType.U16, B, WL, 1.0, 0.0, 0x1234, [0x1234]),  # word order means nothing for 1 register
    (DataType.U16, B, WB, 1.0, 0.0, 65535, [0xFFFF]),
    (DataType.S16, B, WB, 1.0, 0.0, -1, [0xFFFF]),
    (DataType.S16, L, WB, 1.0, 0.0, -1, [0xFFFF]),
    (DataType.S16, B, WB, 1.0, 0.0, -2, [0xFFFE]),
    (DataType.S16, L, WB, 1.0, 0.0, -2, [0xFEFF]),
    (DataType.S16, B, WB, 1.0, 0.0, -32768, [0x8000]),
    (DataType.S16, B, WB, 1.0, 0.0, 32767, [0x7FFF]),
    # Tenths of a degree: 21.5 °C is 215, -5.3 °C is -53.
    (DataType.S16, B, WB, 0.1, 0.0, 21.5, [0x00D7]),
    (DataType.S16, B, WB, 0.1, 0.0, -5.3, [0xFFCB]),
    (DataType.S16, L, WB, 0.1, 0.0, -5.3, [0xCBFF]),
    # RH in tenths of a percent; a temperature sent unsigned as (t + 50) * 10.
    (DataType.U16, B, WB, 0.1, 0.0, 45.0, [0x01C2]),
    (DataType.U16, B, WB, 0.1, -50.0, 21.5, [0x02CB]),
    # u32 and s32
    (DataType.U32, B, WB, 1.0, 0.0, 0x12345678, [0x1234, 0x5678]),
    (DataType.U32, B, WL, 1.0, 0.0, 0x12345678, [0x5678, 0x1234]),
    (DataType.U32, L, WB, 1.0, 0.0, 0x12345678, [0x3412, 0x7856]),
    (DataType.U32, L, WL, 1.0, 0.0, 0x12345678, [0x7856, 0x3412]),
    (DataType.U32, B, WB, 1.0, 0.0, 2**32 - 1, [0xFFFF, 0xFFFF]),
    (DataType.U32, B, WB, 1.0, 0.0, 70000, [0x0001, 0x1170]),
    (DataType.S32, B, WB, 1.0, 0.0, -100000, [0xFFFE, 0x7960]),  # 0xFFFE7960
    (DataType.S32, B, WL, 1.0, 0.0, -100000, [0x7960, 0xFFFE]),
    (DataType.S32, L, WB, 1.0, 0.0, -100000, [0xFEFF, 0x6079]),
    (DataType.S32, L, WL, 1.0, 0.0, -100000, [0x6079, 0xFEFF]),
    (DataType.S32, B, WB, 1.0, 0.0, 2**31 - 1, [0x7FFF, 0xFFFF]),
    (DataType.S32, B, WB, 1.0, 0.0, -(2**31), [0x8000, 0x0000]),
    # Energy meter style: u32 watt-hours read as kWh.
    (DataType.U32, B, WB, 0.001, 0.0, 70.0, [0x0001, 0x1170]),
    # bool, and an inverted contact (normally closed: bit 0 means "on")
    (DataType.BOOL, B, WB, 1.0, 0.0, 1.0, [1]),
    (DataType.BOOL, B, WB, 1.0, 0.0, 0.0, [0]),
    (DataType.BOOL, B, WB, -1.0, 1.0, 1.0, [0]),
    (DataType.BOOL, B, WB, -1.0, 1.0, 0.0, [1]),
]


def _golden_id(case: Golden) -> str:
    type_, byte_order, word_order, scale, offset, value, _ = case
    return f"{type_}-{byte_order}-{word_order}-x{scale}+{offset}-{value}"


@pytest.mark.parametrize("case", GOLDEN, ids=_golden_id)
def test_golden_encode(case: Golden) -> None:
    type_, byte_order, word_order, scale, offset, value, registers = case
    assert encode(_point(type_, byte_order, word_order, scale, offset), value) == registers


@pytest.mark.parametrize("case", GOLDEN, ids=_golden_id)
def test_golden_decode(case: Golden) -> None:
    type_, byte_order, word_order, scale, offset, value, registers = case
    got = decode(_point(type_, byte_order, word_order, scale, offset), registers)
    assert type(got) is float
    assert got == pytest.approx(value, rel=1e-12, abs=0)


def test_bool_decodes_bools_and_bits() -> None:
    p = _point(DataType.BOOL)
    assert decode(p, [True]) == 1.0
    assert decode(p, [False]) == 0.0
    assert decode(p, [1]) == 1.0


def test_swapped_words_read_as_tiny_float() -> None:
    """The symptom docs/adding-a-device.md describes: 21.5 with its words swapped."""
    got = decode(_point(DataType.F32), [0x0000, 0x41AC])
    assert got == pytest.approx(2.356e-41, rel=1e-3)


def test_integer_encode_rounds_to_nearest() -> None:
    p = _point(DataType.S16, scale=0.1)
    assert encode(p, 21.54) == [215]
    assert encode(p, 21.56) == [216]
    assert encode(p, -0.04) == [0]
    assert encode(_point(DataType.U16), 65535.4) == [0xFFFF]


@pytest.mark.parametrize(
    "registers",
    [[0x7FC0, 0x0000], [0xFFC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000], [0x7F80, 0x0001]],
)
def test_non_finite_float32_is_an_error(registers: list[Any]) -> None:
    with pytest.raises(CodecError, match="float32"):
        decode(_point(DataType.F32), registers)


def test_decode_overflow_after_scale_is_an_error() -> None:
    p = _point(DataType.F32, scale=1e300)
    with pytest.raises(CodecError, match="overflows"):
        decode(p, [0x7F7F, 0xFFFF])  # the largest float32 × 1e300


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (DataType.U16, -1),
        (DataType.U16, 65536),
        (DataType.U16, -0.6),
        (DataType.U16, 65535.6),
        (DataType.S16, 32768),
        (DataType.S16, -32769),
        (DataType.U32, 2**32),
        (DataType.U32, -1),
        (DataType.S32, 2**31),
        (DataType.S32, -(2**31) - 1),
        (DataType.BOOL, 2),
        (DataType.BOOL, -1),
        (DataType.F32, 3.5e38),
        (DataType.F32, -1e39),
        (DataType.F32, 10**400),
        (DataType.U16, math.nan),
        (DataType.S32, math.inf),
        (DataType.F32, math.nan),
        (DataType.F32, -math.inf),
    ],
)
def test_encode_out_of_range_is_an_error(type_: DataType, value: float) -> None:
    with pytest.raises(CodecError):
        encode(_point(type_), value)


def test_encode_out_of_range_after_scale_is_an_error() -> None:
    # 6553.6 °C in tenths does not fit 16 bits: never wrap it to 0.
    with pytest.raises(CodecError, match="out of range"):
        encode(_point(DataType.U16, scale=0.1), 6553.6)
    with pytest.raises(CodecError):  # (1e308 - -1e308) overflows before scaling
        encode(_point(DataType.F32, offset=-1e308), 1e308)


@pytest.mark.parametrize(
    ("type_", "registers"),
    [
        (DataType.U16, []),
        (DataType.U16, [1, 2]),
        (DataType.F32, [1]),
        (DataType.S32, [1, 2, 3]),
        (DataType.BOOL, []),
        (DataType.BOOL, [0, 1]),
        (DataType.U16, [-1]),
        (DataType.U16, [65536]),
        (DataType.U32, [0, 70000]),
        (DataType.U16, [1.0]),
        (DataType.U16, ["1"]),
        (DataType.BOOL, [2]),
        (DataType.BOOL, [-1]),
        (DataType.BOOL, ["1"]),
    ],
)
def test_bad_registers_are_an_error(type_: DataType, registers: list[Any]) -> None:
    with pytest.raises(CodecError):
        decode(_point(type_), registers)


def test_codec_error_is_an_ilma_value_error() -> None:
    assert issubclass(CodecError, IlmaError)
    assert issubclass(CodecError, ValueError)


# --- properties -------------------------------------------------------------------------------

orders = st.tuples(st.sampled_from(ByteOrder), st.sampled_from(WordOrder))
# Scales and offsets as they appear in register maps: 0.001 .. 1000 either sign, offsets to ±1000.
scales = st.one_of(
    st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, -1.0, 0.5, 1 / 3, 3.6]),
    st.builds(lambda m, neg: -m if neg else m, st.floats(1e-3, 1e3), st.booleans()),
)
offsets = st.one_of(st.just(0.0), st.sampled_from([-50.0, 273.15, -40.0]), st.floats(-1e3, 1e3))
# Scales that multiply and divide float32 values exactly.
pow2_scales = st.builds(
    lambda k, neg: (-1.0 if neg else 1.0) * 2.0**k, st.integers(-8, 8), st.booleans()
)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _registers(type_: DataType) -> st.SearchStrategy[list[int]]:
    if type_ is DataType.BOOL:
        return st.lists(st.integers(0, 1), min_size=1, max_size=1)
    n = 2 if type_ in (DataType.U32, DataType.S32, DataType.F32) else 1
    return st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)


def _swap(r: int) -> int:
    return ((r & 0xFF) << 8) | (r >> 8)


def _registers_big_big(type_: DataType, raw: int) -> list[int]:
    """The registers of an integer by arithmetic alone (two's complement by masking)."""
    if type_ in (DataType.BOOL, DataType.U16, DataType.S16):
        return [raw & 0xFFFF]
    return [(raw >> 16) & 0xFFFF, raw & 0xFFFF]


@given(st.sampled_from(INT_TYPES), orders, scales, offsets, st.data())
def test_integer_registers_round_trip(
    type_: DataType, order: Order, scale: float, offset: float, data: st.DataObject
) -> None:
    p = _point(type_, *order, scale=scale, offset=offset)
    registers = data.draw(_registers(type_))
    assert encode(p, decode(p, registers)) == registers


@given(st.sampled_from(INT_TYPES), orders, scales, offsets, st.data())
def test_integer_values_round_trip_exactly(
    type_: DataType, order: Order, scale: float, offset: float, data: st.DataObject
) -> None:
    lo, hi = RANGES[type_]
    raw = data.draw(st.integers(lo, hi))
    value = raw * scale + offset
    p = _point(type_, *order, scale=scale, offset=offset)
    assert decode(p, encode(p, value)) == value
    # ...and the registers are the raw integer's, by arithmetic independent of struct.
    big_big = _registers_big_big(type_, raw)
    assert encode(_point(type_, scale=scale, offset=offset), value) == big_big


@given(st.sampled_from(DataType), st.one_of(float32s, st.integers(-(2**31), 2**32 - 1)))
def test_orders_are_the_permutations_they_claim(type_: DataType, value: float) -> None:
    """Byte order swaps the bytes of every register; word order reverses the registers."""
    try:
        big_big = encode(_point(type_), value)
    except CodecError:
        assume(False)
    assert encode(_point(type_, L, WB), value) == (
        big_big if type_ is DataType.BOOL else [_swap(r) for r in big_big]
    )
    assert encode(_point(type_, B, WL), value) == big_big[::-1]
    assert encode(_point(type_, L, WL), value) == (
        big_big if type_ is DataType.BOOL else [_swap(r) for r in big_big[::-1]]
    )


@given(orders, pow2_scales, st.data())
def test_float32_registers_round_trip(order: Order, scale: float, data: st.DataObject) -> None:
    p = _point(DataType.F32, *order, scale=scale)
    registers = data.draw(_registers(DataType.F32))
    try:
        value = decode(p, registers)
    except CodecError:
        assume(False)  # NaN and infinity have no value to encode
    if value == 0:
        # -0.0 + offset 0.0 is +0.0: both zero patterns are the one engineering value 0.
        assert decode(p, encode(p, value)) == 0
    else:
        assert encode(p, value) == registers


@given(orders, pow2_scales, float32s)
def test_float32_values_round_trip_exactly(order: Order, scale: float, x: float) -> None:
    p = _point(DataType.F32, *order, scale=scale)
    value = x * scale
    got = decode(p, encode(p, value))
    assert got == value
    # ...and the bits are IEEE 754 single precision, as a struct-free check of the sign and size.
    hi, lo = encode(_point(DataType.F32), x)
    assert (hi >> 15) == (1 if math.copysign(1.0, x) < 0 else 0)
    assert struct.unpack(">f", bytes([hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF]))[0] == x


@given(orders, scales, offsets, st.floats(-1e6, 1e6, width=32))
def test_float32_values_round_trip_to_float32_precision(
    order: Order, scale: float, offset: float, x: float
) -> None:
    p = _point(DataType.F32, *order, scale=scale, offset=offset)
    value = x * scale + offset
    got = decode(p, encode(p, value))
    # One float32 rounding of the raw value, plus double rounding around the offset.
    tolerance = 2.0**-22 * abs(x * scale) + 4 * math.ulp(max(abs(value), abs(offset)))
    assert abs(got - value) <= tolerance


def test_float32_encodes_the_nearest_float32() -> None:
    p = _point(DataType.F32)
    one_ulp = 2.0**-23
    assert encode(p, 1.0 + 0.4 * one_ulp) == [0x3F80, 0x0000]
    assert encode(p, 1.0 + 0.6 * one_ulp) == [0x3F80, 0x0001]


@given(st.sampled_from(INT_TYPES), orders, scales, offsets, st.data())
def test_encode_outside_the_raw_range_is_a_codec_error(
    type_: DataType, order: Order, scale: float, offset: float, data: st.DataObject
) -> None:
    lo, hi = RANGES[type_]
    raw = data.draw(st.one_of(st.integers(hi + 1, hi + 10**6), st.integers(lo - 10**6, lo - 1)))
    p = _point(type_, *order, scale=scale, offset=offset)
    with pytest.raises(CodecError):
        encode(p, raw * scale + offset)


@given(orders, st.floats(FLOAT32_MAX * 1.001, 1e308), st.booleans())
def test_encode_float32_beyond_its_range_is_a_codec_error(
    order: Order, magnitude: float, negative: bool
) -> None:
    with pytest.raises(CodecError):
        encode(_point(DataType.F32, *order), -magnitude if negative else magnitude)


@given(
    st.sampled_from(DataType),
    orders,
    scales,
    offsets,
    st.one_of(st.floats(), st.integers(-(10**400), 10**400)),
)
def test_encode_returns_registers_or_raises_codec_error(
    type_: DataType, order: Order, scale: float, offset: float, value: float
) -> None:
    p = _point(type_, *order, scale=scale, offset=offset)
    try:
        registers = encode(p, value)
    except CodecError:
        return
    assert math.isfinite(value)
    assert len(registers) == p.n_registers
    assert all(
        type(r) is int and 0 <= r <= (1 if type_ is DataType.BOOL else 0xFFFF) for r in registers
    )


@given(st.sampled_from(DataType), orders, scales, offsets, st.data())
def test_decode_gives_a_finite_float_or_a_codec_error(
    type_: DataType, order: Order, scale: float, offset: float, data: st.DataObject
) -> None:
    p = _point(type_, *order, scale=scale, offset=offset)
    registers = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=p.n_registers, max_size=p.n_registers)
    )
    try:
        value = decode(p, registers)
    except CodecError:
        assert type_ in (DataType.BOOL, DataType.F32)  # a bit above 1, or NaN/infinity
        return
    assert type(value) is float
    assert math.isfinite(value)


@given(st.sampled_from(DataType), st.lists(st.integers(0, 0xFFFF), max_size=6))
def test_decode_of_a_wrong_length_is_a_codec_error(type_: DataType, registers: list[Any]) -> None:
    p = _point(type_)
    assume(len(registers) != p.n_registers)
    with pytest.raises(CodecError, match="takes"):
        decode(p, registers)


# --- shipped profiles -------------------------------------------------------------------------


def _shipped_points() -> list[tuple[str, RegisterPoint]]:
    return [
        (f"{name}.{point_name}", point)
        for name, profile in load_profiles(DEVICES).items()
        for point_name, point in profile.points.items()
    ]


@pytest.mark.parametrize(("name", "point"), [p for p in _shipped_points() if p[1].writable])
def test_shipped_writable_points_encode_their_limits_and_default(
    name: str, point: RegisterPoint
) -> None:
    for value in (point.min, point.max, point.default):
        assert value is not None, name
        # Within half a raw step for integers, float32 precision for f32.
        step = abs(point.scale) / 2 if point.type is not DataType.F32 else 1e-6 * abs(value)
        assert decode(point, encode(point, value)) == pytest.approx(value, abs=step)


@pytest.mark.parametrize(("name", "point"), _shipped_points())
def test_shipped_points_decode_zeros(name: str, point: RegisterPoint) -> None:
    assert decode(point, [0] * point.n_registers) == point.offset, name
