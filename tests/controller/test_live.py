"""Tests for controller.live: site subsets, the local schedule, live steps, and one core for all."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from controller.law import Commands, Inputs, Mode, Reason, initial_state, step
from controller.live import (
    LiveCore,
    LiveReadings,
    LiveState,
    initial_live_state,
    live_step,
    missing_readings,
    schedule_at,
    site_subset,
)
from controller.params import compile_params
from controller.schedule import day_hours, scheduled_now, week_table
from controller.site import load_site, parse_site
from sensors.arrays import BoolArray, FloatArray
from sensors.occupancy import (
    Estimate,
    EstimatorParams,
    Observation,
    estimate,
    initial_estimator_state,
)
from sim.clock import make_clock

HELSINKI = Path(__file__).resolve().parents[2] / "config" / "sites" / "helsinki-office.toml"
SITE = load_site(HELSINKI)
FULL = LiveCore.build(SITE)
TZ = ZoneInfo("Europe/Helsinki")
H = 3600.0
# The zones of the example gateway east-1 (config/gateways/helsinki-office-east.toml).
GATEWAY_ZONES = ("office-e1", "meeting-medium-1", "meeting-small-1")


def _epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Epoch seconds of a wall-clock time in Helsinki."""
    return datetime(year, month, day, hour, minute, tzinfo=TZ).timestamp()


def _readings(n: int, **values: float | FloatArray) -> LiveReadings:
    r = missing_readings(n)
    return r._replace(
        **{k: np.broadcast_to(np.asarray(v, float), (n,)).copy() for k, v in values.items()}
    )


# --- site_subset ------------------------------------------------------------------------------


def test_site_subset_keeps_the_named_zones_in_order_and_only_their_ahus() -> None:
    sub = site_subset(SITE, ["lecture-hall", "office-e1", "meeting-small-1"])
    assert [z.name for z in sub.zone] == ["lecture-hall", "office-e1", "meeting-small-1"]
    assert [a.name for a in sub.ahu] == ["TK01", "TK02"]  # TK03 serves only the cafeteria
    # The zones are the site's zones, defaults and all, not re-derived ones.
    for z in sub.zone:
        assert z == SITE.zone[SITE.zone_index[z.name]]
    for r in sub.resolved:
        assert r == SITE.resolved[SITE.zone_index[r.zone.name]]
    assert sub.site == SITE.site
    assert sub.energy == SITE.energy


def test_site_subset_of_one_annex_zone_has_one_ahu() -> None:
    sub = site_subset(SITE, ["cafeteria"])
    assert [a.name for a in sub.ahu] == ["TK03"]
    assert sub.ahu[0] == SITE.ahu[SITE.ahu_index["TK03"]]


def test_site_subset_of_an_unknown_zone_is_an_error() -> None:
    with pytest.raises(KeyError):
        site_subset(SITE, ["no-such-zone"])


def test_live_core_of_a_subset_has_the_subsets_rows() -> None:
    core = LiveCore.build(SITE, ["meeting-large", "office-e1"])
    assert core.n == 2
    assert core.zones == ("meeting-large", "office-e1")
    assert core.params.zones.n == 2
    assert core.params.ahus.n == 1
    full_row = SITE.zone_index["meeting-large"]
    assert core.params.zones.design_occupancy[0] == FULL.params.zones.design_occupancy[full_row]
    assert core.estimator.volume_m3[0] == FULL.estimator.volume_m3[full_row]


# --- schedule_at ------------------------------------------------------------------------------


def _by_zone(core: LiveCore, values: FloatArray | BoolArray) -> dict[str, object]:
    return {z: values[i].item() for i, z in enumerate(core.zones)}


def test_a_monday_morning_is_scheduled_for_every_zone() -> None:
    assert date(2027, 3, 1).weekday() == 0
    scheduled, _ = schedule_at(FULL, _epoch(2027, 3, 1, 9, 0))
    assert scheduled.dtype == np.bool_
    assert scheduled.shape == (FULL.n,)
    assert scheduled.all()


def test_the_schedule_follows_local_time_not_utc() -> None:
    # 07:30 in Helsinki is 05:30 UTC in winter and 04:30 UTC in summer: open by local time only.
    for when in ((2027, 3, 1, 7, 30), (2027, 6, 7, 7, 30)):
        scheduled, _ = schedule_at(FULL, _epoch(*when))
        by_zone = _by_zone(FULL, scheduled)
        assert by_zone["office-e1"] is True
        assert by_zone["cafeteria"] is True  # opens 07:30
        assert by_zone["lecture-hall"] is False  # opens 08:00
    # 18:00 local closes (the interval is half-open); 17:59 is still open.
    assert not schedule_at(FULL, _epoch(2027, 3, 1, 18, 0))[0].any()
    assert _by_zone(FULL, schedule_at(FULL, _epoch(2027, 3, 1, 17, 59))[0])["office-e1"] is True


def test_a_sunday_is_not_scheduled_and_monday_is_ahead() -> None:
    assert date(2027, 3, 7).weekday() == 6
    scheduled, to_open = schedule_at(FULL, _epoch(2027, 3, 7, 12, 0))
    assert not scheduled.any()
    opens = _by_zone(FULL, to_open)
    assert opens["office-e1"] == 19 * H  # Monday 07:00
    assert opens["lecture-hall"] == 20 * H  # Monday 08:00
    assert opens["cafeteria"] == 19.5 * H  # Monday 07:30


def test_a_saturday_has_no_opening_by_tomorrow() -> None:
    scheduled, to_open = schedule_at(FULL, _epoch(2027, 3, 6, 12, 0))
    assert not scheduled.any()
    assert np.all(np.isinf(to_open))
    assert np.all(to_open > 0)


def test_a_finnish_public_holiday_is_not_scheduled() -> None:
    # Independence Day, 6 December: a Monday in 2027.
    assert date(2027, 12, 6).weekday() == 0
    scheduled, to_open = schedule_at(FULL, _epoch(2027, 12, 6, 9, 0))
    assert not scheduled.any()
    assert _by_zone(FULL, to_open)["office-e1"] == 22 * H  # Tuesday 07:00
    # The evening before, the next opening is not tomorrow (the holiday): none by tomorrow.
    _, to_open = schedule_at(FULL, _epoch(2027, 12, 5, 20, 0))
    assert np.all(np.isinf(to_open))
    # The Monday after is an ordinary working day.
    assert schedule_at(FULL, _epoch(2027, 12, 13, 9, 0))[0].all()


def test_time_to_open_before_the_opening() -> None:
    scheduled, to_open = schedule_at(FULL, _epoch(2027, 3, 1, 6, 0))
    assert not scheduled.any()
    opens = _by_zone(FULL, to_open)
    assert opens["office-e1"] == 1 * H
    assert opens["open-office-south"] == 1 * H
    assert opens["lecture-hall"] == 2 * H
    assert opens["cafeteria"] == 1.5 * H
    # Seconds count: 06:59:30 is half a minute before the offices open.
    _, to_open = schedule_at(FULL, _epoch(2027, 3, 1, 6, 59) + 30.0)
    assert _by_zone(FULL, to_open)["office-e1"] == 30.0


def test_time_to_open_in_the_evening_is_tomorrows_opening() -> None:
    scheduled, to_open = schedule_at(FULL, _epoch(2027, 3, 2, 20, 0))  # a Tuesday
    assert not scheduled.any()
    assert _by_zone(FULL, to_open)["office-e1"] == 11 * H
    # Friday evening: the weekend is ahead.
    _, to_open = schedule_at(FULL, _epoch(2027, 3, 5, 20, 0))
    assert np.all(np.isinf(to_open))


def test_schedule_of_a_subset_is_its_zones_rows_of_the_whole_site() -> None:
    sub = LiveCore.build(SITE, ["cafeteria", "office-e1", "lecture-hall"])
    rows = [SITE.zone_index[z] for z in sub.zones]
    for when in ((2027, 3, 1, 6, 0), (2027, 3, 1, 7, 45), (2027, 3, 1, 14, 59), (2027, 3, 1, 16)):
        full = schedule_at(FULL, _epoch(*when))
        part = schedule_at(sub, _epoch(*when))
        np.testing.assert_array_equal(part[0], full[0][rows])
        np.testing.assert_array_equal(part[1], full[1][rows])


_DAILY_SITE = parse_site(
    {
        "site": {
            "name": "daily",
            "latitude_deg": 60.2,
            "longitude_deg": 24.9,
            "timezone": "Europe/Helsinki",
            "occupied_hours": ["daily 07:00-18:00"],
        },
        "ahu": [{"name": "A", "design_airflow_m3s": 1.0}],
        "zone": [{"name": "z", "kind": "office", "ahu": "A", "area_m2": 20.0}],
    }
)


@pytest.mark.parametrize(
    ("now", "opening"),
    [
        # Sunday 28 March 2027, clocks go from 03:00 to 04:00: 01:00 EET to 07:00 EEST is 5 h.
        ((2027, 3, 28, 1, 0), (2027, 3, 28, 7, 0)),
        ((2027, 3, 27, 22, 0), (2027, 3, 28, 7, 0)),  # the evening before: 8 h, not 9
        # Sunday 31 October 2027, clocks go from 04:00 back to 03:00: 01:00 to 07:00 is 7 h.
        ((2027, 10, 31, 1, 0), (2027, 10, 31, 7, 0)),
        ((2027, 10, 30, 22, 0), (2027, 10, 31, 7, 0)),  # the evening before: 10 h, not 9
        ((2027, 3, 29, 1, 0), (2027, 3, 29, 7, 0)),  # the night after: an ordinary 6 h
    ],
)
def test_time_to_open_is_real_seconds_across_a_daylight_saving_change(
    now: tuple[int, int, int, int, int], opening: tuple[int, int, int, int, int]
) -> None:
    # Optimal start compares the time to the opening with how long warming up takes: real time.
    core = LiveCore.build(_DAILY_SITE)
    _, to_open = schedule_at(core, _epoch(*now))
    assert to_open[0] == _epoch(*opening) - _epoch(*now)


# --- live_step: limits, occupancy, failsafe ---------------------------------------------------

_any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-50.0, 3000.0),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 21.0, 420.0, 1e12, 5e12, -1e300]),
)


Step = tuple[LiveState, Commands, Estimate]


def _assert_within_limits(core: LiveCore, out: Step) -> None:
    _, cmd, est = out
    z, a = core.params.zones, core.params.ahus
    for name in ("t_heat_c", "t_cool_c", "airflow_m3s", "ahu_airflow_m3s", "ahu_supply_c"):
        assert np.all(np.isfinite(getattr(cmd, name))), (name, getattr(cmd, name))
    assert np.all(cmd.t_heat_c >= z.heat_lo_c)
    assert np.all(cmd.t_heat_c <= z.heat_hi_c)
    assert np.all(cmd.t_cool_c >= z.cool_lo_c)
    assert np.all(cmd.t_cool_c <= z.cool_hi_c)
    assert np.all(cmd.airflow_m3s >= 0.0)
    assert np.all(cmd.airflow_m3s <= z.airflow_max_m3s)
    assert np.all(cmd.ahu_airflow_m3s >= 0.0)
    assert np.all(cmd.ahu_airflow_m3s <= a.design_airflow_m3s)
    assert np.all(cmd.ahu_supply_c >= a.supply_t_min_c)
    assert np.all(cmd.ahu_supply_c <= a.supply_t_max_c)
    assert set(cmd.mode.tolist()) <= {int(m) for m in Mode}
    occupancy = est.occupancy
    assert np.all(np.isnan(occupancy) | ((occupancy >= 0.0) & np.isfinite(occupancy)))


@settings(max_examples=150)
@given(
    data=st.data(),
    zones=st.sampled_from([None, GATEWAY_ZONES, ("lecture-hall",)]),
    start=st.floats(_epoch(2027, 1, 1), _epoch(2028, 12, 31)),
)
def test_live_commands_stay_within_each_zones_limits_whatever_the_readings(
    data: st.DataObject, zones: tuple[str, ...] | None, start: float
) -> None:
    core = FULL if zones is None else LiveCore.build(SITE, zones)
    state = initial_live_state(core)
    t = start
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        readings = LiveReadings(
            *(
                data.draw(hnp.arrays(np.float64, core.n, elements=_any_float), label=name)
                for name in LiveReadings._fields
            )
        )
        dt = data.draw(st.floats(1e-3, 3600.0), label="dt_s")
        t += dt
        out = live_step(state, readings, t, dt, core)
        _assert_within_limits(core, out)
        state = out[0]
        assert np.all(np.isfinite(state.airflow_m3s))


def _run_live(
    core: LiveCore, sequence: list[LiveReadings], start: float, dt: float = 60.0
) -> list[Step]:
    state = initial_live_state(core)
    outs: list[Step] = []
    for k, r in enumerate(sequence):
        out = live_step(state, r, start + k * dt, dt, core)
        state = out[0]
        outs.append(out)
    return outs


def test_people_counted_in_raise_the_airflow_over_an_empty_zone() -> None:
    # The lecture hall has an AHU of its own: no other zone shares its fan's range.
    core = LiveCore.build(SITE, ["lecture-hall"])
    monday = _epoch(2027, 3, 1, 9, 0)
    # Supply air no cooler than the room: no cooling airflow on top of the ventilation.
    common = {
        "co2_ppm": 500.0,
        "t_zone_c": 21.0,
        "t_supply_c": 20.0,
        "t_out_c": -5.0,
        "t_out_24h_c": -5.0,
    }
    # The first reading sets the counter's baseline (its history is unknown); 60 enter after.
    empty = [_readings(1, counter_in=1000.0, counter_out=1000.0, **common)] * 3
    full = [
        _readings(1, counter_in=1000.0, counter_out=1000.0, **common),
        _readings(1, counter_in=1040.0, counter_out=1000.0, **common),
        _readings(1, counter_in=1065.0, counter_out=1005.0, **common),
    ]
    _, cmd_empty, est_empty = _run_live(core, empty, monday)[-1]
    _, cmd_full, est_full = _run_live(core, full, monday)[-1]
    assert est_empty.occupancy[0] == 0.0
    assert est_full.occupancy[0] == 60.0  # IN − OUT since the first reading
    z = core.params.zones
    area_only = z.ra_m3s[0] * z.area_m2[0] / z.ez[0]
    with_people = (z.ra_m3s[0] * z.area_m2[0] + z.rp_m3s[0] * 60.0) / z.ez[0]
    assert cmd_full.airflow_m3s[0] == pytest.approx(with_people)
    assert cmd_full.airflow_m3s[0] > cmd_empty.airflow_m3s[0]
    # Empty: the area component, or the AHU's fan minimum where that is more.
    a = core.params.ahus
    fan_min = a.min_fraction[0] * a.design_airflow_m3s[0]
    assert cmd_empty.airflow_m3s[0] == pytest.approx(max(area_only, fan_min))
    assert cmd_full.reason[0] & Reason.OCCUPANCY
    assert not cmd_full.reason[0] & Reason.FAILSAFE


def test_a_zone_without_co2_or_counter_readings_gets_the_failsafe() -> None:
    core = FULL
    monday = _epoch(2027, 3, 1, 9, 0)
    n = core.n
    seen = _readings(
        n,
        counter_in=10.0,
        counter_out=10.0,
        co2_ppm=450.0,
        t_zone_c=21.5,
        t_supply_c=20.0,  # no cooler than the room: no cooling airflow
        t_out_c=0.0,
        t_out_24h_c=0.0,
    )
    blind = seen._replace(
        counter_in=np.full(n, np.nan), counter_out=np.full(n, np.nan), co2_ppm=np.full(n, np.nan)
    )
    _, cmd, est = _run_live(core, [blind, blind], monday)[-1]
    assert np.all(np.isnan(est.occupancy))
    z = core.params.zones
    design = (z.ra_m3s * z.area_m2 + z.rp_m3s * z.design_occupancy) / z.ez
    for i, zone in enumerate(core.zones):
        assert cmd.mode[i] == Mode.OCCUPIED, zone
        assert cmd.reason[i] & Reason.FAILSAFE, zone
    assert not np.any(cmd.reason & Reason.COOLING)
    # Every zone asks for its design occupancy's air; the AHUs scale where the fan cannot give it.
    unscaled = ~(cmd.reason & Reason.AHU_LIMIT).astype(bool)
    assert unscaled.any()
    np.testing.assert_allclose(
        cmd.airflow_m3s[unscaled], np.minimum(design, z.airflow_max_m3s)[unscaled]
    )
    # With the same building seen, nobody is there: far less air.
    _, seen_cmd, _ = _run_live(core, [seen, seen], monday)[-1]
    assert np.all(seen_cmd.reason & Reason.FAILSAFE == 0)
    assert seen_cmd.airflow_m3s.sum() < cmd.airflow_m3s.sum()


def test_a_zone_that_loses_its_sensors_goes_to_the_failsafe_alone() -> None:
    core = LiveCore.build(SITE, ["lecture-hall", "cafeteria"])
    monday = _epoch(2027, 3, 1, 9, 0)
    seen = _readings(
        2,
        counter_in=5.0,
        counter_out=5.0,
        co2_ppm=450.0,
        t_zone_c=21.5,
        t_supply_c=18.0,
        t_out_c=0.0,
        t_out_24h_c=0.0,
    )
    lost = seen._replace(
        counter_in=np.array([np.nan, 5.0]),
        counter_out=np.array([np.nan, 5.0]),
        co2_ppm=np.array([np.nan, 450.0]),
    )
    outs = _run_live(core, [seen, seen, lost], monday)
    hall, cafe = 0, 1
    _, before, _ = outs[1]
    assert not np.any(before.reason & Reason.FAILSAFE)
    _, cmd, est = outs[2]
    assert np.isnan(est.occupancy[hall])
    assert cmd.reason[hall] & Reason.FAILSAFE
    assert cmd.airflow_m3s[hall] > before.airflow_m3s[hall]
    assert est.occupancy[cafe] == 0.0
    assert not cmd.reason[cafe] & Reason.FAILSAFE
    assert cmd.airflow_m3s[cafe] == before.airflow_m3s[cafe]


def test_a_gateways_zones_are_controlled_as_on_the_whole_site() -> None:
    monday = _epoch(2027, 3, 1, 9, 0)
    n = FULL.n
    building = _readings(
        n,
        counter_in=10.0,
        counter_out=9.0,
        co2_ppm=600.0,
        t_zone_c=21.5,
        t_supply_c=17.0,
        t_out_c=0.0,
        t_out_24h_c=0.0,
    )
    full_cmd = _run_live(FULL, [building] * 3, monday)[-1][1]
    sub = LiveCore.build(SITE, ("office-e1", "meeting-medium-1"))
    rows = [SITE.zone_index[z] for z in sub.zones]
    part = LiveReadings(*(np.asarray(a)[rows] for a in building))
    sub_cmd = _run_live(sub, [part] * 3, monday)[-1][1]
    # The whole site's AHU is inside its fan range: nothing scaled there.
    assert not np.any(full_cmd.reason[rows] & Reason.AHU_LIMIT)
    np.testing.assert_allclose(sub_cmd.airflow_m3s, full_cmd.airflow_m3s[rows])


# --- one core: the live driver and the simulator's loop agree ---------------------------------


def _simulator_reference(
    core: LiveCore, sequence: list[LiveReadings], day: date, first_step: int, dt_s: int
) -> list[tuple[Commands, Estimate]]:
    """The simulator's numpy loop (sim.runner._loop_numpy) on these readings: its clock, its
    schedule of the day, sensors.occupancy.estimate and controller.law.step."""
    site = core.site
    params = compile_params(site)
    z = params.zones
    clock = make_clock(day, 2, dt_s, site.tz)
    closed = site.site.closed_days([day.year, day.year + 1])
    table = week_table([r.occupied_hours for r in site.resolved])
    n = z.n
    est_params = EstimatorParams(
        volume_m3=z.volume_m3,
        co2_gen_m3s=z.co2_gen_m3s,
        infiltration_m3s=np.array(
            [
                zc.infiltration_ach * r.volume_m3 / 3600.0
                for zc, r in zip(site.zone, site.resolved, strict=True)
            ]
        ),
        design_occupancy=z.design_occupancy,
        has_counter=np.array([zc.has_people_counter for zc in site.zone]),
        has_co2=np.array([zc.has_co2_sensor for zc in site.zone]),
    )
    co2_out = np.full(n, site.site.co2_outdoor_ppm)
    est_state = initial_estimator_state(n)
    ctrl_state = initial_state(params)
    airflow_prev = np.zeros(n)
    out: list[tuple[Commands, Estimate]] = []
    for j, r in enumerate(sequence):
        k = first_step + j
        today = date.fromordinal(int(clock.local_day[k]))
        tomorrow = date.fromordinal(int(clock.local_day[k]) + 1)
        open_today, close_today = day_hours(
            table, np.full(n, today.weekday()), np.full(n, today in closed)
        )
        open_tomorrow, _ = day_hours(
            table, np.full(n, tomorrow.weekday()), np.full(n, tomorrow in closed)
        )
        scheduled, to_open = scheduled_now(
            open_today, close_today, open_tomorrow, np.full(n, clock.local_tod_s[k])
        )
        est_state, est = estimate(
            est_state,
            Observation(float(dt_s), r.counter_in, r.counter_out, r.co2_ppm, co2_out, airflow_prev),
            est_params,
        )
        ctrl_state, cmd = step(
            ctrl_state,
            Inputs(
                float(dt_s),
                scheduled,
                to_open,
                est.occupancy,
                r.co2_ppm,
                r.t_zone_c,
                r.t_supply_c,
                r.t_out_c,
                r.t_out_24h_c,
                co2_out,
            ),
            params,
        )
        airflow_prev = cmd.airflow_m3s
        out.append((cmd, est))
    return out


def _random_readings(rng: np.random.Generator, n: int, k: int) -> LiveReadings:
    """Plausible readings of step k, some missing."""

    def holes(x: FloatArray) -> FloatArray:
        return np.where(rng.random(n) < 0.15, np.nan, x)

    people_in = 100.0 + np.floor(k * rng.uniform(0.0, 1.5, n))
    return LiveReadings(
        counter_in=holes(people_in),
        counter_out=holes(100.0 + np.floor(k * rng.uniform(0.0, 0.5, n))),
        co2_ppm=holes(rng.uniform(420.0, 1400.0, n)),
        t_zone_c=holes(rng.uniform(17.0, 27.0, n)),
        t_supply_c=holes(rng.uniform(15.0, 20.0, n)),
        t_out_c=np.full(n, rng.uniform(-20.0, 25.0)),
        t_out_24h_c=np.full(n, rng.uniform(-15.0, 20.0)),
    )


@pytest.mark.parametrize(
    ("day", "zones"),
    [
        (date(2027, 3, 1), None),  # a Monday: the offices open at 07:00
        (date(2027, 12, 6), None),  # Independence Day: closed
        (date(2027, 6, 4), GATEWAY_ZONES),  # a Friday in summer time, a gateway's zones
    ],
)
def test_the_live_core_and_the_simulators_core_give_the_same_commands(
    day: date, zones: tuple[str, ...] | None
) -> None:
    core = FULL if zones is None else LiveCore.build(SITE, zones)
    dt_s = 60
    first_step = 6 * 60 + 40  # 06:40 local: the steps run over the 07:00 opening
    clock = make_clock(day, 2, dt_s, core.site.tz)
    rng = np.random.default_rng(day.toordinal())
    sequence = [_random_readings(rng, core.n, k) for k in range(40)]
    reference = _simulator_reference(core, sequence, day, first_step, dt_s)
    state = initial_live_state(core)
    for j, r in enumerate(sequence):
        epoch = float(clock.epoch_s[first_step + j])
        state, cmd, est = live_step(state, r, epoch, float(dt_s), core)
        ref_cmd, ref_est = reference[j]
        for name, value in cmd._asdict().items():
            np.testing.assert_array_equal(value, getattr(ref_cmd, name), err_msg=f"{j}: {name}")
        for name, value in est._asdict().items():
            np.testing.assert_array_equal(value, getattr(ref_est, name), err_msg=f"{j}: {name}")
    # The run saw what it was meant to: the opening on a working day, none on the holiday
    # (where the people counted are an override, not the schedule).
    on_schedule = bool(np.any(cmd.reason & Reason.SCHEDULE))
    assert on_schedule is (day != date(2027, 12, 6))
