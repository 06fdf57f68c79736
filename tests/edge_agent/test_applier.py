"""Tests for edge_agent.applier: limits, rate limits, deadband, quantization, read-back, leases.

The devices are hand-written fakes with the interface the applier uses (`name`, `point`,
`read_point`, `write_point`): they record every write, keep what a register would hold (through
the real codec), and can fail or read back another value. The audit log is the real one, in a
temporary directory; both clocks are fake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bacnet_modbus.codec import CodecError, decode, encode
from bacnet_modbus.modbus import FieldBusError, ModbusDevice
from controller.law import Mode as LawMode
from controller.wire import CommandSet, Mode, ZoneCommand, mode_of
from edge_agent.applier import BMS_MODE, WRITE_FIELDS, Applier, Target
from edge_agent.audit import AuditLog, AuditRecord, AuditStoreError, Outcome, Source
from edge_agent.config import GatewayConfig, Writes, load_gateway
from edge_agent.metrics import AgentMetrics
from sensors.profiles import DataType, RegisterPoint

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "config" / "sites" / "helsinki-office.toml"
DEVICES = REPO / "config" / "devices"
ZONE = "office-e1"
OTHER = "meeting-medium-1"
CYCLE_S = 10.0
T0 = 1_800_000_000.0  # wall clock at the start of a test
M0 = 5_000.0  # monotonic clock at the start of a test

GATEWAY = f"""
[gateway]
name = "gw"
site = "{SITE}"
profiles = "{DEVICES}"
cycle_s = {CYCLE_S}

[[bus]]
name = "bms"
kind = "tcp"
host = "127.0.0.1"
port = 1502

[[device]]
name = "vav-e1"
bus = "bms"
device_id = 1
profile = "vav-ahu"

[[device]]
name = "vav-m1"
bus = "bms"
device_id = 2
profile = "vav-ahu"

[[zone]]
name = "{ZONE}"
write = {{ airflow_m3s = "vav-e1/airflow_setpoint_m3s", t_heat_c = "vav-e1/t_heat_setpoint_c", t_cool_c = "vav-e1/t_cool_setpoint_c", mode = "vav-e1/occupancy_mode" }}

[[zone]]
name = "{OTHER}"
fallback = "relinquish"
write = {{ airflow_m3s = "vav-m1/airflow_setpoint_m3s" }}

[fallback]
max_clock_skew_s = 30.0
"""  # noqa: E501


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    path = tmp_path_factory.mktemp("gateway") / "gw.toml"
    path.write_text(GATEWAY, encoding="utf-8")
    return load_gateway(path)


def vav_points(cfg: GatewayConfig, *, rate_limits: bool = False) -> dict[str, RegisterPoint]:
    """The shipped VAV profile's points, without their rate limits unless asked for."""
    points = dict(cfg.profiles["vav-ahu"].points)
    if not rate_limits:
        points = {n: p.model_copy(update={"max_rate_per_s": None}) for n, p in points.items()}
    return points


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeDevice:
    """A device's points as its registers hold them; records writes, fails when told to."""

    def __init__(
        self, name: str, points: Mapping[str, RegisterPoint], values: Mapping[str, float]
    ) -> None:
        self.name = name
        self.points = dict(points)
        self.values: dict[str, float] = {}
        for point, value in values.items():
            self.hold(point, value)
        self.writes: list[tuple[str, float]] = []
        self.reads: list[str] = []
        self.fail_write: set[str] = set()
        self.fail_read: set[str] = set()
        self.read_back_offset: dict[str, float] = {}

    def hold(self, point: str, value: float) -> None:
        """Set a point as the building would (the BMS, or a person at its panel)."""
        p = self.points[point]
        self.values[point] = decode(p, encode(p, value))

    def point(self, name: str) -> RegisterPoint:
        return self.points[name]

    async def read_point(self, name: str) -> float:
        self.reads.append(name)
        if name in self.fail_read:
            raise FieldBusError(f"bus bms: timeout reading {self.name}/{name}")
        return self.values[name] + self.read_back_offset.get(name, 0.0)

    async def write_point(self, name: str, value: float) -> None:
        self.writes.append((name, value))
        if name in self.fail_write:
            raise FieldBusError(f"bus bms: timeout writing {self.name}/{name}")
        self.hold(name, value)  # CodecError, as the real device, if the registers cannot hold it

    def written(self, point: str) -> list[float]:
        return [v for p, v in self.writes if p == point]


DEFAULTS = {
    "airflow_setpoint_m3s": 0.1,
    "t_heat_setpoint_c": 21.0,
    "t_cool_setpoint_c": 25.0,
    "occupancy_mode": 1.0,
}


@dataclasses.dataclass
class Rig:
    applier: Applier
    vav: FakeDevice
    other: FakeDevice
    audit: AuditLog
    clock: FakeClock
    mono: FakeClock
    metrics: AgentMetrics

    def apply(self, zones: list[str] | None = None) -> None:
        asyncio.run(self.applier.apply(zones))

    def flush(self) -> None:
        asyncio.run(self.applier.flush())

    def records(self) -> list[AuditRecord]:
        """Every audit record, oldest first."""
        return self.audit.recent(10_000)[::-1]

    def writes_counted(self, outcome: Outcome) -> float:
        value = self.metrics.registry.get_sample_value(
            "ilma_agent_writes_total", {"outcome": outcome.value}
        )
        return 0.0 if value is None else value


def make_rig(
    cfg: GatewayConfig,
    audit_path: Path,
    points: Mapping[str, RegisterPoint],
    values: Mapping[str, float] = DEFAULTS,
) -> Rig:
    vav = FakeDevice("vav-e1", points, values)
    other = FakeDevice("vav-m1", points, values)
    # NORMAL: no fsync per transaction; these tests do not pull the plug.
    audit = AuditLog(audit_path, 10_000, synchronous="NORMAL")
    clock, mono = FakeClock(T0), FakeClock(M0)
    metrics = AgentMetrics()
    devices = cast("dict[str, ModbusDevice]", {"vav-e1": vav, "vav-m1": other})
    applier = Applier(cfg, devices, audit, metrics, clock=clock, mono=mono)
    return Rig(applier, vav, other, audit, clock, mono, metrics)


@pytest.fixture
def rig(cfg: GatewayConfig, tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(cfg, tmp_path / "audit.sqlite", vav_points(cfg))
    yield r
    r.audit.close()


@pytest.fixture
def slow_rig(cfg: GatewayConfig, tmp_path: Path) -> Iterator[Rig]:
    """The VAV with the shipped rate limits (0.02 per s on the setpoints)."""
    r = make_rig(cfg, tmp_path / "audit.sqlite", vav_points(cfg, rate_limits=True))
    yield r
    r.audit.close()


_seq = itertools.count(1)


def commands(
    rig: Rig,
    zone: str = ZONE,
    *,
    airflow_m3s: float = 0.2,
    t_heat_c: float = 21.0,
    t_cool_c: float = 25.0,
    mode: Mode = Mode.OCCUPIED,
    lease_s: float = 60.0,
    seq: int | None = None,
    t: float | None = None,
    valid_until: float | None = None,
    controller: str = "ctl",
) -> CommandSet:
    issued = rig.clock() if t is None else t
    return CommandSet(
        controller=controller,
        seq=next(_seq) if seq is None else seq,
        t=issued,
        lease_s=lease_s,
        valid_until=issued + lease_s if valid_until is None else valid_until,
        commands=(
            ZoneCommand(
                zone=zone,
                mode=mode,
                airflow_m3s=airflow_m3s,
                t_heat_c=t_heat_c,
                t_cool_c=t_cool_c,
                reason="occupancy",
            ),
        ),
    )


def f32(x: float) -> float:
    """What a float32 register holds of x."""
    return float(np.float32(x))


def target(**values: float) -> Target:
    return Target(values, Source.CONTROLLER, "ctl/1", "test", math.inf)


# --- a command, written --------------------------------------------------------------------


def test_a_command_is_written_read_back_and_audited(rig: Rig) -> None:
    cs = commands(rig, airflow_m3s=0.35, t_heat_c=21.5, t_cool_c=24.5, mode=Mode.OCCUPIED_STANDBY)
    assert rig.applier.accept(cs, rig.mono()) == [ZONE]
    rig.apply()
    assert rig.vav.values == {
        "airflow_setpoint_m3s": pytest.approx(0.35),
        "t_heat_setpoint_c": 21.5,
        "t_cool_setpoint_c": 24.5,
        "occupancy_mode": 2.0,
    }
    records = rig.records()
    assert [r.point for r in records] == [
        "vav-e1/airflow_setpoint_m3s",
        "vav-e1/t_heat_setpoint_c",
        "vav-e1/t_cool_setpoint_c",
        "vav-e1/occupancy_mode",
    ]
    for r in records:
        assert r.outcome is Outcome.APPLIED
        assert r.zone == ZONE
        assert r.device == "vav-e1"
        assert r.command_id == cs.command_id
        assert r.source is Source.CONTROLLER
        assert r.reason == "occupancy"
        assert r.t_s == T0
        assert r.read_back == pytest.approx(r.written)
    heat = records[1]
    assert (heat.requested, heat.written, heat.read_back) == (21.5, 21.5, 21.5)
    assert rig.writes_counted(Outcome.APPLIED) == 4
    assert rig.other.writes == []  # the other zone got no command


def test_commands_for_zones_of_other_gateways_are_ignored(rig: Rig) -> None:
    assert rig.applier.accept(commands(rig, "lobby"), rig.mono()) == []
    rig.apply()
    assert rig.vav.writes == []
    assert rig.records() == []


def test_a_non_finite_target_is_rejected_and_not_written(rig: Rig) -> None:
    for bad in (math.nan, math.inf, -math.inf):
        rig.applier.set_target(ZONE, target(airflow_m3s=bad))
        rig.apply()
    assert rig.vav.writes == []
    records = rig.records()
    assert [r.outcome for r in records] == [Outcome.REJECTED] * 3
    assert all(r.written is None and r.reason == "not a finite value" for r in records)


# --- limits -----------------------------------------------------------------------------------


def test_values_outside_the_limits_are_clamped_to_them(rig: Rig) -> None:
    rig.applier.accept(commands(rig, airflow_m3s=5.0, t_heat_c=40.0, t_cool_c=-10.0), rig.mono())
    rig.apply()
    assert rig.vav.written("airflow_setpoint_m3s") == [2.0]
    assert rig.vav.written("t_heat_setpoint_c") == [25.0]
    assert rig.vav.written("t_cool_setpoint_c") == [20.0]
    by_point = {r.point.split("/")[1]: r for r in rig.records()}
    airflow = by_point["airflow_setpoint_m3s"]
    assert airflow.outcome is Outcome.CLAMPED
    assert (airflow.requested, airflow.written, airflow.read_back) == (5.0, 2.0, 2.0)
    assert airflow.reason == "5 outside [0, 2]"
    assert by_point["t_heat_setpoint_c"].outcome is Outcome.CLAMPED
    assert by_point["t_cool_setpoint_c"].written == 20.0
    assert "occupancy_mode" not in by_point  # it held the commanded mode already


_TYPES = {
    DataType.U16: (0.0, 65535.0),
    DataType.S16: (-32768.0, 32767.0),
    DataType.U32: (0.0, 4294967295.0),
    DataType.S32: (-2147483648.0, 2147483647.0),
    DataType.F32: (-1e7, 1e7),
}


@st.composite
def writable_points(draw: st.DrawFn) -> RegisterPoint:
    """A holding point of any type, scale and offset, its limits anywhere in its raw range; the
    limits span at least one register step (else no register value lies between them)."""
    type_ = draw(st.sampled_from(sorted(_TYPES)))
    scale = draw(
        st.sampled_from([1.0, 0.1, 0.01, 0.5, 2.0, 10.0, -0.1, 0.001]) | st.floats(1e-3, 1e3)
    )
    offset = draw(st.sampled_from([0.0, -40.0, 273.15, 0.5]) | st.floats(-1e3, 1e3))
    raw_lo, raw_hi = _TYPES[type_]
    a, b = (draw(st.floats(raw_lo, raw_hi)) for _ in range(2))
    lo, hi = sorted((a * scale + offset, b * scale + offset))
    if type_ is not DataType.F32:
        assume(hi - lo >= abs(scale))
    rate = draw(st.none() | st.floats(1e-4, 1e4))
    try:
        return RegisterPoint.model_validate(
            {
                "table": "holding",
                "address": 0,
                "type": type_,
                "scale": scale,
                "offset": offset,
                "writable": True,
                "min": lo,
                "max": hi,
                "default": lo,
                "max_rate_per_s": rate,
            }
        )
    except ValidationError:
        assume(False)
        raise


def _on_grid_inside(point: RegisterPoint, fraction: float) -> float | None:
    """A value the point's registers hold, inside its limits: where a device starts."""
    assert point.min is not None
    assert point.max is not None
    v = point.min + fraction * (point.max - point.min)
    raw = round((v - point.offset) / point.scale)
    for r in (raw, raw - 1, raw + 1):
        try:
            candidate = decode(point, encode(point, r * point.scale + point.offset))
        except CodecError:
            continue  # beyond the type's range
        if point.min <= candidate <= point.max:
            return candidate
    return None


any_request = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308]),
)


@dataclasses.dataclass(frozen=True)
class Env:
    """The fixtures a property needs (a short repr keeps hypothesis' reports readable)."""

    cfg: GatewayConfig
    tmp: pytest.TempPathFactory

    def __repr__(self) -> str:
        return "Env(...)"


@pytest.fixture(scope="module")
def env(cfg: GatewayConfig, tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(cfg, tmp_path_factory)


@settings(max_examples=300)
@given(
    point=writable_points(),
    start=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_no_value_outside_a_points_limits_is_ever_written(
    env: Env, point: RegisterPoint, start: float, data: st.DataObject
) -> None:
    cfg = env.cfg
    assert point.min is not None
    assert point.max is not None
    lo, hi = point.min, point.max
    initial = _on_grid_inside(point, start)
    assume(initial is not None)
    assert initial is not None
    span = hi - lo
    near = st.floats(lo - span - 1.0, hi + span + 1.0)
    edges = st.sampled_from([lo, hi, (lo + hi) / 2, lo - abs(point.scale), hi + abs(point.scale)])
    requests = data.draw(
        st.lists(
            st.tuples(any_request | near | edges, st.floats(0.0, 1e4)), min_size=1, max_size=8
        ),
        label="requests",
    )
    points = {**vav_points(cfg), "airflow_setpoint_m3s": point}
    r = make_rig(
        cfg, env.tmp.mktemp("audit") / "audit.sqlite", points, {"airflow_setpoint_m3s": initial}
    )
    try:
        for value, dt in requests:
            r.mono.t += dt
            r.applier.set_target(ZONE, target(airflow_m3s=value))
            r.apply()
        written = r.vav.written("airflow_setpoint_m3s")
        assert all(lo <= w <= hi for w in written), (lo, hi, written)
        for rec in r.records():
            assert rec.outcome is not Outcome.FAILED, rec  # every write fit the registers
            assert rec.written is None or lo <= rec.written <= hi, rec
    finally:
        r.audit.close()


def test_a_rate_limited_move_from_outside_the_limits_stays_inside_them(slow_rig: Rig) -> None:
    slow_rig.vav.hold("t_heat_setpoint_c", 28.0)  # set at the BMS panel, above ilma's max of 25
    slow_rig.applier.set_target(ZONE, target(t_heat_c=22.0))
    slow_rig.apply()
    written = slow_rig.vav.written("t_heat_setpoint_c")
    assert written
    assert all(15.0 <= w <= 25.0 for w in written), written


def test_limits_narrower_than_a_register_step_are_never_left(
    cfg: GatewayConfig, tmp_path: Path
) -> None:
    narrow = RegisterPoint(
        table="holding",
        address=0,
        type=DataType.U16,
        scale=1.0,
        writable=True,
        min=0.2,
        max=0.8,
        default=0.2,
    )
    r = make_rig(
        cfg,
        tmp_path / "audit.sqlite",
        {**vav_points(cfg), "occupancy_mode": narrow},
        {"occupancy_mode": 0.0},
    )
    try:
        r.applier.set_target(ZONE, target(mode=0.5))
        r.apply()
        assert all(0.2 <= w <= 0.8 for w in r.vav.written("occupancy_mode"))
    finally:
        r.audit.close()


# --- rate limits ------------------------------------------------------------------------------


def test_the_rate_limit_steps_toward_the_target_over_successive_cycles(slow_rig: Rig) -> None:
    r = slow_rig
    r.applier.set_target(ZONE, target(t_heat_c=22.0))
    history = []
    for _ in range(8):
        r.apply()
        history.append(r.mono())
        r.mono.t += CYCLE_S
    written = r.vav.written("t_heat_setpoint_c")
    # From 21.0 at 0.02 K/s: 0.2 K per 10 s cycle (the first as if one cycle had passed).
    assert written == pytest.approx([21.2, 21.4, 21.6, 21.8, 22.0])
    outcomes = [rec.outcome for rec in r.records() if rec.point.endswith("t_heat_setpoint_c")]
    assert outcomes == [Outcome.RATE_LIMITED] * 4 + [Outcome.APPLIED]
    limited = next(rec for rec in r.records() if rec.outcome is Outcome.RATE_LIMITED)
    assert limited.requested == 22.0
    assert limited.reason == "toward 22 at ≤ 0.02/s"
    assert r.vav.values["t_heat_setpoint_c"] == pytest.approx(22.0)


def test_the_rate_limit_follows_the_time_between_cycles(slow_rig: Rig) -> None:
    r = slow_rig
    r.applier.set_target(ZONE, target(t_cool_c=22.0))
    r.apply()  # 25.0 → 24.8
    r.mono.t += 30.0  # a long cycle: 0.6 K allowed
    r.apply()
    r.mono.t += 5.0  # a short one: 0.1 K
    r.apply()
    r.mono.t += 0.0  # no time at all: nothing
    r.apply()
    assert r.vav.written("t_cool_setpoint_c") == pytest.approx([24.8, 24.2, 24.1])


def test_a_clamped_target_is_also_rate_limited(slow_rig: Rig) -> None:
    r = slow_rig
    r.applier.set_target(ZONE, target(airflow_m3s=9.0))
    r.apply()
    r.mono.t += 50.0
    r.apply()
    assert r.vav.written("airflow_setpoint_m3s") == pytest.approx([0.3, 1.3])
    recs = [rec for rec in r.records() if rec.point.endswith("airflow_setpoint_m3s")]
    assert [rec.outcome for rec in recs] == [Outcome.CLAMPED] * 2  # the graver fact wins
    assert recs[0].reason == "9 outside [0, 2]; toward 2 at ≤ 0.02/s"


def test_the_rate_limit_starts_from_what_the_building_holds(slow_rig: Rig) -> None:
    r = slow_rig
    r.vav.hold("t_heat_setpoint_c", 18.0)
    r.applier.set_target(ZONE, target(t_heat_c=21.0))
    r.apply()
    assert r.vav.written("t_heat_setpoint_c") == pytest.approx([18.2])


# --- deadband and quantization -------------------------------------------------------------


def test_a_change_inside_the_deadband_is_not_written(rig: Rig) -> None:
    rig.vav.hold("airflow_setpoint_m3s", 0.5)
    # deadband_fraction 0.002 of the [0, 2] range: 0.004 m³/s.
    rig.applier.set_target(ZONE, target(airflow_m3s=0.503))
    rig.apply()
    assert rig.vav.writes == []
    assert rig.records() == []
    assert rig.writes_counted(Outcome.UNCHANGED) == 1
    rig.applier.set_target(ZONE, target(airflow_m3s=0.505))
    rig.apply()
    assert rig.vav.written("airflow_setpoint_m3s") == [f32(0.505)]
    # The same target again: the point holds it, nothing is written.
    rig.apply()
    assert len(rig.vav.writes) == 1
    assert rig.writes_counted(Outcome.UNCHANGED) == 2


def test_a_wider_deadband_from_the_file(cfg: GatewayConfig, tmp_path: Path) -> None:
    wide = dataclasses.replace(
        cfg, file=cfg.file.model_copy(update={"writes": Writes(deadband_fraction=0.1)})
    )
    r = make_rig(wide, tmp_path / "audit.sqlite", vav_points(cfg))
    try:
        r.applier.set_target(ZONE, target(airflow_m3s=0.29, t_heat_c=22.0))
        r.apply()
        # 0.19 m³/s is less than 10 % of 2 m³/s; 1 K is exactly 10 % of 10 K: both skipped.
        assert r.vav.writes == []
        r.applier.set_target(ZONE, target(airflow_m3s=0.31, t_heat_c=22.1))
        r.apply()
        assert r.vav.writes == [("airflow_setpoint_m3s", f32(0.31)), ("t_heat_setpoint_c", 22.1)]
    finally:
        r.audit.close()


def test_integer_points_are_quantized_inside_their_limits(
    cfg: GatewayConfig, tmp_path: Path
) -> None:
    # Limits between register steps: 15.05 and 24.95 on a 0.1 K grid.
    heat = RegisterPoint(
        table="holding",
        address=2,
        type=DataType.S16,
        scale=0.1,
        writable=True,
        min=15.05,
        max=24.95,
        default=21.0,
    )
    r = make_rig(cfg, tmp_path / "audit.sqlite", {**vav_points(cfg), "t_heat_setpoint_c": heat})
    try:
        for requested in (30.0, 0.0, 21.06, 21.04, 24.94):
            r.applier.set_target(ZONE, target(t_heat_c=requested))
            r.apply()
        assert r.vav.written("t_heat_setpoint_c") == pytest.approx([24.9, 15.1, 21.1, 21.0, 24.9])
        for w in r.vav.written("t_heat_setpoint_c"):
            assert 15.05 <= w <= 24.95
            assert encode(heat, w) == encode(heat, round(w * 10) / 10)  # on the register's grid
        recs = r.records()
        assert [rec.outcome for rec in recs] == [Outcome.CLAMPED, Outcome.CLAMPED] + [
            Outcome.APPLIED
        ] * 3
        assert recs[2].requested == 21.06
        assert recs[2].written == pytest.approx(21.1)
        assert recs[2].read_back == pytest.approx(21.1)
    finally:
        r.audit.close()


def test_a_target_at_a_limit_on_the_register_grid_is_written_at_the_limit(
    cfg: GatewayConfig, tmp_path: Path
) -> None:
    heat = RegisterPoint(
        table="holding",
        address=2,
        type=DataType.S16,
        scale=0.1,
        writable=True,
        min=15.0,
        max=24.7,
        default=21.0,
    )
    r = make_rig(cfg, tmp_path / "audit.sqlite", {**vav_points(cfg), "t_heat_setpoint_c": heat})
    try:
        r.applier.set_target(ZONE, target(t_heat_c=30.0))
        r.apply()
        assert r.vav.values["t_heat_setpoint_c"] == pytest.approx(24.7)
    finally:
        r.audit.close()


# --- read-back and failures -------------------------------------------------------------------


def test_a_read_back_mismatch_is_audited(rig: Rig) -> None:
    rig.vav.read_back_offset["t_cool_setpoint_c"] = 1.0  # the BMS overrides what we write
    rig.applier.set_target(ZONE, target(t_cool_c=24.0))
    rig.apply()
    (rec,) = rig.records()
    assert rec.outcome is Outcome.READBACK_MISMATCH
    assert (rec.requested, rec.written, rec.read_back) == (24.0, 24.0, 25.0)
    assert rec.reason == "wrote 24"
    assert rig.writes_counted(Outcome.READBACK_MISMATCH) == 1


def test_a_failed_read_back_is_audited_as_a_mismatch(rig: Rig) -> None:
    rig.applier.set_target(ZONE, target(t_cool_c=24.0))
    rig.apply()  # reads the present value first: that read works
    rig.vav.fail_read.add("t_cool_setpoint_c")
    rig.applier.set_target(ZONE, target(t_cool_c=23.0))
    rig.apply()
    rec = rig.records()[-1]
    assert rec.outcome is Outcome.READBACK_MISMATCH
    assert rec.written == 23.0
    assert rec.read_back is None
    assert rec.reason.startswith("read-back failed: bus bms: timeout")


def test_a_failed_write_is_audited_and_tried_again(rig: Rig) -> None:
    rig.vav.fail_write.add("airflow_setpoint_m3s")
    rig.applier.set_target(ZONE, target(airflow_m3s=0.4))
    rig.apply()
    (rec,) = rig.records()
    assert rec.outcome is Outcome.FAILED
    assert rec.written == f32(0.4)  # what was sent: the float32 the register holds
    assert rec.read_back is None
    assert rec.reason.startswith("write failed: bus bms: timeout writing")
    assert rig.vav.values["airflow_setpoint_m3s"] == pytest.approx(0.1)
    # The device answers again: the next cycle writes the target.
    rig.vav.fail_write.clear()
    rig.apply()
    assert rig.vav.values["airflow_setpoint_m3s"] == pytest.approx(0.4)
    assert rig.records()[-1].outcome is Outcome.APPLIED


def test_a_value_the_registers_cannot_hold_is_a_failed_write(rig: Rig) -> None:
    class Rejecting(FakeDevice):
        async def write_point(self, name: str, value: float) -> None:
            self.writes.append((name, value))
            raise CodecError(f"{value} is out of range")

    bad = Rejecting("vav-e1", rig.vav.points, DEFAULTS)
    rig.applier.devices["vav-e1"] = cast("ModbusDevice", bad)
    rig.applier.set_target(ZONE, target(t_heat_c=22.0))
    rig.apply()
    (rec,) = rig.records()
    assert rec.outcome is Outcome.FAILED
    assert "out of range" in rec.reason


def test_a_point_whose_present_value_cannot_be_read_is_not_written(rig: Rig) -> None:
    rig.vav.fail_read.add("t_heat_setpoint_c")
    rig.applier.set_target(ZONE, target(t_heat_c=22.0))
    rig.apply()
    assert rig.vav.writes == []
    (rec,) = rig.records()
    assert rec.outcome is Outcome.FAILED
    assert rec.written is None
    assert rec.reason == "cannot read the point's present value"


def test_without_verify_nothing_is_read_back(cfg: GatewayConfig, tmp_path: Path) -> None:
    trusting = dataclasses.replace(
        cfg, file=cfg.file.model_copy(update={"writes": Writes(verify=False)})
    )
    r = make_rig(trusting, tmp_path / "audit.sqlite", vav_points(cfg))
    try:
        r.vav.read_back_offset["t_heat_setpoint_c"] = 3.0
        r.applier.set_target(ZONE, target(t_heat_c=22.0))
        r.apply()
        assert r.vav.reads == ["t_heat_setpoint_c"]  # the present value, before the first write
        (rec,) = r.records()
        assert rec.outcome is Outcome.APPLIED
        assert rec.read_back is None
    finally:
        r.audit.close()


# --- leases, validity, order ------------------------------------------------------------------


def test_a_command_past_its_lease_is_never_applied(rig: Rig) -> None:
    cs = commands(
        rig, airflow_m3s=0.5, t_heat_c=22.0, t_cool_c=24.0, mode=Mode.WARM_UP, lease_s=60.0
    )
    rig.applier.accept(cs, rig.mono())
    rig.mono.t += 60.5
    rig.apply()
    assert rig.vav.writes == []
    records = rig.records()
    assert {r.outcome for r in records} == {Outcome.EXPIRED}
    assert {r.point.split("/")[1] for r in records} == set(DEFAULTS)
    assert all(r.written is None and r.command_id == cs.command_id for r in records)
    assert all(r.reason == "lease ended before the target was reached" for r in records)
    # The target is gone: later cycles do nothing.
    rig.apply()
    assert rig.vav.writes == []
    assert len(rig.records()) == len(records)
    assert ZONE not in rig.applier.targets


def test_a_lease_that_ends_after_the_target_is_reached_leaves_no_expiry(rig: Rig) -> None:
    rig.applier.accept(commands(rig, airflow_m3s=0.5, lease_s=30.0), rig.mono())
    rig.apply()
    n = len(rig.records())
    rig.mono.t += 31.0
    rig.apply()
    assert len(rig.records()) == n
    assert all(r.outcome is not Outcome.EXPIRED for r in rig.records())
    assert ZONE not in rig.applier.targets


def test_a_lease_that_ends_on_the_way_audits_only_what_was_not_reached(slow_rig: Rig) -> None:
    r = slow_rig
    r.applier.accept(commands(r, airflow_m3s=0.2, t_heat_c=24.0, lease_s=25.0), r.mono())
    r.apply()  # airflow 0.1 → 0.2 in one step; heating 21.0 → 21.2 of 24.0
    r.mono.t += 10.0
    r.apply()  # heating 21.4
    r.mono.t += 20.0
    r.apply()  # the lease ended 5 s ago
    assert r.vav.written("t_heat_setpoint_c") == pytest.approx([21.2, 21.4])
    expired = [rec for rec in r.records() if rec.outcome is Outcome.EXPIRED]
    assert [rec.point for rec in expired] == ["vav-e1/t_heat_setpoint_c"]
    assert expired[0].requested == 24.0


def test_the_mqtt_expiry_shortens_the_lease(rig: Rig) -> None:
    rig.applier.accept(commands(rig, lease_s=60.0), rig.mono(), expiry_s=5.0)
    rig.mono.t += 6.0
    rig.apply()
    assert rig.vav.writes == []
    assert {r.outcome for r in rig.records()} == {Outcome.EXPIRED}


def test_a_command_past_its_valid_until_is_refused_and_audited(rig: Rig) -> None:
    issued = T0 - 600.0
    cs = commands(rig, t=issued, lease_s=60.0)  # valid until T0 - 540: long past
    assert rig.applier.accept(cs, rig.mono()) == []
    assert ZONE not in rig.applier.targets
    rig.flush()
    records = rig.records()
    assert len(records) == 4
    assert {r.outcome for r in records} == {Outcome.EXPIRED}
    assert all(r.written is None for r in records)
    assert records[0].reason == f"expired: valid until {T0 - 540:.0f}, now {T0:.0f}"
    rig.apply()
    assert rig.vav.writes == []


def test_the_clock_skew_allowance_on_valid_until(rig: Rig) -> None:
    # 29 s past valid_until: within max_clock_skew_s (30 s) of a gateway clock running ahead.
    cs = commands(rig, t=T0 - 89.0, lease_s=60.0)
    assert rig.applier.accept(cs, rig.mono()) == [ZONE]
    late = commands(rig, t=T0 - 91.0, lease_s=60.0, seq=10_000)
    assert rig.applier.accept(late, rig.mono()) == []


def test_a_zero_expiry_from_the_broker_refuses_the_command(rig: Rig) -> None:
    assert rig.applier.accept(commands(rig), rig.mono(), expiry_s=0.0) == []
    rig.flush()
    assert {r.outcome for r in rig.records()} == {Outcome.EXPIRED}


def test_a_command_is_never_applied_after_its_valid_until(slow_rig: Rig) -> None:
    """Whatever is left of its lease: a command that sat in a broker's queue arrives one second
    before its valid_until, with a lease of five minutes."""
    r = slow_rig
    lease = 300.0
    cs = commands(r, t=r.clock() - lease + 1.0, lease_s=lease, t_heat_c=24.0)
    assert r.applier.accept(cs, r.mono()) == [ZONE]
    r.apply()  # 21.0 → 21.2, rate-limited
    written = list(r.vav.written("t_heat_setpoint_c"))
    assert written
    # Inside the skew allowance (30 s) it still moves on.
    r.clock.t += 25.0
    r.mono.t += 25.0
    r.apply()
    assert len(r.vav.written("t_heat_setpoint_c")) == len(written) + 1
    # Past valid_until + 30 s: nothing more is written, and what was not reached is audited.
    r.clock.t += 10.0
    r.mono.t += 10.0
    r.apply()
    assert len(r.vav.written("t_heat_setpoint_c")) == len(written) + 1
    assert ZONE not in r.applier.targets
    expired = [rec for rec in r.records() if rec.outcome is Outcome.EXPIRED]
    assert [rec.point for rec in expired] == ["vav-e1/t_heat_setpoint_c"]


def test_a_command_from_the_future_is_refused_audited_and_blocks_nothing(rig: Rig) -> None:
    """A controller whose clock glitched a day ahead: its command is refused (it would make
    every later command look older, refusing them all for a day)."""
    ahead = commands(rig, t=T0 + 86_400.0, airflow_m3s=0.9)
    assert rig.applier.accept(ahead, rig.mono()) == []
    rig.flush()
    refused = rig.records()
    assert len(refused) == 4
    assert {rec.outcome for rec in refused} == {Outcome.REJECTED}
    assert all(rec.written is None for rec in refused)
    assert refused[0].reason == "sent 86400 s ahead of this gateway's clock (allowed 30 s)"
    assert rig.applier.accept(commands(rig, airflow_m3s=0.4), rig.mono()) == [ZONE]
    # Within the skew allowance a controller's clock may run ahead.
    assert rig.applier.accept(commands(rig, t=T0 + 29.0), rig.mono()) == [ZONE]


def test_a_device_that_lost_its_setpoint_gets_it_again(rig: Rig) -> None:
    refresh = rig.applier.cfg.file.writes.refresh_s
    rig.applier.accept(commands(rig, airflow_m3s=0.5, lease_s=3600.0), rig.mono())
    rig.apply()
    assert rig.vav.values["airflow_setpoint_m3s"] == 0.5
    rig.vav.hold("airflow_setpoint_m3s", 0.1)  # the VAV controller restarted: its default
    reads = len(rig.vav.reads)
    # Between refreshes the applier trusts what it wrote: no reads, no writes.
    rig.mono.t += refresh / 2
    rig.apply()
    assert len(rig.vav.reads) == reads
    assert rig.vav.written("airflow_setpoint_m3s") == [0.5]
    # At the refresh it reads the point, finds the default, and writes the command again.
    rig.mono.t += refresh / 2
    rig.apply()
    assert rig.vav.written("airflow_setpoint_m3s") == [0.5, 0.5]
    assert rig.vav.values["airflow_setpoint_m3s"] == 0.5
    assert rig.records()[-1].outcome is Outcome.APPLIED


def test_a_refresh_that_finds_the_setpoint_held_writes_nothing(rig: Rig) -> None:
    refresh = rig.applier.cfg.file.writes.refresh_s
    rig.applier.accept(commands(rig, airflow_m3s=0.5, lease_s=3600.0), rig.mono())
    rig.apply()
    writes, reads = len(rig.vav.writes), len(rig.vav.reads)
    for _ in range(3):
        rig.mono.t += refresh
        rig.apply()
    assert len(rig.vav.writes) == writes
    assert len(rig.vav.reads) > reads  # checked, each refresh


def test_a_float32_point_never_holds_a_value_past_its_limits(
    cfg: GatewayConfig, tmp_path: Path
) -> None:
    """0.1 as a float32 is 0.10000000149: past a limit of 0.1 (and -0.1 past -0.1)."""
    points = vav_points(cfg)
    points["airflow_setpoint_m3s"] = points["airflow_setpoint_m3s"].model_copy(
        update={"min": -0.1, "max": 0.1, "default": 0.0}
    )
    r = make_rig(cfg, tmp_path / "a.sqlite", points, {**DEFAULTS, "airflow_setpoint_m3s": 0.0})
    p = points["airflow_setpoint_m3s"]
    try:
        for value in (0.5, -0.5, 0.1, -0.1):
            r.applier.set_target(ZONE, target(airflow_m3s=value))
            r.apply()
        held = [decode(p, encode(p, w)) for w in r.vav.written("airflow_setpoint_m3s")]
        assert len(held) == 4
        assert all(-0.1 <= h <= 0.1 for h in held), held
    finally:
        r.audit.close()


def test_duplicate_and_out_of_order_commands_are_ignored(rig: Rig) -> None:
    first = commands(rig, seq=5, airflow_m3s=0.5)
    assert rig.applier.accept(first, rig.mono()) == [ZONE]
    assert rig.applier.accept(commands(rig, seq=5, airflow_m3s=0.9), rig.mono()) == []
    assert rig.applier.accept(commands(rig, seq=4, airflow_m3s=0.9), rig.mono()) == []
    older = commands(rig, seq=6, airflow_m3s=0.9, t=T0 - 1.0)
    assert rig.applier.accept(older, rig.mono()) == []
    assert rig.applier.targets[ZONE].command_id == first.command_id
    rig.apply()
    assert rig.vav.written("airflow_setpoint_m3s") == [0.5]
    applied = len(rig.records())
    # A newer command goes through; another controller has its own sequence.
    assert rig.applier.accept(commands(rig, seq=6, airflow_m3s=0.6), rig.mono()) == [ZONE]
    assert rig.applier.accept(commands(rig, seq=1, controller="ctl-b"), rig.mono()) == [ZONE]
    # A restarted controller (sequence from 1 again, a later time) is heard.
    restarted = commands(rig, seq=1, airflow_m3s=0.7, t=T0 + 5.0)
    assert rig.applier.accept(restarted, rig.mono()) == [ZONE]
    rig.flush()
    assert len(rig.records()) == applied  # ignored commands leave no audit record


# --- relinquish and modes ---------------------------------------------------------------------


def test_relinquish_targets_are_the_point_defaults(rig: Rig) -> None:
    t = rig.applier.relinquish_target(ZONE, "controller silent")
    assert t.values == {"airflow_m3s": 0.1, "t_heat_c": 21.0, "t_cool_c": 25.0, "mode": 1.0}
    assert t.source is Source.RELINQUISH
    assert t.command_id is None
    assert t.deadline == math.inf
    assert t.reason == "controller silent"
    # Only the points the zone writes.
    assert rig.applier.relinquish_target(OTHER, "x").values == {"airflow_m3s": 0.1}
    # Applied after a controller's command, the building gets its own values back.
    rig.applier.accept(
        commands(rig, airflow_m3s=0.8, t_heat_c=23.0, t_cool_c=24.0, mode=Mode.WARM_UP), rig.mono()
    )
    rig.apply()
    rig.applier.set_target(ZONE, t)
    rig.apply()
    assert rig.vav.values == {**DEFAULTS, "airflow_setpoint_m3s": pytest.approx(0.1)}
    back = rig.records()[-4:]
    assert {r.source for r in back} == {Source.RELINQUISH}
    assert all(r.command_id is None for r in back)


def test_bms_mode_covers_every_wire_mode_within_the_mode_points_limits(cfg: GatewayConfig) -> None:
    assert set(BMS_MODE) == set(Mode)
    point = cfg.profiles["vav-ahu"].points["occupancy_mode"]
    assert point.min is not None
    assert point.max is not None
    for mode, code in BMS_MODE.items():
        assert code == int(code), mode
        assert point.min <= code <= point.max, mode
    # Every mode the control core produces reaches the BMS.
    assert {mode_of(int(m)) for m in LawMode} == set(BMS_MODE)
    assert BMS_MODE[Mode.OCCUPIED] == point.default  # ilma's occupied is the BMS's own default
    assert BMS_MODE[Mode.UNOCCUPIED] == 0
    assert BMS_MODE[Mode.OCCUPIED_STANDBY] == 2
    assert BMS_MODE[Mode.WARM_UP] == 3


def test_a_commands_mode_is_written_as_its_bms_code(rig: Rig) -> None:
    for mode in Mode:
        rig.applier.accept(commands(rig, mode=mode), rig.mono())
        rig.apply()
        assert rig.vav.values["occupancy_mode"] == BMS_MODE[mode], mode


def test_write_fields_are_the_zone_write_keys(cfg: GatewayConfig) -> None:
    assert set(WRITE_FIELDS) == set(type(cfg.file.zone[0].write).model_fields)


def test_audit_records_wait_for_a_failing_audit_log_within_a_bound(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: the writes go on, their records are held and stored once the log works
    again; beyond AUDIT_HELD the oldest are dropped and counted."""
    store = rig.audit.record_many
    failing = True

    def record_many(recs: list[AuditRecord]) -> None:
        if failing:
            raise AuditStoreError("database or disk is full")
        store(recs)

    monkeypatch.setattr(rig.audit, "record_many", record_many)
    rig.applier.set_target(ZONE, target(airflow_m3s=0.4))
    with pytest.raises(AuditStoreError):
        rig.apply()
    assert rig.vav.values["airflow_setpoint_m3s"] == pytest.approx(0.4)  # written all the same
    failing = False
    rig.flush()
    assert [r.outcome for r in rig.records()] == [Outcome.APPLIED]
    # Held within the bound, the newest kept.
    failing = True
    monkeypatch.setattr("edge_agent.applier.AUDIT_HELD", 3)
    for value in (0.5, 0.6, 0.7, 0.8, 0.9):
        rig.applier.set_target(ZONE, target(airflow_m3s=value))
        with pytest.raises(AuditStoreError):
            rig.apply()
    failing = False
    rig.flush()
    assert [r.written for r in rig.records()[1:]] == [f32(0.7), f32(0.8), f32(0.9)]
    assert rig.metrics.registry.get_sample_value("ilma_agent_audit_records_dropped_total") == 2
