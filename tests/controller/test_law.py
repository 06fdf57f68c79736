"""Tests for controller.law: the safety property, ASHRAE 62.1 / G36 sequences, AHUs, lanes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from controller.law import (
    CO2_BAND_PPM,
    FREEZE_OFF_C,
    FREEZE_ON_C,
    MIN_DEADBAND_K,
    OPT_START_INITIAL_K_PER_H,
    STANDBY_AFTER_S,
    TR_PERIOD_S,
    TR_RESPOND_MAX_K,
    TR_TRIM_K,
    Commands,
    Inputs,
    Mode,
    Reason,
    ZoneState,
    enforce_limits,
    initial_state,
    step,
)
from controller.params import Params, Strategy, compile_params, stack_params
from controller.site import load_site, parse_site
from sensors.arrays import BoolArray, FloatArray, concat_rows

HELSINKI = Path(__file__).resolve().parents[2] / "config" / "sites" / "helsinki-office.toml"

MODES = {int(m) for m in Mode}
ALL_REASONS = sum(int(r) for r in Reason)


def _site_doc(ahu: dict[str, Any], zones: list[dict[str, Any]], **site: Any) -> dict[str, Any]:
    return {
        "site": {
            "name": "law",
            "latitude_deg": 60.2,
            "longitude_deg": 24.9,
            "timezone": "Europe/Helsinki",
            **site,
        },
        "ahu": [{"name": "A", **ahu}],
        "zone": [{"ahu": "A", **z} for z in zones],
    }


# One big AHU with no fan minimum: zone airflows pass through unscaled.
#   office  : EN II (fixed band 20-26 °C -> occupied 20.5/25.5), CO2 limit 420 + 800 = 1220 ppm,
#             Rp = max(2.5, 7, 6) = 7 L/s·p, Ra = max(0.3, 0.7) = 0.7 L/s·m², A = 20 m², Ez 0.8;
#             design = Vbz/Ez = (7·4 + 14)/0.8 = 52.5 L/s (CO2 needs only 27 L/s).
#   meeting : S2 (950 ppm), Rp 7, Ra 0.5, A = 24 m², Ez 1, occupied minimum 20 L/s;
#             Vbz = 82 L/s, design from CO2: 1e6·10·4.8e-6/(950 − 100 − 420) = 111.6 L/s.
#   hall    : S3 (1200 ppm, band 20-27 °C), Rp = max(3.8, 6, 6) = 6, Ra 0.35, A = 100 m².
SMALL = parse_site(
    _site_doc(
        {"design_airflow_m3s": 10.0, "min_airflow_fraction": 0.0},
        [
            {
                "name": "office",
                "kind": "office",
                "area_m2": 20.0,
                "design_occupancy": 4,
                "comfort_class": "II",
                "ez": 0.8,
            },
            {
                "name": "meeting",
                "kind": "meeting_room",
                "area_m2": 24.0,
                "design_occupancy": 10,
                "comfort_class": "S2",
                "airflow_min_m3s": 0.02,
            },
            {
                "name": "hall",
                "kind": "lecture_hall",
                "area_m2": 100.0,
                "design_occupancy": 80,
                "comfort_class": "S3",
            },
        ],
    )
)
OFFICE, MEETING, HALL = 0, 1, 2

# For the safety property: odd limits, several AHUs with fan minimums, every class.
ODD = parse_site(
    {
        "site": {
            "name": "odd",
            "latitude_deg": 60.2,
            "longitude_deg": 24.9,
            "timezone": "Europe/Helsinki",
            "unoccupied_heating_c": 10.0,
            "unoccupied_cooling_c": 38.0,
            "standby_relax_k": 3.0,
        },
        "ahu": [
            {"name": "A", "design_airflow_m3s": 0.3, "min_airflow_fraction": 0.5},
            {
                "name": "B",
                "design_airflow_m3s": 5.0,
                "min_airflow_fraction": 0.0,
                "supply_t_min_c": 12.0,
                "supply_t_max_c": 22.0,
            },
        ],
        "zone": [
            {
                "name": "narrow",
                "kind": "office",
                "ahu": "A",
                "area_m2": 10.0,
                "comfort_class": "S1",
                "heating_setpoint_limits_c": [21.0, 21.5],
                "cooling_setpoint_limits_c": [21.2, 22.0],
                "airflow_min_m3s": 0.05,
                "ez": 1.5,
            },
            {
                "name": "wide",
                "kind": "cafeteria",
                "ahu": "A",
                "area_m2": 100.0,
                "comfort_class": "I",
                "heating_setpoint_limits_c": [5.0, 30.0],
                "cooling_setpoint_limits_c": [10.0, 40.0],
                "ez": 0.5,
            },
            {
                "name": "low",
                "kind": "corridor",
                "ahu": "B",
                "area_m2": 50.0,
                "comfort_class": "IV",
                "design_occupancy": 0,
            },
            {
                "name": "big",
                "kind": "lecture_hall",
                "ahu": "B",
                "area_m2": 300.0,
                "comfort_class": "III",
                "co2_limit_ppm": 700.0,
                "airflow_max_m3s": 6.0,
            },
        ],
    }
)


def _inputs(n: int, dt_s: float = 60.0, **values: Any) -> Inputs:
    """Inputs for n zones: an occupied winter day unless told otherwise (scalars broadcast)."""
    fields: dict[str, Any] = {
        "scheduled": True,
        "time_to_open_s": np.inf,
        "occupancy": 2.0,
        "co2_ppm": 500.0,
        "t_zone_c": 21.0,
        "t_supply_c": 20.0,  # within 2 K of the zone: no VAV cooling airflow
        "t_out_c": 0.0,
        "t_out_24h_c": 0.0,
        "co2_out_ppm": 420.0,
    }
    fields.update(values)
    arrays: dict[str, Any] = {
        k: np.array(np.broadcast_to(v, (n,)), dtype=np.bool_ if k == "scheduled" else np.float64)
        for k, v in fields.items()
    }
    return Inputs(dt_s=dt_s, **arrays)


def _run(
    p: Params, u: Inputs, steps: int = 1, state: ZoneState | None = None
) -> tuple[ZoneState, Commands]:
    s = initial_state(p) if state is None else state
    c: Commands | None = None
    for _ in range(steps):
        s, c = step(s, u, p)
    assert c is not None
    return s, c


def _has(reason: np.int32 | int, flag: Reason) -> bool:
    return bool(int(reason) & int(flag))


# --- the safety property --------------------------------------------------------------------

_HELSINKI_SITE = load_site(HELSINKI)
_SITES = {"small": SMALL, "odd": ODD, "helsinki": _HELSINKI_SITE}
_PARAMS = {(name, s): compile_params(site, s) for name, site in _SITES.items() for s in Strategy}

any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # NaN, ±inf, huge, tiny, subnormal
    st.floats(-60.0, 3000.0),  # plausible magnitudes, to reach every branch
    st.sampled_from([0.0, -0.0, 0.5, 4.0, 7.0, 16.0, 21.0, 950.0, 1e-300, -1e300, 1e300]),
)


def _float_arrays(n: int) -> st.SearchStrategy[FloatArray]:
    return hnp.arrays(np.float64, n, elements=any_float)


def _bool_arrays(n: int) -> st.SearchStrategy[BoolArray]:
    return hnp.arrays(np.bool_, n, elements=st.booleans())


@st.composite
def _input_sequences(draw: st.DrawFn, n: int) -> list[Inputs]:
    steps = draw(st.integers(1, 4))
    return [
        Inputs(
            dt_s=draw(st.floats(0.0, 3600.0, exclude_min=True)),
            scheduled=draw(_bool_arrays(n)),
            time_to_open_s=draw(_float_arrays(n)),
            occupancy=draw(_float_arrays(n)),
            co2_ppm=draw(_float_arrays(n)),
            t_zone_c=draw(_float_arrays(n)),
            t_supply_c=draw(_float_arrays(n)),
            t_out_c=draw(_float_arrays(n)),
            t_out_24h_c=draw(_float_arrays(n)),
            co2_out_ppm=draw(_float_arrays(n)),
        )
        for _ in range(steps)
    ]


def assert_commands_within_limits(c: Commands, p: Params) -> None:
    z, a = p.zones, p.ahus
    for name in ("t_heat_c", "t_cool_c", "airflow_m3s", "mode", "reason"):
        assert getattr(c, name).shape == (z.n,), name
    for name in ("ahu_on", "ahu_airflow_m3s", "ahu_supply_c"):
        assert getattr(c, name).shape == (a.n,), name
    for name in ("t_heat_c", "t_cool_c", "airflow_m3s", "ahu_airflow_m3s", "ahu_supply_c"):
        assert np.all(np.isfinite(getattr(c, name))), (name, getattr(c, name))
    assert np.all(c.t_heat_c >= z.heat_lo_c), c.t_heat_c
    assert np.all(c.t_heat_c <= z.heat_hi_c), c.t_heat_c
    assert np.all(c.t_cool_c >= z.cool_lo_c), c.t_cool_c
    assert np.all(c.t_cool_c <= z.cool_hi_c), c.t_cool_c
    assert np.all(c.airflow_m3s >= 0.0), c.airflow_m3s
    assert np.all(c.airflow_m3s <= z.airflow_max_m3s), c.airflow_m3s
    assert np.all(c.ahu_airflow_m3s >= 0.0), c.ahu_airflow_m3s
    assert np.all(c.ahu_airflow_m3s <= a.design_airflow_m3s), c.ahu_airflow_m3s
    assert np.all(c.ahu_supply_c >= a.supply_t_min_c), c.ahu_supply_c
    assert np.all(c.ahu_supply_c <= a.supply_t_max_c), c.ahu_supply_c
    assert set(c.mode.tolist()) <= MODES, c.mode
    assert np.all(c.reason >= 0), c.reason
    assert np.all((c.reason & ~ALL_REASONS) == 0), c.reason
    assert c.ahu_on.dtype == np.bool_
    # An AHU that is off delivers no air, and no zone of it gets any.
    assert np.all(c.ahu_airflow_m3s[~c.ahu_on] == 0.0)
    assert np.all(c.airflow_m3s[~c.ahu_on[z.ahu]] == 0.0)


def assert_state_sane(s: ZoneState, p: Params) -> None:
    assert set(s.mode.tolist()) <= MODES
    assert np.all(np.isfinite(s.unpopulated_s))
    assert np.all(s.unpopulated_s >= 0.0)
    for name in ("heat_rate_k_s", "cool_rate_k_s"):
        rate = getattr(s, name)
        assert np.all(np.isfinite(rate)), (name, rate)
        assert np.all(rate > 0.0), (name, rate)
    for name in ("warm_s", "cool_s"):
        assert np.all(np.isfinite(getattr(s, name))), name
        assert np.all(getattr(s, name) >= 0.0), name
    for name in ("warm_t0_c", "cool_t0_c"):
        assert not np.any(np.isinf(getattr(s, name))), name  # a temperature or NaN (none runs)
    assert np.all(s.ahu_t_max_c >= p.ahus.supply_t_min_c)
    assert np.all(s.ahu_t_max_c <= p.ahus.supply_t_max_c)


@settings(max_examples=200)
@given(data=st.data(), site=st.sampled_from(sorted(_SITES)))
def test_every_command_stays_within_its_limits_whatever_the_inputs(
    data: st.DataObject, site: str
) -> None:
    n = len(_SITES[site].zone)
    sequence = data.draw(_input_sequences(n))
    for strategy in Strategy:  # the same inputs through every strategy
        p = _PARAMS[(site, strategy)]
        state = initial_state(p)
        for u in sequence:
            # Overflow warnings on absurd magnitudes are checked separately, below.
            with np.errstate(all="ignore"):
                state, c = step(state, u, p)
            assert_commands_within_limits(c, p)
            assert_state_sane(state, p)


def test_oracle_runs_the_ilma_law() -> None:
    u = _inputs(3, occupancy=np.array([0.0, 3.0, np.nan]), co2_ppm=900.0, t_zone_c=24.0)
    _, ilma = _run(compile_params(SMALL, Strategy.ILMA), u, steps=6)
    _, oracle = _run(compile_params(SMALL, Strategy.ORACLE), u, steps=6)
    for name in Commands._fields:
        np.testing.assert_array_equal(getattr(ilma, name), getattr(oracle, name))


def test_learned_rates_stay_finite_when_an_episode_ends_within_a_subnormal_step() -> None:
    # Cool-down starts at 23 °C (Helsinki S2 cooling 22 °C at 0 °C outdoor); the next reading,
    # 5e-324 s later, is 0 °C: the episode "reaches" its target and its rate is 23 K / 5e-324 s.
    p = compile_params(_HELSINKI_SITE, Strategy.ILMA)
    n = p.zones.n
    night = {"scheduled": False, "time_to_open_s": 0.0, "occupancy": 0.0, "t_out_24h_c": 0.0}
    state, c = _run(p, _inputs(n, dt_s=1.0, t_zone_c=23.0, **night))
    assert np.all(c.mode == Mode.COOL_DOWN)
    with np.errstate(all="ignore"):
        state, _ = step(state, _inputs(n, dt_s=5e-324, t_zone_c=0.0, **night), p)
    assert_state_sane(state, p)


@pytest.mark.parametrize(
    "extreme",
    [
        {"t_zone_c": 1e305},  # overflow in heat_gap / rate
        {"t_zone_c": -1e305},
        {"t_zone_c": np.inf, "t_supply_c": np.inf},  # inf − inf
    ],
    ids=["t-huge", "t-minus-huge", "t-and-supply-inf"],
)
def test_extreme_readings_raise_no_floating_point_warnings(extreme: dict[str, float]) -> None:
    # pytest turns warnings into errors here; a service run with -W error would crash the same way.
    p = compile_params(SMALL, Strategy.ILMA)
    _, c = _run(p, _inputs(3, **extreme))
    assert_commands_within_limits(c, p)


# --- enforce_limits -------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


def _one_zone_params() -> Params:
    # Default zone limits: heating 14-24 °C, cooling 21-35 °C; AHU supply 16-20 °C.
    doc = _site_doc(
        {"design_airflow_m3s": 2.0},
        [{"name": "z", "kind": "office", "area_m2": 20.0, "airflow_max_m3s": 0.5}],
    )
    return compile_params(parse_site(doc))


@pytest.mark.parametrize(
    ("heat", "cool", "expected_heat", "expected_cool"),
    [
        (20.0, 25.0, 20.0, 25.0),  # inside: untouched
        (NAN, NAN, 14.0, 35.0),  # missing: heating at its low limit, cooling at its high one
        (INF, -INF, 20.5, 21.0),  # cooling at 21, heating kept 0.5 K below it
        (-INF, INF, 14.0, 35.0),
        (100.0, 100.0, 24.0, 35.0),
        (-100.0, -100.0, 14.0, 21.0),
        (23.8, 22.0, 21.5, 22.0),  # deadband of 0.5 K kept by lowering heating
        (23.0, NAN, 23.0, 35.0),
        (NAN, 22.0, 14.0, 22.0),
    ],
)
def test_enforce_limits_setpoints_golden(
    heat: float, cool: float, expected_heat: float, expected_cool: float
) -> None:
    p = _one_zone_params()
    c = Commands(
        mode=np.array([1], dtype=np.int8),
        t_heat_c=np.array([heat]),
        t_cool_c=np.array([cool]),
        airflow_m3s=np.array([0.1]),
        reason=np.array([0], dtype=np.int32),
        ahu_on=np.array([True]),
        ahu_airflow_m3s=np.array([0.1]),
        ahu_supply_c=np.array([18.0]),
    )
    out = enforce_limits(c, p)
    assert out.t_heat_c[0] == expected_heat
    assert out.t_cool_c[0] == expected_cool
    assert out.t_cool_c[0] - out.t_heat_c[0] >= MIN_DEADBAND_K or expected_heat == 14.0


@pytest.mark.parametrize(
    ("airflow", "ahu_airflow", "supply", "expected"),
    [
        (0.1, 1.0, 18.0, (0.1, 1.0, 18.0)),
        (NAN, NAN, NAN, (0.0, 0.0, 20.0)),  # no air; the warmest allowed supply air
        (-1.0, -1.0, -50.0, (0.0, 0.0, 16.0)),
        (-0.0, -0.0, 16.0, (0.0, 0.0, 16.0)),
        (1e9, 1e9, 1e9, (0.5, 2.0, 20.0)),
        (INF, INF, INF, (0.5, 2.0, 20.0)),
        (-INF, -INF, -INF, (0.0, 0.0, 16.0)),
        (0.5, 2.0, 20.0, (0.5, 2.0, 20.0)),
    ],
)
def test_enforce_limits_airflow_and_supply_golden(
    airflow: float, ahu_airflow: float, supply: float, expected: tuple[float, float, float]
) -> None:
    p = _one_zone_params()
    c = Commands(
        mode=np.array([1], dtype=np.int8),
        t_heat_c=np.array([20.0]),
        t_cool_c=np.array([25.0]),
        airflow_m3s=np.array([airflow]),
        reason=np.array([0], dtype=np.int32),
        ahu_on=np.array([True]),
        ahu_airflow_m3s=np.array([ahu_airflow]),
        ahu_supply_c=np.array([supply]),
    )
    out = enforce_limits(c, p)
    assert (out.airflow_m3s[0], out.ahu_airflow_m3s[0], out.ahu_supply_c[0]) == expected
    assert out.mode is c.mode
    assert out.reason is c.reason
    assert out.ahu_on is c.ahu_on


# --- ventilation: ASHRAE 62.1 and the G36 CO2 loop ------------------------------------------


@pytest.mark.parametrize(
    ("zone", "people", "expected_ls"),
    [
        (OFFICE, 3.0, (7 * 3 + 0.7 * 20) / 0.8),
        (OFFICE, 0.0, (0.7 * 20) / 0.8),  # just emptied: the area component only
        (OFFICE, 4.0, (7 * 4 + 0.7 * 20) / 0.8),
        (MEETING, 1.0, 20.0),  # Vbz 19 L/s below the occupied minimum of 20 L/s
        (MEETING, 5.0, 7 * 5 + 0.5 * 24),
        (MEETING, 2.5, 7 * 2.5 + 0.5 * 24),  # estimates need not be whole people
        (HALL, 40.0, 6 * 40 + 0.35 * 100),
    ],
)
def test_occupied_airflow_is_ashrae_62_1_vbz_over_ez(
    zone: int, people: float, expected_ls: float
) -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    occupancy = np.full(3, 1.0)
    occupancy[zone] = people
    _, c = _run(p, _inputs(3, occupancy=occupancy, co2_ppm=500.0))
    assert c.mode[zone] == Mode.OCCUPIED
    assert c.airflow_m3s[zone] == pytest.approx(expected_ls / 1000.0, rel=1e-12)
    assert _has(c.reason[zone], Reason.OCCUPANCY)
    assert not _has(c.reason[zone], Reason.CO2)
    assert not _has(c.reason[zone], Reason.AHU_LIMIT)


# The office: limit 1220 ppm, Ez 0.8, area component 14 L/s, maximum 52.5 L/s (42 L/s at the
# breathing zone). CO2-only control counts no people: the loop alone moves the airflow.
@pytest.mark.parametrize(
    ("co2", "expected_ls"),
    [
        (1220.0 - 300.0, 14 / 0.8),  # below the band: the area component
        (1220.0 - CO2_BAND_PPM, 14 / 0.8),  # loop at 0 %
        (1220.0 - 150.0, (14 + 0.25 * (42 - 14)) / 0.8),  # 25 %
        (1220.0 - 100.0, (14 + 0.5 * (42 - 14)) / 0.8),  # 50 %
        (1220.0, 52.5),  # 100 %: the zone maximum
        (1220.0 + 500.0, 52.5),
    ],
)
def test_co2_loop_raises_airflow_proportionally_over_200_ppm_below_the_limit(
    co2: float, expected_ls: float
) -> None:
    p = compile_params(SMALL, Strategy.CO2)
    _, c = _run(p, _inputs(3, co2_ppm=co2))
    assert c.airflow_m3s[OFFICE] == pytest.approx(expected_ls / 1000.0, rel=1e-12)
    assert _has(c.reason[OFFICE], Reason.CO2) == (co2 > 1220.0 - CO2_BAND_PPM)


def test_co2_loop_adds_to_the_people_component_under_ilma() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    # One person: Vbz = 21 L/s at the breathing zone. At 0 % the loop asks for 14 L/s, so the
    # people win; at 50 % it asks for 28 L/s and wins; at 100 % the zone maximum.
    for co2, expected_ls in ((1020.0, 21 / 0.8), (1120.0, 28 / 0.8), (1220.0, 52.5)):
        _, c = _run(p, _inputs(3, occupancy=1.0, co2_ppm=co2))
        assert c.airflow_m3s[OFFICE] == pytest.approx(expected_ls / 1000.0, rel=1e-12), co2


# --- occupied-standby -----------------------------------------------------------------------


def test_an_empty_zone_goes_to_standby_after_five_minutes_and_back_at_once() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    empty = _inputs(3, dt_s=60.0, occupancy=0.0, co2_ppm=420.0)
    state = initial_state(p)
    for k in range(1, 5):  # 60..240 s unpopulated
        state, c = step(state, empty, p)
        assert c.mode[OFFICE] == Mode.OCCUPIED, k
        assert (c.t_heat_c[OFFICE], c.t_cool_c[OFFICE]) == (20.5, 25.5)
        assert c.airflow_m3s[OFFICE] == pytest.approx(0.014 / 0.8)
    state, c = step(state, empty, p)  # 300 s
    assert state.unpopulated_s[OFFICE] == STANDBY_AFTER_S
    assert c.mode[OFFICE] == Mode.OCCUPIED_STANDBY
    assert _has(c.reason[OFFICE], Reason.STANDBY)
    assert not _has(c.reason[OFFICE], Reason.PURGE)
    # Relaxed by 0.5 K each way, still inside the EN II band 20-26 °C; CO2 at outdoor: no air.
    assert (c.t_heat_c[OFFICE], c.t_cool_c[OFFICE]) == (20.0, 26.0)
    assert c.airflow_m3s[OFFICE] == 0.0
    state, c = step(state, _inputs(3, occupancy=2.0, co2_ppm=420.0), p)
    assert c.mode[OFFICE] == Mode.OCCUPIED
    assert state.unpopulated_s[OFFICE] == 0.0
    assert (c.t_heat_c[OFFICE], c.t_cool_c[OFFICE]) == (20.5, 25.5)
    assert c.airflow_m3s[OFFICE] == pytest.approx((0.014 + 0.014) / 0.8)


def test_standby_time_is_cumulated_over_uneven_steps() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    state = initial_state(p)
    for dt in (100.0, 50.0, 149.0):
        state, c = step(state, _inputs(3, dt_s=dt, occupancy=0.3, co2_ppm=420.0), p)
        assert c.mode[OFFICE] == Mode.OCCUPIED
    state, c = step(state, _inputs(3, dt_s=1.0, occupancy=0.3, co2_ppm=420.0), p)
    assert c.mode[OFFICE] == Mode.OCCUPIED_STANDBY
    # A single long step counts as well.
    _, c = _run(p, _inputs(3, dt_s=300.0, occupancy=0.0, co2_ppm=420.0))
    assert c.mode[OFFICE] == Mode.OCCUPIED_STANDBY


def test_standby_purges_co2_left_by_the_last_occupants() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    # 420 + 150 + 50 ppm: purge at half the area component.
    _, c = _run(p, _inputs(3, dt_s=300.0, occupancy=0.0, co2_ppm=620.0))
    assert c.mode[OFFICE] == Mode.OCCUPIED_STANDBY
    assert _has(c.reason[OFFICE], Reason.PURGE)
    assert c.airflow_m3s[OFFICE] == pytest.approx(0.5 * 0.014 / 0.8)


def test_no_standby_without_an_occupancy_estimate_or_outside_hours() -> None:
    p = compile_params(SMALL, Strategy.CO2)  # no people counting: never standby
    _, c = _run(p, _inputs(3, occupancy=0.0, co2_ppm=420.0), steps=10)
    assert np.all(c.mode == Mode.OCCUPIED)
    p = compile_params(SMALL, Strategy.ILMA)
    _, c = _run(p, _inputs(3, occupancy=np.nan, co2_ppm=420.0), steps=10)
    assert np.all(c.mode == Mode.OCCUPIED)


# --- fail-safe and strategies ---------------------------------------------------------------


def test_missing_occupancy_under_ilma_uses_the_design_occupancy() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    occupancy = np.array([2.0, np.nan, np.inf])
    _, c = _run(p, _inputs(3, occupancy=occupancy, co2_ppm=500.0))
    assert not _has(c.reason[OFFICE], Reason.FAILSAFE)
    for zone, vbz_ls in ((MEETING, 7 * 10 + 0.5 * 24), (HALL, 6 * 80 + 0.35 * 100)):
        assert _has(c.reason[zone], Reason.FAILSAFE)
        assert c.mode[zone] == Mode.OCCUPIED
        assert c.airflow_m3s[zone] == pytest.approx(vbz_ls / 1000.0)


def test_schedule_strategy_gives_design_airflow_in_hours_and_none_outside() -> None:
    p = compile_params(SMALL, Strategy.SCHEDULE)
    design = np.array([r.design_airflow_m3s for r in SMALL.resolved])
    for occupancy in (0.0, 7.0, np.nan):
        _, c = _run(p, _inputs(3, scheduled=True, occupancy=occupancy, co2_ppm=2000.0))
        np.testing.assert_allclose(c.airflow_m3s, design, rtol=1e-12)
        assert np.all(c.mode == Mode.OCCUPIED)
        _, c = _run(p, _inputs(3, scheduled=False, occupancy=occupancy, co2_ppm=2000.0))
        assert np.all(c.airflow_m3s == 0.0)
        assert not c.ahu_on[0]
        assert np.all(c.mode == Mode.UNOCCUPIED)
        # Fixed setpoints: no setback at night.
        assert (c.t_heat_c[OFFICE], c.t_cool_c[OFFICE]) == (20.5, 25.5)
    assert np.all(c.ahu_supply_c == 17.0)  # the fixed design supply temperature


def test_co2_strategy_ignores_occupancy() -> None:
    p = compile_params(SMALL, Strategy.CO2)
    reference = None
    for occupancy in (0.0, 3.0, 500.0, np.nan, -np.inf):
        _, c = _run(p, _inputs(3, occupancy=occupancy, co2_ppm=1100.0), steps=8)
        if reference is None:
            reference = c
        for name in Commands._fields:
            np.testing.assert_array_equal(getattr(c, name), getattr(reference, name))
    # With CO2 missing too, the design occupancy stands in.
    _, c = _run(p, _inputs(3, occupancy=np.nan, co2_ppm=np.nan))
    assert _has(c.reason[MEETING], Reason.FAILSAFE)
    assert c.airflow_m3s[MEETING] == pytest.approx((7 * 10 + 0.5 * 24) / 1000.0)


# --- optimal start, setback, freeze protection ----------------------------------------------


def test_a_cold_zone_warms_up_only_within_its_optimal_start_window() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    # 17 °C, occupied heating 20.5 °C: 3.5 K at the initial 2 K/h takes 6300 s.
    assert OPT_START_INITIAL_K_PER_H == 2.0
    near = _inputs(3, scheduled=False, time_to_open_s=3600.0, occupancy=0.0, t_zone_c=17.0)
    _, c = _run(p, near)
    assert c.mode[OFFICE] == Mode.WARM_UP
    assert _has(c.reason[OFFICE], Reason.WARM_UP)
    assert c.t_heat_c[OFFICE] == 20.5  # occupied setpoints during warm-up
    assert c.airflow_m3s[OFFICE] == 0.0  # warm-up recirculates: no outdoor air needed
    _, c = _run(p, near._replace(time_to_open_s=np.full(3, 6200.0)))
    assert c.mode[OFFICE] == Mode.WARM_UP
    far = near._replace(time_to_open_s=np.full(3, 6400.0))
    _, c = _run(p, far)
    assert c.mode[OFFICE] == Mode.UNOCCUPIED
    assert _has(c.reason[OFFICE], Reason.SETBACK)
    assert (c.t_heat_c[OFFICE], c.t_cool_c[OFFICE]) == (16.0, 32.0)
    # Below the unoccupied heating setpoint and far from opening: setback.
    _, c = _run(
        p, _inputs(3, scheduled=False, time_to_open_s=20000.0, t_zone_c=15.0, occupancy=0.0)
    )
    assert c.mode[OFFICE] == Mode.SETBACK
    # Too warm, well before opening: setup; close to opening: cool-down.
    _, c = _run(
        p, _inputs(3, scheduled=False, time_to_open_s=20000.0, t_zone_c=33.0, occupancy=0.0)
    )
    assert c.mode[OFFICE] == Mode.SETUP
    _, c = _run(p, _inputs(3, scheduled=False, time_to_open_s=600.0, t_zone_c=27.0, occupancy=0.0))
    assert c.mode[OFFICE] == Mode.COOL_DOWN
    # A schedule-run building does no optimal start.
    _, c = _run(compile_params(SMALL, Strategy.SCHEDULE), near)
    assert c.mode[OFFICE] == Mode.UNOCCUPIED


@pytest.mark.parametrize(("true_k_per_h", "faster"), [(3.5, True), (1.5, False)])
def test_warm_up_learns_the_zones_rate(true_k_per_h: float, faster: bool) -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    state = initial_state(p)
    before = state.heat_rate_k_s[OFFICE]
    dt = 600.0
    for k in range(30):
        t = 17.0 + true_k_per_h * k * dt / 3600.0  # exact at 20.5 °C on a step
        to_open = 3600.0 - k * dt
        state, c = step(
            state,
            _inputs(
                3,
                dt_s=dt,
                scheduled=to_open <= 0.0,
                time_to_open_s=to_open if to_open > 0.0 else 86400.0,
                occupancy=1.0 if to_open <= 0.0 else 0.0,  # people arrive at opening
                t_zone_c=t,
            ),
            p,
        )
        if k == 0:
            assert c.mode[OFFICE] == Mode.WARM_UP
        if t >= 20.5:
            break
    after = state.heat_rate_k_s[OFFICE]
    assert after != before
    assert (after > before) == faster
    # Averaged like the last 3 days: one third of the way to the episode's mean rate.
    expected = before + (true_k_per_h / 3600.0 - before) / 3.0
    assert after == pytest.approx(expected, rel=1e-9)
    assert np.isnan(state.warm_t0_c[OFFICE])  # the episode is over
    np.testing.assert_array_equal(state.cool_rate_k_s, initial_state(p).cool_rate_k_s)


def test_freeze_protection_below_4_c_held_until_above_7_c() -> None:
    p = compile_params(SMALL, Strategy.ILMA)
    night = {"scheduled": False, "time_to_open_s": 40000.0, "occupancy": 0.0}
    state, c = _run(p, _inputs(3, t_zone_c=FREEZE_ON_C, **night))
    assert c.mode[OFFICE] == Mode.SETBACK  # 4.0 °C is not below 4 °C
    for t, frozen in ((3.9, True), (5.0, True), (6.9, True), (FREEZE_OFF_C, False)):
        state, c = step(state, _inputs(3, t_zone_c=t, **night), p)
        assert (c.mode[OFFICE] == Mode.FREEZE_PROTECTION) == frozen, t
        assert _has(c.reason[OFFICE], Reason.FREEZE) == frozen, t
        if frozen:
            assert c.t_heat_c[OFFICE] == 20.5  # heat to the occupied setpoint
    assert c.mode[OFFICE] == Mode.SETBACK
    # Freeze protection wins over occupied mode, and a missing temperature starts none.
    _, c = _run(p, _inputs(3, t_zone_c=np.array([3.0, np.nan, 21.0])))
    assert c.mode.tolist() == [Mode.FREEZE_PROTECTION, Mode.OCCUPIED, Mode.OCCUPIED]


# --- AHUs -----------------------------------------------------------------------------------


def _two_offices(min_fraction: float, design: float = 1.0) -> Params:
    doc = _site_doc(
        {"design_airflow_m3s": design, "min_airflow_fraction": min_fraction},
        [
            {
                "name": name,
                "kind": "office",
                "area_m2": 20.0,
                "design_occupancy": 100,
                "comfort_class": "II",
                "airflow_max_m3s": 1.0,
            }
            for name in ("a", "b")
        ],
    )
    return compile_params(parse_site(doc))


def test_ahu_below_its_minimum_fraction_scales_zone_airflow_up() -> None:
    p = _two_offices(min_fraction=0.5)
    # Zones ask for 35 and 21 L/s (Rp 7·n + Ra 14): 56 L/s, below the fan minimum of 500 L/s.
    _, c = _run(p, _inputs(2, occupancy=np.array([3.0, 1.0])))
    assert c.ahu_on[0]
    assert c.ahu_airflow_m3s[0] == pytest.approx(0.5)
    np.testing.assert_allclose(c.airflow_m3s, np.array([35.0, 21.0]) * 0.5 / 56.0, rtol=1e-12)
    assert all(_has(r, Reason.AHU_LIMIT) for r in c.reason)


def test_ahu_above_its_design_scales_zone_airflow_down() -> None:
    p = _two_offices(min_fraction=0.2)
    # 100 and 60 people: 714 + 434 = 1148 L/s asked of a 1000 L/s AHU.
    _, c = _run(p, _inputs(2, occupancy=np.array([100.0, 60.0]), co2_ppm=500.0))
    asked = np.array([714.0, 434.0]) / 1000.0
    assert c.ahu_airflow_m3s[0] == pytest.approx(1.0)
    np.testing.assert_allclose(c.airflow_m3s, asked / asked.sum(), rtol=1e-12)
    assert all(_has(r, Reason.AHU_LIMIT) for r in c.reason)
    # Within the fan range nothing is scaled.
    _, c = _run(p, _inputs(2, occupancy=np.array([20.0, 20.0]), co2_ppm=500.0))
    np.testing.assert_allclose(c.airflow_m3s, [0.154, 0.154], rtol=1e-12)
    assert c.ahu_airflow_m3s[0] == pytest.approx(0.308)
    assert not any(_has(r, Reason.AHU_LIMIT) for r in c.reason)


def test_ahu_is_off_when_no_zone_asks_for_air() -> None:
    p = _two_offices(min_fraction=0.5)
    _, c = _run(p, _inputs(2, scheduled=False, occupancy=0.0, time_to_open_s=40000.0))
    assert not c.ahu_on[0]
    assert c.ahu_airflow_m3s[0] == 0.0
    assert np.all(c.airflow_m3s == 0.0)
    assert not any(_has(r, Reason.AHU_LIMIT) for r in c.reason)


def test_each_ahu_scales_only_its_own_zones() -> None:
    p = compile_params(_HELSINKI_SITE, Strategy.ILMA)
    n = p.zones.n
    hall = _HELSINKI_SITE.zone_index["lecture-hall"]
    occupancy = np.full(n, 1.0)
    occupancy[hall] = 400.0  # far beyond TK02's 1.5 m³/s; caps at the hall's maximum
    _, c = _run(p, _inputs(n, occupancy=occupancy, co2_ppm=500.0))
    _, calm = _run(p, _inputs(n, occupancy=np.full(n, 1.0), co2_ppm=500.0))
    on_tk01 = p.zones.ahu == 0
    np.testing.assert_array_equal(c.airflow_m3s[on_tk01], calm.airflow_m3s[on_tk01])
    assert c.ahu_airflow_m3s[0] == calm.ahu_airflow_m3s[0]


# --- supply air temperature: Trim & Respond and outdoor reset -------------------------------


def _three_offices() -> Params:
    doc = _site_doc(
        {"design_airflow_m3s": 5.0, "supply_t_min_c": 16.0, "supply_t_max_c": 20.0},
        [
            {"name": f"z{i}", "kind": "office", "area_m2": 20.0, "comfort_class": "II"}
            for i in range(3)
        ],
    )
    return compile_params(parse_site(doc))


@pytest.mark.parametrize("dt", [60.0, 120.0, 45.0])
def test_supply_setpoint_responds_down_to_cooling_requests_then_trims_back_up(dt: float) -> None:
    p = _three_offices()
    state = initial_state(p)
    assert state.ahu_t_max_c[0] == 20.0  # starts at its warmest
    hot = _inputs(3, dt_s=dt, t_zone_c=29.0, t_supply_c=18.0)  # 3.5 K above cooling: 9 requests
    supply = [20.0]
    for _ in range(int(6 * 120.0 / dt) + 2):
        state, c = step(state, hot, p)
        supply.append(float(c.ahu_supply_c[0]))
    falls = -np.diff(supply)
    assert np.all(falls >= 0.0)
    assert np.all(falls <= -TR_RESPOND_MAX_K * dt / TR_PERIOD_S + 1e-9)
    assert falls[0] == pytest.approx(0.6 * dt / 120.0)
    assert supply[-1] == 16.0  # never below the minimum
    cool = _inputs(3, dt_s=dt, t_zone_c=21.0)
    supply = [16.0]
    for _ in range(int(41 * 120.0 / dt) + 2):
        state, c = step(state, cool, p)
        supply.append(float(c.ahu_supply_c[0]))
    rises = np.diff(supply)
    assert np.all(rises >= 0.0)
    assert np.all(rises <= TR_TRIM_K * dt / TR_PERIOD_S + 1e-9)
    assert supply[-1] == 20.0


def test_two_requests_are_ignored() -> None:
    p = _three_offices()
    state = initial_state(p)
    state = state._replace(ahu_t_max_c=np.array([18.0]))
    # One zone 2.5 K above its cooling setpoint: two requests, within the ignored two.
    _, c = _run(p, _inputs(3, dt_s=120.0, t_zone_c=np.array([28.0, 21.0, 21.0])), state=state)
    assert c.ahu_supply_c[0] == pytest.approx(18.1)
    # Unoccupied zones make no requests.
    _, c = _run(
        p,
        _inputs(3, dt_s=120.0, scheduled=False, occupancy=0.0, t_zone_c=29.0),
        state=state,
    )
    assert c.ahu_supply_c[0] == pytest.approx(18.1)


@pytest.mark.parametrize(
    ("t_out", "expected"),
    [(-20.0, 20.0), (16.0, 20.0), (18.5, 18.0), (21.0, 16.0), (30.0, 16.0), (np.nan, 20.0)],
)
def test_outdoor_reset_brings_supply_to_its_minimum_from_21_c(
    t_out: float, expected: float
) -> None:
    p = _three_offices()
    _, c = _run(p, _inputs(3, t_out_c=t_out, t_zone_c=21.0))
    assert c.ahu_supply_c[0] == pytest.approx(expected)


# --- lanes ----------------------------------------------------------------------------------


def _lane_inputs(u: list[Inputs]) -> Inputs:
    return Inputs(
        dt_s=u[0].dt_s,
        **{
            name: np.concatenate([getattr(x, name) for x in u])
            for name in Inputs._fields
            if name != "dt_s"
        },
    )


def test_stack_params_shifts_ahu_rows() -> None:
    a = compile_params(_HELSINKI_SITE, Strategy.ILMA)
    b = compile_params(SMALL, Strategy.SCHEDULE)
    stacked = stack_params([a, b, a])
    assert stacked.zones.n == 2 * a.zones.n + b.zones.n
    assert stacked.ahus.n == 2 * a.ahus.n + b.ahus.n
    np.testing.assert_array_equal(stacked.zones.ahu[: a.zones.n], a.zones.ahu)
    np.testing.assert_array_equal(
        stacked.zones.ahu[a.zones.n : a.zones.n + b.zones.n], b.zones.ahu + a.ahus.n
    )
    np.testing.assert_array_equal(
        stacked.zones.ahu[a.zones.n + b.zones.n :], a.zones.ahu + a.ahus.n + b.ahus.n
    )


@settings(max_examples=40)
@given(data=st.data(), strategies=st.lists(st.sampled_from(Strategy), min_size=2, max_size=3))
def test_stacked_lanes_step_like_separate_ones(
    data: st.DataObject, strategies: list[Strategy]
) -> None:
    lanes = [_PARAMS[("helsinki" if i % 2 else "odd", s)] for i, s in enumerate(strategies)]
    stacked = stack_params(lanes)
    states = [initial_state(p) for p in lanes]
    stacked_state = concat_rows(states)
    for _ in range(3):
        dt = data.draw(st.floats(1.0, 900.0))
        u = [
            Inputs(
                dt_s=dt,
                scheduled=data.draw(_bool_arrays(p.zones.n)),
                time_to_open_s=data.draw(
                    hnp.arrays(np.float64, p.zones.n, elements=st.floats(0, 1e5))
                ),
                occupancy=data.draw(
                    hnp.arrays(np.float64, p.zones.n, elements=st.floats(0, 200) | st.just(np.nan))
                ),
                co2_ppm=data.draw(hnp.arrays(np.float64, p.zones.n, elements=st.floats(400, 2000))),
                t_zone_c=data.draw(hnp.arrays(np.float64, p.zones.n, elements=st.floats(2, 35))),
                t_supply_c=data.draw(hnp.arrays(np.float64, p.zones.n, elements=st.floats(12, 25))),
                t_out_c=np.full(p.zones.n, data.draw(st.floats(-30, 30))),
                t_out_24h_c=np.full(p.zones.n, data.draw(st.floats(-30, 30))),
                co2_out_ppm=np.full(p.zones.n, 420.0),
            )
            for p in lanes
        ]
        separate = [step(s, x, p) for s, x, p in zip(states, u, lanes, strict=True)]
        states = [s for s, _ in separate]
        stacked_state, stacked_c = step(stacked_state, _lane_inputs(u), stacked)
        expected_c = concat_rows([c for _, c in separate])
        for name in Commands._fields:
            np.testing.assert_array_equal(
                getattr(stacked_c, name), getattr(expected_c, name), err_msg=name
            )
        expected_s = concat_rows(states)
        for name in ZoneState._fields:
            np.testing.assert_array_equal(
                getattr(stacked_state, name), getattr(expected_s, name), err_msg=name
            )
