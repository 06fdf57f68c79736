"""Tests for sensors.profiles: shipped profiles load, bad ones report every problem at its key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from sensors.config import ConfigError
from sensors.profiles import (
    ByteOrder,
    DataType,
    DeviceProfile,
    Quantity,
    RegisterPoint,
    RequestQuirks,
    Table,
    WordOrder,
    load_profile,
    load_profiles,
    parse_profile,
    point_set_problems,
)

DEVICES = Path(__file__).resolve().parents[2] / "config" / "devices"
SHIPPED = sorted(DEVICES.glob("*.toml"))

HEADER = """\
name = "test-device"
vendor = "Test"
model = "T-1"
"""


def _write(tmp_path: Path, body: str, name: str = "device.toml", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return path


def _problems(path: Path) -> list[tuple[str, str]]:
    """(key path, message) of every problem, after checking each names the file."""
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    for p in info.value.problems:
        assert p.source == str(path)
    assert str(path) in str(info.value)
    return [(p.loc, p.message) for p in info.value.problems]


# --- shipped profiles -------------------------------------------------------------------------


def test_the_three_profiles_are_shipped() -> None:
    assert {p.name for p in SHIPPED} >= {"people-counter.toml", "room-sensor.toml", "vav-ahu.toml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_profile_loads(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem  # the file is named after the profile it holds
    assert profile.points
    for name, point in profile.points.items():
        assert point.description, f"{name} says what it is"
        assert point.quantity is not None, f"{name} says what it measures or commands"
        if point.writable:
            assert point.min is not None
            assert point.max is not None
            assert point.default is not None
            assert point.min <= point.default <= point.max


def test_load_profiles_keys_by_name() -> None:
    profiles = load_profiles(DEVICES)
    assert set(profiles) == {load_profile(p).name for p in SHIPPED}
    assert {"people-counter", "room-sensor", "vav-ahu"} <= set(profiles)


def test_people_counter_profile() -> None:
    p = load_profile(DEVICES / "people-counter.toml")
    by_quantity = {pt.quantity: pt for pt in p.points.values()}
    for q in (Quantity.PEOPLE_IN, Quantity.PEOPLE_OUT):
        assert by_quantity[q].type is DataType.U32
        assert by_quantity[q].table is Table.INPUT
        assert by_quantity[q].unit == "count"
    assert by_quantity[Quantity.PEOPLE_COUNT].type is DataType.S16
    assert Quantity.STATUS in by_quantity
    assert p.request.max_registers == 16
    assert p.request.pause_s == pytest.approx(0.02)


def test_room_sensor_profile() -> None:
    p = load_profile(DEVICES / "room-sensor.toml")
    co2, t, rh = p.points["co2_ppm"], p.points["t_zone_c"], p.points["rh_pct"]
    assert (co2.type, co2.unit, co2.min, co2.max) == (DataType.U16, "ppm", 0.0, 5000.0)
    assert (t.type, t.scale, t.unit, t.min, t.max) == (DataType.S16, 0.1, "degC", -20.0, 60.0)
    assert (rh.type, rh.scale, rh.unit) == (DataType.U16, 0.1, "%")


def test_vav_ahu_profile() -> None:
    p = load_profile(DEVICES / "vav-ahu.toml")
    by_quantity = {pt.quantity: pt for pt in p.points.values()}
    sp = by_quantity[Quantity.AIRFLOW_SETPOINT_M3S]
    assert (sp.table, sp.type, sp.writable, sp.min, sp.max) == (
        Table.HOLDING,
        DataType.F32,
        True,
        0.0,
        2.0,
    )
    assert sp.default == pytest.approx(0.1)
    assert sp.max_rate_per_s is not None
    heat = by_quantity[Quantity.T_HEAT_SETPOINT_C]
    cool = by_quantity[Quantity.T_COOL_SETPOINT_C]
    assert (heat.min, heat.max, heat.default, heat.scale) == (15.0, 25.0, 21.0, 0.1)
    assert (cool.min, cool.max, cool.default, cool.scale) == (20.0, 30.0, 25.0, 0.1)
    assert heat.max_rate_per_s is not None
    assert cool.max_rate_per_s is not None
    mode = by_quantity[Quantity.OCCUPANCY_MODE]
    assert (mode.type, mode.writable, mode.min, mode.max, mode.default) == (
        DataType.U16,
        True,
        0.0,
        3.0,
        1.0,
    )
    for q in (Quantity.AIRFLOW_M3S, Quantity.T_SUPPLY_C):
        assert by_quantity[q].table is Table.INPUT
        assert not by_quantity[q].writable
    # The non-default word order path is exercised by a shipped profile.
    assert p.word_order is WordOrder.BIG
    assert by_quantity[Quantity.AIRFLOW_M3S].word_order is WordOrder.LITTLE
    assert sp.word_order is WordOrder.BIG


# --- every problem at once --------------------------------------------------------------------


def test_a_bad_profile_reports_every_problem_with_file_and_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        byte_order = "middle"
        colour = "red"

        [request]
        max_registers = 200

        [point.co2_ppm]
        table = "input"
        address = -1
        type = "u16"

        [point.flag]
        table = "holding"
        address = 0
        type = "bool"

        [point.sp]
        table = "input"
        address = 10
        type = "u16"
        writable = true
        """,
        header='name = "bad name"\n',
    )
    locs = [loc for loc, _ in _problems(path)]
    assert sorted(locs) == sorted(
        [
            "name",
            "byte_order",
            "colour",
            "request.max_registers",
            "point.co2_ppm.address",
            "point.flag.type",
            "point.sp.writable",
            "point.sp.min",
            "point.sp.max",
            "point.sp.default",
        ]
    )


def test_checks_between_points_are_all_reported_together(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [request]
        max_registers = 1

        [point.a]
        table = "holding"
        address = 0
        type = "u16"

        [point.b]
        table = "holding"
        address = 0
        type = "s16"

        [point.c]
        table = "input"
        address = 0
        type = "f32"

        [point.d]
        table = "coil"
        address = 0
        type = "u16"
        """,
    )
    locs = sorted(loc for loc, _ in _problems(path))
    assert locs == ["point.b.address", "point.c.type", "point.d.type"]


def test_a_type_error_does_not_hide_an_overlap_elsewhere(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [point.a]
        table = "input"
        address = "zero"
        type = "u16"

        [point.b]
        table = "input"
        address = 4
        type = "u32"

        [point.c]
        table = "input"
        address = 5
        type = "u16"
        """,
    )
    assert sorted(loc for loc, _ in _problems(path)) == ["point.a.address", "point.c.address"]


# --- each rule, with its message --------------------------------------------------------------

POINT_CASES = {
    "bool in holding": (
        """
        [point.x]
        table = "holding"
        address = 0
        type = "bool"
        """,
        "point.x.type",
        "'bool' is only for coil and discrete",
    ),
    "u16 in a coil": (
        """
        [point.x]
        table = "coil"
        address = 0
        type = "u16"
        """,
        "point.x.type",
        "single bit: type must be 'bool'",
    ),
    "u16 in a discrete input": (
        """
        [point.x]
        table = "discrete"
        address = 0
        type = "s16"
        """,
        "point.x.type",
        "single bit",
    ),
    "writable input register": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        writable = true
        min = 0.0
        max = 1.0
        default = 0.0
        """,
        "point.x.writable",
        "read-only",
    ),
    "writable discrete input": (
        """
        [point.x]
        table = "discrete"
        address = 0
        type = "bool"
        writable = true
        min = 0.0
        max = 1.0
        default = 0.0
        """,
        "point.x.writable",
        "read-only",
    ),
    "writable without max": (
        """
        [point.x]
        table = "holding"
        address = 0
        type = "u16"
        writable = true
        min = 0.0
        default = 1.0
        """,
        "point.x.max",
        "required for a writable point",
    ),
    "writable without default": (
        """
        [point.x]
        table = "coil"
        address = 0
        type = "bool"
        writable = true
        min = 0.0
        max = 1.0
        """,
        "point.x.default",
        "required for a writable point",
    ),
    "default above max": (
        """
        [point.x]
        table = "holding"
        address = 0
        type = "s16"
        scale = 0.1
        writable = true
        min = 15.0
        max = 25.0
        default = 26.0
        """,
        "point.x.default",
        "outside the limits [15.0, 25.0]",
    ),
    "default below min on a read-only point": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        min = 10.0
        default = 5.0
        """,
        "point.x.default",
        "outside the limits",
    ),
    "min above max": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        min = 10.0
        max = 5.0
        """,
        "point.x.max",
        "max 5.0 is below min 10.0",
    ),
    "limit the type cannot hold": (
        """
        [point.x]
        table = "holding"
        address = 0
        type = "u16"
        scale = 0.1
        writable = true
        min = 0.0
        max = 7000.0
        default = 10.0
        """,
        "point.x.max",
        "cannot be written as u16",
    ),
    "negative limit of an unsigned point": (
        """
        [point.x]
        table = "holding"
        address = 0
        type = "u16"
        writable = true
        min = -5.0
        max = 10.0
        default = 0.0
        """,
        "point.x.min",
        "cannot be written",
    ),
    "past the last address": (
        """
        [point.x]
        table = "input"
        address = 65535
        type = "u32"
        """,
        "point.x.address",
        "past the last Modbus address 65535",
    ),
    "negative address": (
        """
        [point.x]
        table = "input"
        address = -1
        type = "u16"
        """,
        "point.x.address",
        "greater than or equal to 0",
    ),
    "address above 65535": (
        """
        [point.x]
        table = "input"
        address = 65536
        type = "u16"
        """,
        "point.x.address",
        "less than or equal to 65535",
    ),
    "zero scale": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        scale = 0.0
        """,
        "point.x.scale",
        "must not be 0",
    ),
    "infinite scale": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        scale = inf
        """,
        "point.x.scale",
        "finite",
    ),
    "nan offset": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        offset = nan
        """,
        "point.x.offset",
        "finite",
    ),
    "rate limit on a read-only point": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        max_rate_per_s = 1.0
        """,
        "point.x.max_rate_per_s",
        "read-only",
    ),
    "unknown table": (
        """
        [point.x]
        table = "inputs"
        address = 0
        type = "u16"
        """,
        "point.x.table",
        "'coil', 'discrete', 'holding' or 'input'",
    ),
    "unknown type": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "float"
        """,
        "point.x.type",
        "'f32'",
    ),
    "unknown quantity": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        quantity = "co2"
        """,
        "point.x.quantity",
        "'co2_ppm'",
    ),
    "misspelt key": (
        """
        [point.x]
        table = "input"
        address = 0
        type = "u16"
        descripton = "CO2"
        """,
        "point.x.descripton",
        "unknown key",
    ),
    "missing address": (
        """
        [point.x]
        table = "input"
        type = "u16"
        """,
        "point.x.address",
        "required key is missing",
    ),
    "bad point name": (
        """
        [point."co2 ppm"]
        table = "input"
        address = 0
        type = "u16"
        """,
        "point.co2 ppm",
        "expected a name",
    ),
    "overlapping points": (
        """
        [point.a]
        table = "input"
        address = 0
        type = "u32"

        [point.b]
        table = "input"
        address = 1
        type = "u16"
        """,
        "point.b.address",
        "input addresses 1..1 overlap point 'a' (0..1)",
    ),
    "overlapping coils": (
        """
        [point.a]
        table = "coil"
        address = 3
        type = "bool"

        [point.b]
        table = "coil"
        address = 3
        type = "bool"
        """,
        "point.b.address",
        "overlap point 'a'",
    ),
    "too large for max_registers": (
        """
        [request]
        max_registers = 1

        [point.x]
        table = "holding"
        address = 0
        type = "f32"
        """,
        "point.x.type",
        "takes 2 registers but [request] max_registers is 1",
    ),
    "no points": ("\n", "point", "required key is missing"),
    "empty point table": ("\n[point]\n", "point", "at least 1"),
    "max_registers above the Modbus limit": (
        """
        [request]
        max_registers = 126

        [point.x]
        table = "input"
        address = 0
        type = "u16"
        """,
        "request.max_registers",
        "125",
    ),
    "negative pause": (
        """
        [request]
        pause_s = -1.0

        [point.x]
        table = "input"
        address = 0
        type = "u16"
        """,
        "request.pause_s",
        "greater than or equal to 0",
    ),
}


@pytest.mark.parametrize(("body", "loc", "message"), POINT_CASES.values(), ids=POINT_CASES.keys())
def test_each_rule_is_reported_at_its_key(
    tmp_path: Path, body: str, loc: str, message: str
) -> None:
    problems = _problems(_write(tmp_path, body))
    assert len(problems) == 1, problems
    assert problems[0][0] == loc
    assert message in problems[0][1]


def test_an_overlap_is_found_past_a_shorter_point_inside_a_longer_one(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [point.a]
        table = "holding"
        address = 0
        type = "u32"

        [point.b]
        table = "holding"
        address = 0
        type = "u16"

        [point.c]
        table = "holding"
        address = 1
        type = "u16"
        """,
    )
    problems = _problems(path)
    assert [loc for loc, _ in problems] == ["point.b.address", "point.c.address"]
    assert "overlap point 'a' (0..1)" in problems[1][1]


def test_the_same_address_in_two_tables_is_no_overlap(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [point.a]
        table = "input"
        address = 0
        type = "u32"

        [point.b]
        table = "holding"
        address = 0
        type = "u32"

        [point.c]
        table = "coil"
        address = 0
        type = "bool"

        [point.d]
        table = "discrete"
        address = 0
        type = "bool"

        [point.e]
        table = "input"
        address = 2
        type = "u16"
        """,
    )
    assert len(load_profile(path).points) == 5


def test_a_point_may_end_at_the_last_address(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [point.x]
        table = "input"
        address = 65534
        type = "f32"
        """,
    )
    assert load_profile(path).points["x"].last_address == 65535


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[point.x\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_profile(path)
    assert info.value.problems[0].source == str(path)


# --- orders, quirks and models ----------------------------------------------------------------


def test_points_take_the_profile_orders_unless_they_override_them(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        byte_order = "little"
        word_order = "little"

        [point.inherits]
        table = "input"
        address = 0
        type = "f32"

        [point.overrides]
        table = "input"
        address = 2
        type = "f32"
        byte_order = "big"
        word_order = "big"
        """,
    )
    p = load_profile(path)
    assert p.byte_order is ByteOrder.LITTLE
    inherits, overrides = p.points["inherits"], p.points["overrides"]
    assert (inherits.byte_order, inherits.word_order) == (ByteOrder.LITTLE, WordOrder.LITTLE)
    assert (overrides.byte_order, overrides.word_order) == (ByteOrder.BIG, WordOrder.BIG)


def test_profile_orders_default_to_big_endian(tmp_path: Path) -> None:
    path = _write(tmp_path, '[point.x]\ntable = "input"\naddress = 0\ntype = "u32"\n')
    x = load_profile(path).points["x"]
    assert (x.byte_order, x.word_order) == (ByteOrder.BIG, WordOrder.BIG)


def test_points_built_in_code_take_the_profile_orders() -> None:
    p = DeviceProfile(
        name="x",
        word_order=WordOrder.LITTLE,
        points={
            "a": RegisterPoint(table=Table.INPUT, address=0, type=DataType.F32),
            "b": RegisterPoint(
                table=Table.INPUT, address=2, type=DataType.F32, word_order=WordOrder.BIG
            ),
        },
    )
    assert p.points["a"].word_order is WordOrder.LITTLE
    assert p.points["b"].word_order is WordOrder.BIG
    assert DeviceProfile.model_validate(p.model_dump()) == p


def test_request_quirks_defaults_and_overrides() -> None:
    q = RequestQuirks()
    assert (q.max_registers, q.max_bits, q.max_gap, q.pause_s, q.timeout_s, q.retries) == (
        125,
        2000,
        8,
        0.0,
        1.0,
        1,
    )
    small = q.with_overrides({"max_registers": 10, "pause_s": 0.05})
    assert (small.max_registers, small.pause_s, small.max_bits) == (10, 0.05, 2000)
    assert q.max_registers == 125  # the original is unchanged
    with pytest.raises(ValidationError):
        q.with_overrides({"max_registers": 0})
    with pytest.raises(ValidationError):
        q.with_overrides({"max_regs": 10})


def test_point_set_problems_under_a_gateway_override() -> None:
    p = load_profile(DEVICES / "vav-ahu.toml")
    assert point_set_problems(p.points, p.request) == []
    tiny = p.request.with_overrides({"max_registers": 1})
    locs = sorted(loc for loc, _ in point_set_problems(p.points, tiny))
    assert locs == [("point", "airflow_m3s", "type"), ("point", "airflow_setpoint_m3s", "type")]


def test_models_built_in_code_keep_the_same_rules() -> None:
    with pytest.raises(ValidationError, match="only for coil and discrete"):
        RegisterPoint(table=Table.HOLDING, address=0, type=DataType.BOOL)
    with pytest.raises(ValidationError, match="required for a writable point"):
        RegisterPoint(table=Table.HOLDING, address=0, type=DataType.U16, writable=True)
    with pytest.raises(ValidationError, match="overlap"):
        DeviceProfile(
            name="x",
            points={
                "a": RegisterPoint(table=Table.INPUT, address=0, type=DataType.U32),
                "b": RegisterPoint(table=Table.INPUT, address=1, type=DataType.U16),
            },
        )
    with pytest.raises(ValidationError, match="scale must not be 0"):
        RegisterPoint.model_validate({"table": "input", "address": 0, "type": "u16", "scale": 0.0})


def test_parse_profile_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile({"name": "x", "point": {}}, source="gateway.toml: device[0]")
    assert info.value.problems[0].source == "gateway.toml: device[0]"


def test_register_counts() -> None:
    assert {t: t.n_registers for t in DataType} == {
        DataType.BOOL: 1,
        DataType.U16: 1,
        DataType.S16: 1,
        DataType.U32: 2,
        DataType.S32: 2,
        DataType.F32: 2,
    }
    assert RegisterPoint(table=Table.INPUT, address=7, type=DataType.S32).n_registers == 2


def test_quantities_are_the_closed_set() -> None:
    assert {q.value for q in Quantity} == {
        "co2_ppm",
        "t_zone_c",
        "rh_pct",
        "people_in",
        "people_out",
        "people_count",
        "airflow_m3s",
        "airflow_setpoint_m3s",
        "t_heat_setpoint_c",
        "t_cool_setpoint_c",
        "t_supply_c",
        "t_supply_setpoint_c",
        "occupancy_mode",
        "status",
    }


# --- a directory of profiles ------------------------------------------------------------------

POINT = '[point.x]\ntable = "input"\naddress = 0\ntype = "u16"\n'


def test_duplicate_profile_names_are_an_error(tmp_path: Path) -> None:
    first = _write(tmp_path, POINT, name="a.toml")
    second = _write(tmp_path, POINT, name="b.toml")
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)
    (problem,) = info.value.problems
    assert (problem.source, problem.loc) == (str(second), "name")
    assert "'test-device'" in problem.message
    assert str(first) in problem.message


def test_load_profiles_reports_the_problems_of_every_file(tmp_path: Path) -> None:
    bad_a = _write(tmp_path, '[point.x]\ntable = "input"\naddress = -1\ntype = "u16"\n', "a.toml")
    bad_b = _write(tmp_path, '[point.y]\ntable = "holding"\naddress = 0\ntype = "bool"\n', "b.toml")
    _write(tmp_path, POINT, name="c.toml", header='name = "fine"\n')
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)
    assert [(p.source, p.loc) for p in info.value.problems] == [
        (str(bad_a), "point.x.address"),
        (str(bad_b), "point.y.type"),
    ]


def test_load_profiles_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_profiles(tmp_path / "nope")
