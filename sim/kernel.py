"""The closed loop for a run of steps, zone by zone: what sim.fused compiles for speed.

The same loop as the numpy path of sim.runner.simulate, step for step: sensors read the plant,
readings are validated, occupancy is estimated, the control core decides, the plant advances and
the KPIs add up. Here every stage is called once per zone (or AHU) with an integer index; compiled
by sim.fused against the scalar backend, the whole run is one machine-code loop without temporary
arrays. Uncompiled (with the numpy stage functions) it runs too, slowly: that is how to debug it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from controller.law import (
    AhuAnswer,
    Demand,
    Inputs,
    ZoneState,
    _band,
    ahu_update,
    zone_demand,
    zone_settle,
)
from controller.params import AhuParams, Params, ZoneParams
from controller.schedule import scheduled_at
from sensors.arrays import BoolArray, FloatArray, IntArray
from sensors.occupancy import (
    EstimatorParams,
    EstimatorState,
    Observation,
    estimate_zone,
    filter_gains,
)
from sensors.validation import CheckParams, CheckState, check_reading
from sim.kpi import kpi_zone
from sim.plant import OP_AIR, AhuPlant, Drive, Flows, PlantState, ZonePlant, advance
from sim.sensor_models import SensorPlan, read_step


class Exogenous(NamedTuple):
    """One day's inputs that do not depend on control, per step j of the day (rows gathered)."""

    epoch_s: FloatArray  # (steps,) UTC seconds of the step starts
    tod_s: FloatArray  # (steps,) local time of day
    t_out_c: FloatArray  # (steps,)
    t_out_24h_c: FloatArray  # (steps,)
    co2_out_ppm: FloatArray  # (steps,) the true outdoor CO2 at the site
    solar_wm2: FloatArray  # (steps, 5) on each facade
    people: npt.NDArray[np.int16]  # (steps, n) true occupancy at the end of each step
    counter_in_prev: npt.NDArray[np.int32]  # (steps, n) IN registers read at the step's start
    counter_out_prev: npt.NDArray[np.int32]
    open_today_s: FloatArray  # (n,) the day's opening per row (NaN: closed)
    close_today_s: FloatArray
    open_tomorrow_s: FloatArray


class Fixed(NamedTuple):
    """What does not change during a run."""

    params: Params
    estimator: EstimatorParams
    limits: CheckParams  # (2n,): the CO2 rows, then the temperature rows
    zones: ZonePlant
    ahus: AhuPlant
    oracle: BoolArray  # (n,) rows fed the true occupancy
    co2_out_nominal_ppm: FloatArray  # (n,) what the controllers believe outdoor CO2 is
    equipment_standby: float
    record_rows: IntArray  # rows whose values are sampled


class Carry(NamedTuple):
    """The loop's state from one call to the next."""

    plant: PlantState
    checks: CheckState  # (2n,)
    estimator: EstimatorState
    control: ZoneState
    airflow_prev_m3s: FloatArray  # delivered during the last step
    t_supply_prev_c: FloatArray  # per row, of its AHU, during the last step
    people_prev: FloatArray  # true occupancy at the end of the last step (the oracle's input)
    co2_prev_i: int  # last step of the day read from each sensor plan (-1: none yet)
    thermo_prev_i: int


class Totals(NamedTuple):
    """Running KPI integrals (sim.kpi.KpiAccumulator's arrays), updated in place."""

    tdis_kh: FloatArray
    idis_ppmh: FloatArray
    occupied_h: FloatArray
    comfortable_h: FloatArray
    short_h: FloatArray
    zone_heat_j: FloatArray
    zone_cool_j: FloatArray
    fan_j: FloatArray
    coil_heat_j: FloatArray
    coil_cool_j: FloatArray
    present_s: FloatArray


class Samples(NamedTuple):
    """Recorded values, (samples, recorded rows), filled in place."""

    people: FloatArray
    estimate: FloatArray
    co2_ppm: FloatArray
    t_op_c: FloatArray
    band_low_c: FloatArray
    band_high_c: FloatArray
    airflow_m3s: FloatArray
    mode: FloatArray
    epoch_s: FloatArray  # (samples,)
    fan_j: FloatArray  # (samples, n_ahus) cumulative, for the energy series
    heat_j: FloatArray  # (samples, n) cumulative zone heat, then the AHUs' coils below
    cool_j: FloatArray
    coil_heat_j: FloatArray  # (samples, n_ahus)
    coil_cool_j: FloatArray


def run_steps(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    j0: int,
    j1: int,
    day_first: int,
    dt: float,
    count_from_j: int,
    record_every: int,
    record_at: int,
    x: Exogenous,
    f: Fixed,
    c: Carry,
    totals: Totals,
    co2_plan: SensorPlan,
    thermo_plan: SensorPlan,
    samples: Samples,
) -> tuple[Carry, int]:
    """Steps j0..j1-1 of one day (j counts from the day's first step, day_first the day's first
    step in the sensors' clock). KPIs count from step count_from_j of the day; every
    record_every-th counted step is sampled at index record_at onwards. Returns the new carry and
    the next sample index. The carry's state arrays are advanced in place: each zone reads its
    own old state before it writes its new one."""
    p = f.params
    n = p.zones.area_m2.shape[0]
    na = p.ahus.design_airflow_m3s.shape[0]
    plant, checks, est, ctrl = c.plant, c.checks, c.estimator, c.control
    co2_prev_i, thermo_prev_i = c.co2_prev_i, c.thermo_prev_i
    # Scratch arrays for the call, reused every step.
    w = Work(
        readings=np.empty(2 * n),
        clean=np.empty(2 * n),
        t_op=np.empty(n),
        occupancy=np.empty(n),
        estimated=np.empty(n),
        demand=Demand(
            np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n),
            np.empty(n), np.empty(n), np.empty(n), np.empty(n),
        ),
        total=np.empty(na),
        requests=np.empty(na),
        answer=AhuAnswer(np.empty(na, dtype=np.bool_), np.empty(na), np.empty(na), np.empty(na)),
        band_lo=np.empty(n),
        band_hi=np.empty(n),
        airflow_prev=c.airflow_prev_m3s.copy(),
        t_supply_prev=c.t_supply_prev_c.copy(),
        people_prev=c.people_prev.copy(),
    )  # fmt: skip
    airflow, t_heat, t_cool, people = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    drive = Drive(
        np.empty(n), np.empty(n), np.empty(n), people, np.empty(n), airflow, t_heat, t_cool,
        w.answer.supply_c, np.empty(na),
    )  # fmt: skip
    flows = Flows(
        np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n),
        np.empty(na), np.empty(na), np.empty(na), np.empty(na), np.empty(na), np.empty(na),
    )  # fmt: skip
    for j in range(j0, j1):
        # Sensors read the building as it is at the start of the step; readings are validated.
        i_day = j - day_first  # the sensor plans count steps from the day's first
        operative(plant, w.t_op)
        read_step(co2_plan, i_day, co2_prev_i, x.epoch_s[j], plant.co2_ppm, w.readings[:n])
        read_step(thermo_plan, i_day, thermo_prev_i, x.epoch_s[j], w.t_op, w.readings[n:])
        co2_prev_i = i_day
        thermo_prev_i = i_day
        validate_all(checks, w.readings, f.limits, dt, w.clean)
        # Each zone: its occupancy is estimated, then it asks for its mode, setpoints and air.
        estimate_all(j, x, f, est, dt, w)
        demand_all(j, x, f, ctrl, dt, w)
        # The AHUs answer their zones; the zones settle within their limits.
        update_ahus(p.ahus, ctrl, x.t_out_c[j], dt, p.zones.ahu, w)
        settle_all(p.zones, ctrl, dt, w, airflow, t_heat, t_cool)
        # The plant advances under the commands.
        drive_of_step(j, x, f, drive)
        advance(plant, drive, f.zones, f.ahus, dt, flows)
        if j >= count_from_j:
            operative(plant, w.t_op)
            add_kpis(p.zones, x.t_out_24h_c[j], plant, people, airflow, flows, dt, totals, w)
            if record_every > 0 and (j - count_from_j) % record_every == 0:
                record(
                    samples,
                    record_at,
                    x.epoch_s[j] + dt,
                    f.record_rows,
                    people,
                    plant,
                    ctrl,
                    totals,
                    airflow,
                    w,
                )
                record_at += 1
        remember(p.zones.ahu, airflow, people, flows, w)
    carry = Carry(
        plant, checks, est, ctrl, w.airflow_prev, w.t_supply_prev, w.people_prev, co2_prev_i,
        thermo_prev_i,
    )  # fmt: skip
    return carry, record_at


class Work(NamedTuple):
    """Scratch arrays of run_steps, shared by its stage loops."""

    readings: FloatArray  # (2n,) CO2 then temperature, as read
    clean: FloatArray  # (2n,) the same, validated (NaN unless good)
    t_op: FloatArray  # (n,) operative temperature
    occupancy: FloatArray  # (n,) what the controller uses (the truth for the oracle)
    estimated: FloatArray  # (n,) the estimator's output
    demand: Demand  # (n,) each
    total: FloatArray  # (n_ahus,) requested airflow
    requests: FloatArray  # (n_ahus,) cooling requests
    answer: AhuAnswer  # (n_ahus,) each
    band_lo: FloatArray
    band_hi: FloatArray
    airflow_prev: FloatArray  # carried to the next step
    t_supply_prev: FloatArray
    people_prev: FloatArray


# --- the stage loops: small functions, so that numba prunes its reference counting ------------
#
# Rows are counted with unsigned integers (range over np.uint64): numba then indexes arrays
# without wrapping negative indices, which costs three instructions per array read or written
# (a zone touches over a hundred arrays per step). Arithmetic on such an index stays unsigned:
# mixing it with a signed int would make a float in numba.


def operative(plant: PlantState, out: FloatArray) -> None:
    for r in range(np.uint64(out.shape[0])):
        out[r] = OP_AIR * plant.theta_air_c[r] + (1.0 - OP_AIR) * plant.theta_s_c[r]


def validate_all(
    checks: CheckState, readings: FloatArray, limits: CheckParams, dt: float, clean: FloatArray
) -> None:
    for r in range(np.uint64(readings.shape[0])):
        v = check_reading(check_row(checks, r), readings[r], 0.0, limits_row(limits, r), dt)
        checks.last_value[r] = v[0]
        checks.unchanged_s[r] = v[1]
        checks.last_good[r] = v[2]
        checks.good_age_s[r] = v[3]
        checks.rejected[r] = v[4]
        clean[r] = v[5]


def estimate_all(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    j: int, x: Exogenous, f: Fixed, est: EstimatorState, dt: float, w: Work
) -> None:
    """Each zone's occupancy estimate (the truth for the oracle's rows) into w.occupancy.

    Its own loop, not fused with demand_all's: a zone's estimate and demand are one long chain
    of dependent operations, and the CPU overlaps the next zones' work with it only as far as
    its reorder window reaches; two shorter loop bodies let it run more zones at once (measured
    about 8 % faster for the whole loop)."""
    gains = filter_gains(dt)
    for r in range(np.uint64(w.occupancy.shape[0])):
        obs = Observation(  # a row: scalars where the type says arrays
            dt,
            float(x.counter_in_prev[j, r]),  # type: ignore[arg-type]
            float(x.counter_out_prev[j, r]),  # type: ignore[arg-type]
            w.clean[r],
            f.co2_out_nominal_ppm[r],
            w.airflow_prev[r],
        )
        e = estimate_zone(estimator_row(est, r), obs, estimator_params_row(f.estimator, r), gains)
        est.offset[r] = e[0]
        est.last_in[r] = e[1]
        est.last_out[r] = e[2]
        est.counted[r] = e[3]
        est.since_entry_s[r] = e[4]
        est.exits_since_entry[r] = e[5]
        est.since_exit_s[r] = e[6]
        est.steady_s[r] = e[7]
        est.scale[r] = e[8]
        est.co2_f[r] = e[9]
        est.co2_base[r] = e[10]
        est.outdoor_ref[r] = e[11]
        est.dco2_ppm_s[r] = e[12]
        est.n_co2[r] = e[13]
        est.co2_age_s[r] = e[14]
        est.co2_run_s[r] = e[15]
        est.empty_s[r] = e[16]
        est.disagree_s[r] = e[17]
        w.estimated[r] = e[18]
        w.occupancy[r] = w.people_prev[r] if f.oracle[r] else e[18]


def demand_all(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    j: int, x: Exogenous, f: Fixed, ctrl: ZoneState, dt: float, w: Work
) -> None:
    """Each zone's mode, setpoints and requested airflow into w.demand."""
    z = f.params.zones
    d = w.demand
    n = np.uint64(z.area_m2.shape[0])
    t_out, t24, tod = x.t_out_c[j], x.t_out_24h_c[j], x.tod_s[j]
    for r in range(n):
        scheduled, to_open = scheduled_at(
            x.open_today_s[r], x.close_today_s[r], x.open_tomorrow_s[r], tod
        )
        u = Inputs(
            dt, scheduled, to_open, w.occupancy[r], w.clean[r], w.clean[n + r],
            w.t_supply_prev[r], t_out, t24, f.co2_out_nominal_ppm[r],
        )  # fmt: skip
        dd = zone_demand(zone_row(z, r), u, state_row(ctrl, r))
        d.mode[r] = dd[0]
        d.t_heat_c[r] = dd[1]
        d.t_cool_c[r] = dd[2]
        d.airflow_m3s[r] = dd[3]
        d.requests[r] = dd[4]
        d.reason[r] = dd[5]
        d.unpopulated_s[r] = dd[6]
        d.occ_heat_c[r] = dd[7]
        d.occ_cool_c[r] = dd[8]
        d.t_c[r] = dd[9]


def update_ahus(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    a: AhuParams, ctrl: ZoneState, t_out: float, dt: float, zone_ahu: IntArray, w: Work
) -> None:
    """Each AHU from its zones' sums, taken in row order as numpy.bincount takes them."""
    d, h = w.demand, w.answer
    w.total[:] = 0.0
    w.requests[:] = 0.0
    for r in range(np.uint64(zone_ahu.shape[0])):
        w.total[zone_ahu[r]] += d.airflow_m3s[r]
        w.requests[zone_ahu[r]] += d.requests[r]
    for k in range(np.uint64(w.total.shape[0])):
        hh = ahu_update(ahu_row(a, k), w.total[k], w.requests[k], ctrl.ahu_t_max_c[k], t_out, dt)
        h.on[k] = hh[0]
        h.scale[k] = hh[1]
        h.t_max_c[k] = hh[2]
        h.supply_c[k] = hh[3]
        ctrl.ahu_t_max_c[k] = hh[2]


def settle_all(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    z: ZoneParams, ctrl: ZoneState, dt: float, w: Work, airflow: FloatArray,
    t_heat: FloatArray, t_cool: FloatArray,
) -> None:  # fmt: skip
    d = w.demand
    for r in range(np.uint64(airflow.shape[0])):
        ss = zone_settle(
            zone_row(z, r), state_row(ctrl, r), demand_row(d, r), w.answer.scale[z.ahu[r]], dt
        )
        airflow[r] = ss[0]
        t_heat[r] = ss[1]
        t_cool[r] = ss[2]
        ctrl.mode[r] = d.mode[r]
        ctrl.unpopulated_s[r] = d.unpopulated_s[r]
        ctrl.heat_rate_k_s[r] = ss[4]
        ctrl.warm_t0_c[r] = ss[5]
        ctrl.warm_s[r] = ss[6]
        ctrl.cool_rate_k_s[r] = ss[7]
        ctrl.cool_t0_c[r] = ss[8]
        ctrl.cool_s[r] = ss[9]


def drive_of_step(j: int, x: Exogenous, f: Fixed, drive: Drive) -> None:
    t_out, co2_out = x.t_out_c[j], x.co2_out_ppm[j]
    people_in, solar_in, facade = x.people[j], x.solar_wm2[j], f.zones.facade
    people, equipment, solar = drive.people, drive.equipment_on, drive.solar_wm2
    t_out_rows, co2_rows, standby = drive.t_out_c, drive.co2_out_ppm, f.equipment_standby
    for r in range(np.uint64(people.shape[0])):
        n_people = float(people_in[r])
        people[r] = n_people
        equipment[r] = 1.0 if n_people > 0.0 else standby
        solar[r] = solar_in[facade[r]]
        t_out_rows[r] = t_out
        co2_rows[r] = co2_out
    drive.ahu_t_out_c[:] = t_out


def add_kpis(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    z: ZoneParams, t24: float, plant: PlantState, people: FloatArray, airflow: FloatArray,
    flows: Flows, dt: float, totals: Totals, w: Work,
) -> None:  # fmt: skip
    for r in range(np.uint64(people.shape[0])):
        w.band_lo[r], w.band_hi[r] = _band(zone_row(z, r), t24)
        required = (z.ra_m3s[r] * z.area_m2[r] + z.rp_m3s[r] * people[r]) / z.ez[r]
        kk = kpi_zone(
            dt, w.t_op[r], w.band_lo[r], w.band_hi[r], plant.co2_ppm[r], z.co2_limit_ppm[r],
            people[r], airflow[r], required, totals.present_s[r],
        )  # fmt: skip
        totals.tdis_kh[r] += kk[0]
        totals.idis_ppmh[r] += kk[1]
        totals.occupied_h[r] += kk[2]
        totals.comfortable_h[r] += kk[3]
        totals.short_h[r] += kk[4]
        totals.present_s[r] = kk[5]
        totals.zone_heat_j[r] += flows.zone_heating_w[r] * dt
        totals.zone_cool_j[r] += flows.zone_cooling_w[r] * dt
    for k in range(np.uint64(flows.fan_w.shape[0])):
        totals.fan_j[k] += flows.fan_w[k] * dt
        totals.coil_heat_j[k] += flows.coil_heating_w[k] * dt
        totals.coil_cool_j[k] += flows.coil_cooling_w[k] * dt


def record(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    samples: Samples, s: int, epoch_s: float, rows: IntArray, people: FloatArray,
    plant: PlantState, ctrl: ZoneState, totals: Totals, airflow: FloatArray, w: Work,
) -> None:  # fmt: skip
    samples.epoch_s[s] = epoch_s
    for q in range(rows.shape[0]):
        r = rows[q]
        samples.people[s, q] = people[r]
        samples.estimate[s, q] = w.estimated[r]
        samples.co2_ppm[s, q] = plant.co2_ppm[r]
        samples.t_op_c[s, q] = w.t_op[r]
        samples.band_low_c[s, q] = w.band_lo[r]
        samples.band_high_c[s, q] = w.band_hi[r]
        samples.airflow_m3s[s, q] = airflow[r]
        samples.mode[s, q] = ctrl.mode[r]
    samples.fan_j[s] = totals.fan_j
    samples.coil_heat_j[s] = totals.coil_heat_j
    samples.coil_cool_j[s] = totals.coil_cool_j
    samples.heat_j[s] = totals.zone_heat_j
    samples.cool_j[s] = totals.zone_cool_j


def remember(
    zone_ahu: IntArray, airflow: FloatArray, people: FloatArray, flows: Flows, w: Work
) -> None:
    for r in range(np.uint64(airflow.shape[0])):
        w.airflow_prev[r] = airflow[r]
        w.t_supply_prev[r] = flows.ahu_supply_c[zone_ahu[r]]
        w.people_prev[r] = people[r]


# One zone's (or AHU's) row of a NamedTuple of arrays: the same type with scalar fields. These
# plain versions run when the kernel runs uncompiled; sim.fused compiles one per type.
def _row(t: Any, r: int, scalar: tuple[str, ...] = (), other: tuple[str, ...] = ()) -> Any:  # noqa: ANN401
    """Fields in `scalar` are kept as they are; fields in `other` (not per row) become NaN."""
    return type(t)(
        *(
            getattr(t, name) if name in scalar else np.nan if name in other else getattr(t, name)[r]
            for name in t._fields
        )
    )


ROWS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    # getter name: (type, fields kept as scalars, fields that are not per row)
    "zone_row": (ZoneParams, (), ()),
    "ahu_row": (AhuParams, (), ()),
    "state_row": (ZoneState, (), ("ahu_t_max_c",)),
    "demand_row": (Demand, (), ()),
    "estimator_row": (EstimatorState, (), ()),
    "estimator_params_row": (EstimatorParams, (), ()),
    "check_row": (CheckState, (), ()),
    "limits_row": (CheckParams, (), ()),
}


def zone_row(t: ZoneParams, r: int) -> ZoneParams:
    return _row(t, r)  # type: ignore[no-any-return]


def ahu_row(t: AhuParams, r: int) -> AhuParams:
    return _row(t, r)  # type: ignore[no-any-return]


def state_row(t: ZoneState, r: int) -> ZoneState:
    return _row(t, r, other=("ahu_t_max_c",))  # type: ignore[no-any-return]


def demand_row(t: Demand, r: int) -> Demand:
    return _row(t, r)  # type: ignore[no-any-return]


def estimator_row(t: EstimatorState, r: int) -> EstimatorState:
    return _row(t, r)  # type: ignore[no-any-return]


def estimator_params_row(t: EstimatorParams, r: int) -> EstimatorParams:
    return _row(t, r)  # type: ignore[no-any-return]


def check_row(t: CheckState, r: int) -> CheckState:
    return _row(t, r)  # type: ignore[no-any-return]


def limits_row(t: CheckParams, r: int) -> CheckParams:
    return _row(t, r)  # type: ignore[no-any-return]


STAGE_LOOPS = (
    "operative", "validate_all", "estimate_all", "demand_all", "update_ahus", "settle_all",
    "drive_of_step", "add_kpis", "record", "remember",
)  # fmt: skip
