"""Tests for bacnet_modbus.planner: coverage, limits, greedy merging, splitting and unpacking."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacnet_modbus.planner import PlanError, ReadRequest, plan_reads, split_request, unpack
from sensors.errors import IlmaError
from sensors.profiles import DataType, RegisterPoint, RequestQuirks, Table, load_profiles

DEVICES = Path(__file__).resolve().parents[2] / "config" / "devices"
REGISTER_TYPES = [t for t in DataType if t is not DataType.BOOL]
TABLE_ORDER = {t: i for i, t in enumerate(Table)}


def _point(table: Table, address: int, type_: DataType) -> RegisterPoint:
    return RegisterPoint(table=table, address=address, type=type_)


def _limit(table: Table, quirks: RequestQuirks) -> int:
    return quirks.max_bits if table.is_bit else quirks.max_registers


def _memory(table: Table, address: int) -> int:
    """What a fake device holds at each address: distinct per table and address."""
    if table.is_bit:
        return (address * 7 + TABLE_ORDER[table]) % 3 % 2
    return (address * 31 + TABLE_ORDER[table] * 1000) % 0x10000


def _response(request: ReadRequest) -> list[int]:
    return [_memory(request.table, request.address + i) for i in range(request.count)]


@st.composite
def point_sets(
    draw: st.DrawFn, max_gap_between: int = 12, max_points: int = 12
) -> dict[str, RegisterPoint]:
    """Non-overlapping points in 1..4 tables, in a shuffled order, some near address 65535."""
    points: dict[str, RegisterPoint] = {}
    for table in draw(st.sets(st.sampled_from(Table), min_size=1)):
        address = draw(st.one_of(st.integers(0, 300), st.integers(65400, 65535)))
        for i in range(draw(st.integers(1, max_points))):
            type_ = DataType.BOOL if table.is_bit else draw(st.sampled_from(REGISTER_TYPES))
            if address + type_.n_registers - 1 > 65535:
                break
            points[f"{table}{i}"] = _point(table, address, type_)
            address += type_.n_registers + draw(st.integers(0, max_gap_between))
    names = list(points)
    draw(st.randoms(use_true_random=False)).shuffle(names)
    return {name: points[name] for name in names}


quirks_strategy = st.builds(
    RequestQuirks,
    max_registers=st.one_of(st.integers(2, 20), st.just(125)),
    max_bits=st.one_of(st.integers(1, 20), st.just(2000)),
    max_gap=st.integers(0, 16),
)


def _check_plan(points: dict[str, RegisterPoint], quirks: RequestQuirks) -> tuple[ReadRequest, ...]:
    """Assert the invariants every plan keeps, and return it."""
    plan = plan_reads(points, quirks)
    seen = [name for r in plan for name, _ in r.points]
    assert sorted(seen) == sorted(points), "every point exactly once"
    assert len(plan) <= len(points)
    for r in plan:
        assert 1 <= r.count <= _limit(r.table, quirks)
        assert r.address >= 0
        assert r.address + r.count - 1 <= 65535
        assert len(r.sizes) == len(r.points)
        ends = []
        for (name, offset), size in zip(r.points, r.sizes, strict=True):
            p = points[name]
            assert p.table is r.table, "no request mixes tables"
            assert r.address + offset == p.address
            assert size == p.n_registers
            assert offset + size <= r.count
            ends.append(offset + size)
        # No waste at either end, and no gap inside longer than max_gap.
        assert r.points[0][1] == 0
        assert max(ends) == r.count
        offsets = [o for _, o in r.points]
        assert offsets == sorted(offsets)
        for (_, offset), (_, next_offset), size in zip(
            r.points, r.points[1:], r.sizes, strict=False
        ):
            assert 0 <= next_offset - (offset + size) <= quirks.max_gap
    keys = [(TABLE_ORDER[r.table], r.address) for r in plan]
    assert keys == sorted(keys), "ordered by table, then address"
    assert len(set(keys)) == len(keys)
    return plan


@given(point_sets(), quirks_strategy)
def test_plan_covers_every_point_within_the_limits(
    points: dict[str, RegisterPoint], quirks: RequestQuirks
) -> None:
    _check_plan(points, quirks)


@given(point_sets(), quirks_strategy)
def test_plan_merges_greedily(points: dict[str, RegisterPoint], quirks: RequestQuirks) -> None:
    """A read ends only where the next point could not join it: a gap or the size limit."""
    plan = _check_plan(points, quirks)
    for r, nxt in itertools.pairwise(plan):
        if nxt.table is not r.table:
            continue
        first = points[nxt.points[0][0]]
        gap = first.address - (r.address + r.count)
        span = first.address + first.n_registers - r.address
        assert gap > quirks.max_gap or span > _limit(r.table, quirks)


@given(point_sets(), quirks_strategy)
def test_plan_is_deterministic_whatever_the_order_of_points(
    points: dict[str, RegisterPoint], quirks: RequestQuirks
) -> None:
    reordered = dict(sorted(points.items(), reverse=True))
    assert plan_reads(points, quirks) == plan_reads(reordered, quirks)


@given(point_sets(max_gap_between=0), st.integers(0, 16))
def test_contiguous_points_take_one_read_per_table(
    points: dict[str, RegisterPoint], max_gap: int
) -> None:
    plan = _check_plan(points, RequestQuirks(max_gap=max_gap))
    assert len(plan) == len({p.table for p in points.values()})


@given(point_sets(max_gap_between=8))
def test_gaps_within_max_gap_take_one_read_per_table(points: dict[str, RegisterPoint]) -> None:
    # At most 12 points of at most 2 registers with gaps up to 8 span at most 112 <= 125.
    plan = _check_plan(points, RequestQuirks(max_gap=8))
    assert len(plan) == len({p.table for p in points.values()})


@given(point_sets(max_gap_between=3), st.integers(2, 125))
def test_max_gap_zero_never_reads_an_unmapped_address(
    points: dict[str, RegisterPoint], max_registers: int
) -> None:
    plan = _check_plan(points, RequestQuirks(max_gap=0, max_registers=max_registers))
    for r in plan:
        assert sum(r.sizes) == r.count


@given(point_sets(), quirks_strategy)
def test_unpack_gives_each_point_exactly_its_registers(
    points: dict[str, RegisterPoint], quirks: RequestQuirks
) -> None:
    for r in plan_reads(points, quirks):
        got = unpack(r, _response(r))
        assert set(got) == {name for name, _ in r.points}
        for name, values in got.items():
            p = points[name]
            assert values == [_memory(p.table, p.address + k) for k in range(p.n_registers)]


@given(point_sets(), quirks_strategy)
def test_split_request_reads_runs_without_gaps(
    points: dict[str, RegisterPoint], quirks: RequestQuirks
) -> None:
    for r in plan_reads(points, quirks):
        parts = split_request(r, points)
        assert sorted(n for part in parts for n, _ in part.points) == sorted(n for n, _ in r.points)
        for part in parts:
            assert part.table is r.table
            assert r.address <= part.address
            assert part.address + part.count <= r.address + r.count
            # No gap: the points' registers add up to the read, so every address is some point's.
            assert sum(part.sizes) == part.count
            for (name, offset), size in zip(part.points, part.sizes, strict=True):
                assert part.address + offset == points[name].address
                assert size == points[name].n_registers
        # One read per contiguous run: consecutive parts are separated by an unmapped gap.
        for a, b in itertools.pairwise(parts):
            assert b.address > a.address + a.count
        # Unpacking the parts gives what unpacking the whole read gives.
        whole = unpack(r, _response(r))
        pieces = {k: v for part in parts for k, v in unpack(part, _response(part)).items()}
        assert pieces == whole


# --- examples ---------------------------------------------------------------------------------


def test_example_merges_across_small_gaps_and_splits_at_large_ones() -> None:
    points = {
        "a": _point(Table.INPUT, 0, DataType.U16),
        "b": _point(Table.INPUT, 1, DataType.F32),  # 1-2
        "c": _point(Table.INPUT, 5, DataType.S16),  # gap of 2 before it
        "d": _point(Table.INPUT, 20, DataType.U32),  # gap of 14 before it
        "e": _point(Table.HOLDING, 7, DataType.U16),
        "f": _point(Table.COIL, 3, DataType.BOOL),
        "g": _point(Table.COIL, 0, DataType.BOOL),
    }
    plan = plan_reads(points, RequestQuirks(max_gap=4))
    assert plan == (
        ReadRequest(Table.COIL, 0, 4, (("g", 0), ("f", 3)), (1, 1)),
        ReadRequest(Table.HOLDING, 7, 1, (("e", 0),), (1,)),
        ReadRequest(Table.INPUT, 0, 6, (("a", 0), ("b", 1), ("c", 5)), (1, 2, 1)),
        ReadRequest(Table.INPUT, 20, 2, (("d", 0),), (2,)),
    )
    assert split_request(plan[2], points) == (
        ReadRequest(Table.INPUT, 0, 3, (("a", 0), ("b", 1)), (1, 2)),
        ReadRequest(Table.INPUT, 5, 1, (("c", 0),), (1,)),
    )
    assert split_request(plan[0], points) == (
        ReadRequest(Table.COIL, 0, 1, (("g", 0),), (1,)),
        ReadRequest(Table.COIL, 3, 1, (("f", 0),), (1,)),
    )
    assert unpack(plan[2], [10, 11, 12, 13, 14, 15]) == {"a": [10], "b": [11, 12], "c": [15]}


def test_example_size_limit_splits_a_contiguous_block() -> None:
    points = {f"p{i}": _point(Table.HOLDING, 2 * i, DataType.F32) for i in range(5)}  # 0..9
    plan = plan_reads(points, RequestQuirks(max_registers=4))
    assert [(r.address, r.count) for r in plan] == [(0, 4), (4, 4), (8, 2)]
    # A 2-register point never straddles two reads, even when one register would still fit.
    plan = plan_reads(points, RequestQuirks(max_registers=5))
    assert [(r.address, r.count) for r in plan] == [(0, 4), (4, 4), (8, 2)]


def test_unpack_of_bits_accepts_pymodbus_byte_padding() -> None:
    points = {
        "x": _point(Table.DISCRETE, 0, DataType.BOOL),
        "y": _point(Table.DISCRETE, 2, DataType.BOOL),
    }
    (r,) = plan_reads(points, RequestQuirks())
    assert unpack(r, [True, False, False, False, False, False, False, False]) == {
        "x": [1],
        "y": [0],
    }
    with pytest.raises(PlanError):
        unpack(r, [True, False])
    with pytest.raises(PlanError):
        unpack(r, [False] * 9)


def test_unpack_of_registers_needs_exactly_count_values() -> None:
    (r,) = plan_reads({"x": _point(Table.INPUT, 0, DataType.U32)}, RequestQuirks())
    assert unpack(r, [1, 2]) == {"x": [1, 2]}
    for values in ([1], [1, 2, 3]):
        with pytest.raises(PlanError, match="got"):
            unpack(r, values)


def test_a_point_larger_than_a_read_is_an_error() -> None:
    points = {"f": _point(Table.HOLDING, 0, DataType.F32)}
    with pytest.raises(PlanError, match="at most 1"):
        plan_reads(points, RequestQuirks(max_registers=1))


def test_split_request_rejects_points_that_moved() -> None:
    points = {"a": _point(Table.INPUT, 0, DataType.U16)}
    (r,) = plan_reads(points, RequestQuirks())
    with pytest.raises(PlanError):
        split_request(r, {"a": _point(Table.INPUT, 1, DataType.U16)})
    with pytest.raises(PlanError):
        split_request(r, {})


def test_read_request_rejects_points_outside_it() -> None:
    with pytest.raises(PlanError):
        ReadRequest(Table.INPUT, 0, 2, (("a", 1),), (2,))
    with pytest.raises(PlanError):
        ReadRequest(Table.INPUT, 0, 2, (("a", 0),), ())
    assert issubclass(PlanError, IlmaError)
    assert issubclass(PlanError, ValueError)


def test_overlapping_points_share_one_read() -> None:
    # Profiles forbid overlaps, but a hand-built point set may view one register twice.
    points = {
        "whole": _point(Table.INPUT, 0, DataType.U32),
        "low": _point(Table.INPUT, 1, DataType.U16),
    }
    (r,) = plan_reads(points, RequestQuirks(max_gap=0))
    assert (r.address, r.count) == (0, 2)
    assert unpack(r, [7, 8]) == {"whole": [7, 8], "low": [8]}


# --- shipped profiles -------------------------------------------------------------------------

PROFILES = load_profiles(DEVICES)


def test_room_sensor_reads_in_one_request() -> None:
    p = PROFILES["room-sensor"]
    assert plan_reads(p.points, p.request) == (
        ReadRequest(
            Table.INPUT,
            0,
            4,
            (("co2_ppm", 0), ("t_zone_c", 1), ("rh_pct", 2), ("status", 3)),
            (1, 1, 1, 1),
        ),
    )


def test_people_counter_reads_through_its_gap_and_splits_around_it() -> None:
    p = PROFILES["people-counter"]
    (r,) = plan_reads(p.points, p.request)
    assert (r.table, r.address, r.count) == (Table.INPUT, 0, 9)
    assert r.count <= p.request.max_registers
    assert [(part.address, part.count) for part in split_request(r, p.points)] == [(0, 5), (8, 1)]
    # Without gap reads (a device answering exception 2), the counters still come in one read.
    no_gaps = plan_reads(p.points, p.request.with_overrides({"max_gap": 0}))
    assert [(x.address, x.count) for x in no_gaps] == [(0, 5), (8, 1)]


def test_vav_ahu_reads_setpoints_and_measurements_separately() -> None:
    p = PROFILES["vav-ahu"]
    plan = plan_reads(p.points, p.request)
    assert [(r.table, r.address, r.count) for r in plan] == [
        (Table.HOLDING, 0, 5),
        (Table.INPUT, 0, 4),
    ]
    assert [n for n, _ in plan[0].points] == [
        "airflow_setpoint_m3s",
        "t_heat_setpoint_c",
        "t_cool_setpoint_c",
        "occupancy_mode",
    ]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_shipped_profiles_plan_within_their_quirks(name: str) -> None:
    profile = PROFILES[name]
    _check_plan(dict(profile.points), profile.request)
    # ...and with the smallest reads a gateway might force on the device.
    shuffled = list(profile.points.items())
    random.Random(0).shuffle(shuffled)
    _check_plan(dict(shuffled), profile.request.with_overrides({"max_registers": 2, "max_gap": 0}))
