"""The closed loop written the straightforward way: plain Python, one zone at a time.

`sim.runner.simulate` advances every zone of every lane with one numpy call per equation and step.
This module runs the same model as a competent engineer would write it without vectorizing: per
step, a loop over zones with floats and `math`, small per-zone state objects, and the AHU coupling
done in two passes (sum over the zones of each AHU, then use the sums). It serves two purposes:

- bench/sim_speed.py reports the vectorized loop's speed as a ratio against this one;
- tests/sim/test_reference_loop.py checks the vectorized code against it (a differential test).

Exogenous inputs (weather, people, counter registers, sensor errors, parameters, the plant) are
prepared with the very helpers `simulate` uses; the sensor banks are read once per step with the
whole row array (their error generation is not what is compared). Everything from validation to
the KPIs is written here again over scalars, with the same equations, constants, order of
operations and NaN handling as sensors.validation, sensors.occupancy, controller.law, sim.plant
and sim.kpi. Left out because nothing downstream depends on them: the `Reason` flags, the
estimator's confidence, the AHU airflow command, recorded series.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

import numpy as np

from controller.law import (
    _MAX_RATE_K_S,
    _MIN_RATE_K_S,
    CO2_BAND_PPM,
    COMFORT_MARGIN_K,
    COOLING_BAND_K,
    FREE_COOLING_MIN_DT_K,
    FREEZE_OFF_C,
    FREEZE_ON_C,
    MIN_DEADBAND_K,
    OAT_RESET_HIGH_C,
    OAT_RESET_LOW_C,
    OPT_START_DAYS,
    OPT_START_INITIAL_K_PER_H,
    OPT_START_MAX_S,
    OPT_START_U_HIGH_K,
    PLAUSIBLE_C,
    POPULATED_PERSONS,
    PURGE_ABOVE_OUTDOOR_PPM,
    PURGE_BAND_PPM,
    STANDBY_AFTER_S,
    TR_IGNORE_REQUESTS,
    TR_PERIOD_S,
    TR_RESPOND_K,
    TR_RESPOND_MAX_K,
    TR_TRIM_K,
    Mode,
)
from controller.params import Strategy, compile_params
from controller.schedule import DAY_S, week_table
from controller.standards import (
    ADAPTIVE_BASE_C,
    ADAPTIVE_SLOPE,
    ADAPTIVE_T_OUT_RANGE_C,
    CLASS_DEFAULTS,
)
from sensors.occupancy import (
    BASELINE_MAX_OFFSET_PPM,
    BASELINE_RISE_PPM_PER_DAY,
    CO2_DETECTABLE_PPM,
    CO2_FILTER_S,
    CO2_FLOOR_MARGIN_FRACTION,
    CO2_FLOOR_MARGIN_PERSONS,
    CO2_VALID_FOR_S,
    CO2_WARMUP_S,
    DISTRUST_AFTER_S,
    DISTRUST_MIN_FRACTION,
    DISTRUST_MIN_PERSONS,
    EMPTY_PERSONS,
    FIELD_RULE_MIN_EXITS,
    FIELD_RULE_WINDOW_S,
    GHOST_CLEAR_AFTER_S,
    GHOST_MAX_FRACTION,
    GHOST_MAX_PERSONS,
    MAX_PLAUSIBLE_AIRFLOW_M3S,
    MAX_PLAUSIBLE_PPM,
    MAX_PLAUSIBLE_REGISTER,
    OUTDOOR_REFERENCE_TAU_S,
    PLAUSIBLE_FACTOR,
    PLAUSIBLE_MARGIN,
    RESET_KEEPS_COUNT_IF_ENTRY_WITHIN_S,
    SCALE_LEARN_MIN_PERSONS,
    SCALE_LEARN_STEADY_S,
    SCALE_RANGE,
    SCALE_TAU_S,
)
from sensors.validation import SPIKE_CONFIRM_READINGS
from sim.building import build_plant, zone_key
from sim.clock import make_clock
from sim.kpi import (
    COMFORT_DWELL_S,
    SHORTFALL_TOLERANCE,
    UNOCCUPIED_HIGH_C,
    UNOCCUPIED_LOW_C,
    KpiAccumulator,
    Kpis,
    lane_kpis,
)
from sim.plant import (
    OP_AIR,
    PEOPLE_CONVECTIVE,
    RHO_CP_J_M3K,
    SUPPLY_FAN_SHARE,
)
from sim.runner import (
    EQUIPMENT_STANDBY_FRACTION,
    INITIAL_TEMPERATURE_C,
    OUTDOOR_CO2_DAILY_AMPLITUDE_PPM,
    PERFECT_CO2,
    PERFECT_THERMOMETER,
    Lane,
    ProgressFn,
    Scenario,
    _exogenous,
)
from sim.sensor_models import (
    Co2SensorBank,
    Co2SensorErrors,
    ThermometerBank,
    ThermometerErrors,
)
from sim.weather import sample, synthetic_helsinki

NAN = math.nan
INF = math.inf

_FREEZE = int(Mode.FREEZE_PROTECTION)
_STANDBY = int(Mode.OCCUPIED_STANDBY)
_OCCUPIED = int(Mode.OCCUPIED)
_WARM_UP = int(Mode.WARM_UP)
_COOL_DOWN = int(Mode.COOL_DOWN)
_SETUP = int(Mode.SETUP)
_SETBACK = int(Mode.SETBACK)
_UNOCCUPIED = int(Mode.UNOCCUPIED)


# --- NaN-aware helpers: numpy's semantics for the few places where NaN can reach them ------------


def _fmax(a: float, b: float) -> float:
    """numpy.fmax: a NaN argument yields the other."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def _fmin(a: float, b: float) -> float:
    """numpy.fmin: a NaN argument yields the other."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


def _clip(x: float, lo: float, hi: float) -> float:
    """numpy.clip for finite bounds: NaN stays NaN."""
    if math.isnan(x):
        return x
    return min(max(x, lo), hi)


def _clip01(x: float) -> float:
    return _clip(x, 0.0, 1.0)


# --- constants per zone and AHU -----------------------------------------------------------------

T = TypeVar("T")


def _pick(cls: type[T], arrays: Any, i: int, **extra: Any) -> T:  # noqa: ANN401
    """An instance of the dataclass `cls` from row i of the same-named array fields of `arrays`."""
    values = {
        f.name: getattr(arrays, f.name)[i].item()
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in extra
    }
    return cls(**values, **extra)


@dataclass(frozen=True, slots=True)
class ZoneControl:
    """What the controller knows of a zone (controller.params.ZoneParams, one row)."""

    area_m2: float
    volume_m3: float
    rp_m3s: float
    ra_m3s: float
    ez: float
    design_occupancy: float
    co2_limit_ppm: float
    co2_gen_m3s: float  # nominal
    airflow_min_m3s: float
    airflow_max_m3s: float
    design_airflow_m3s: float
    heat_lo_c: float
    heat_hi_c: float
    cool_lo_c: float
    cool_hi_c: float
    unocc_heat_c: float
    unocc_cool_c: float
    standby_relax_k: float
    use_occupancy: bool
    co2_loop: bool
    demand_control: bool
    setback: bool
    optimal_start: bool
    # the comfort class's operative temperature band (controller.standards.CLASS_DEFAULTS)
    band_adaptive: bool  # Finnish classes: mid(T_out,24h) ± half width; others fixed
    band_low_c: float  # fixed band
    band_high_c: float
    band_half_width_k: float  # adaptive band
    # the estimator's view (sensors.occupancy.EstimatorParams)
    infiltration_m3s: float  # nominal, from the config
    has_counter: bool
    has_co2: bool


@dataclass(frozen=True, slots=True)
class ZonePhysics:
    """The simulated zone as built (sim.plant.ZonePlant, one row)."""

    area_m2: float
    volume_m3: float
    c_m_j_k: float
    h_tr_w: float
    h_tr_em: float
    h_tr_ms: float
    h_tr_is: float
    a_m_over_a_t: float
    h_win_over_h_ms_a_t: float
    solar_aperture_m2: float
    facade: int
    infiltration_m3s: float  # actual
    co2_gen_m3s: float  # actual
    sensible_w_per_person: float
    equipment_w_m2: float
    heat_cap_w: float
    cool_cap_w: float


@dataclass(frozen=True, slots=True)
class AhuControl:
    """controller.params.AhuParams, one row."""

    design_airflow_m3s: float
    min_fraction: float
    supply_t_min_c: float
    supply_t_max_c: float
    supply_t_design_c: float
    supply_reset: bool


@dataclass(frozen=True, slots=True)
class AhuPhysics:
    """sim.plant.AhuPlant, one row (the energy conversion is applied by lane_kpis)."""

    design_airflow_m3s: float
    fan_power_design_w: float
    fan_exponent: float
    hr_effectiveness: float
    has_cooling: bool


# --- state per zone ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckLimits:
    lo: float
    hi: float
    stuck_after_s: float
    max_rate_per_s: float
    stale_after_s: float


# The limits sim.runner.simulate gives sensors.validation.check (written there inline).
CO2_LIMITS = CheckLimits(250.0, 5000.0, 1800.0, 20.0, 600.0)
T_LIMITS = CheckLimits(-10.0, 50.0, 12 * 3600.0, 0.05, 600.0)


@dataclass(slots=True)
class CheckState:
    last_value: float = NAN
    unchanged_s: float = 0.0
    last_good: float = NAN
    good_age_s: float = 0.0
    rejected: int = 0


@dataclass(slots=True)
class EstimatorState:
    offset: float = 0.0
    last_in: float = NAN
    last_out: float = NAN
    count: float = 0.0
    since_entry_s: float = INF
    exits_since_entry: float = 0.0
    since_exit_s: float = INF
    steady_s: float = 0.0
    scale: float = 1.0
    co2_f: float = NAN
    co2_base: float = NAN
    outdoor_ref: float = NAN
    dco2_ppm_s: float = 0.0
    n_co2: float = 0.0
    co2_age_s: float = INF
    co2_run_s: float = 0.0
    empty_s: float = 0.0
    disagree_s: float = 0.0


@dataclass(slots=True)
class Episode:
    """An optimal-start recovery episode and the rate it learns."""

    rate_k_s: float = OPT_START_INITIAL_K_PER_H / 3600.0
    t0_c: float = NAN  # NaN when none runs
    elapsed_s: float = 0.0


@dataclass(slots=True)
class LawState:
    mode: int = _UNOCCUPIED
    unpopulated_s: float = 0.0
    warm: Episode = dataclasses.field(default_factory=Episode)
    cool: Episode = dataclasses.field(default_factory=Episode)


@dataclass(slots=True)
class ThermalState:
    theta_m_c: float
    theta_air_c: float
    theta_s_c: float
    co2_ppm: float

    def operative_c(self) -> float:
        return OP_AIR * self.theta_air_c + (1.0 - OP_AIR) * self.theta_s_c


@dataclass(slots=True)
class ZoneTotals:
    """The KPI integrals of one zone (sim.kpi.KpiAccumulator, one row)."""

    tdis_kh: float = 0.0
    idis_ppmh: float = 0.0
    occupied_h: float = 0.0
    comfortable_h: float = 0.0
    short_h: float = 0.0
    zone_heat_j: float = 0.0
    zone_cool_j: float = 0.0
    present_s: float = 0.0


@dataclass(slots=True)
class AhuTotals:
    fan_j: float = 0.0
    coil_heat_j: float = 0.0
    coil_cool_j: float = 0.0


@dataclass(slots=True)
class ZoneCommand:
    t_heat_c: float
    t_cool_c: float
    airflow_m3s: float
    cooling_requests: float  # Trim & Respond requests for colder supply air


@dataclass(slots=True)
class Zone:
    """One row: a zone of one lane, with everything it carries from step to step."""

    lane: int
    zone: int  # index in the site
    seed_index: int
    ahu: int  # index among the AHUs of all lanes
    oracle: bool
    ctl: ZoneControl
    phys: ZonePhysics
    co2_check: CheckState
    t_check: CheckState
    est: EstimatorState
    law: LawState
    thermal: ThermalState
    totals: ZoneTotals
    # what the loop hands from one step to the next
    airflow_prev: float = 0.0
    t_supply_prev: float = NAN
    people_prev: float = 0.0
    counter_in_prev: float = 0.0
    counter_out_prev: float = 0.0


@dataclass(slots=True)
class Ahu:
    ctl: AhuControl
    phys: AhuPhysics
    t_max_c: float  # Trim & Respond state
    totals: AhuTotals


# --- validation (sensors.validation.check) -------------------------------------------------------


def validate_reading(
    s: CheckState, value: float, age_s: float, lim: CheckLimits, dt: float
) -> float:
    """Validate one reading, update the point's state; the clean value, NaN unless good."""
    present = math.isfinite(value)
    stale = present and age_s > lim.stale_after_s
    out_of_range = present and not stale and (value < lim.lo or value > lim.hi)
    same = present and value == s.last_value
    # A gap does not end a stuck episode: a frozen sensor on a flaky link is still frozen.
    unchanged_s = s.unchanged_s + dt if same or not present else 0.0
    stuck = same and unchanged_s >= lim.stuck_after_s
    candidate = present and not stale and not out_of_range and not stuck
    have_good = math.isfinite(s.last_good)
    limit = lim.max_rate_per_s * (s.good_age_s + dt)
    jump = candidate and have_good and abs(value - s.last_good) > limit
    # Consecutive rejected readings that agree with each other are a real change.
    agree = abs(value - s.last_value) <= lim.max_rate_per_s * dt  # False with a NaN
    rejected = (s.rejected + 1 if agree else 1) if jump else 0
    spike = jump and rejected < SPIKE_CONFIRM_READINGS
    good = candidate and not spike

    if present:
        s.last_value = value
    s.unchanged_s = unchanged_s
    if good:
        s.last_good = value
        s.good_age_s = 0.0
        s.rejected = 0
        return value
    s.good_age_s += dt
    s.rejected = rejected
    return NAN


# --- occupancy estimation (sensors.occupancy.estimate) -------------------------------------------


def _within(x: float, lo: float, hi: float) -> float:
    """x if lo <= x <= hi, else NaN (non-finite values included)."""
    return x if lo <= x <= hi else NAN


def estimate_zone(
    s: EstimatorState,
    c: ZoneControl,
    *,
    dt: float,
    counter_in: float,
    counter_out: float,
    co2_ppm: float,
    co2_out_ppm: float,
    airflow_m3s: float,
) -> float:
    """One estimation step of one zone: updates s, returns the occupancy (NaN: no source)."""
    # Inputs beyond these are faults, treated as missing.
    counter_in = _within(counter_in, 0.0, MAX_PLAUSIBLE_REGISTER)
    counter_out = _within(counter_out, 0.0, MAX_PLAUSIBLE_REGISTER)
    co2_ppm = _within(co2_ppm, 0.0, MAX_PLAUSIBLE_PPM)
    co2_out_ppm = _within(co2_out_ppm, 0.0, MAX_PLAUSIBLE_PPM)
    airflow = airflow_m3s if 0.0 < airflow_m3s <= MAX_PLAUSIBLE_AIRFLOW_M3S else 0.0

    # --- counter: IN − OUT + offset, never negative, continuous across device resets ---
    c_ok = c.has_counter and math.isfinite(counter_in) and math.isfinite(counter_out)
    raw = counter_in - counter_out if c_ok else 0.0
    seen = c_ok and math.isfinite(s.last_in)
    reset = seen and (counter_in < s.last_in or counter_out < s.last_out)
    entered = exited = 0.0
    if reset:  # registers restart from 0: what they hold happened since the reset
        entered, exited = counter_in, counter_out
    elif seen:
        entered, exited = counter_in - s.last_in, counter_out - s.last_out
    since_entry_s = 0.0 if entered > 0.0 else s.since_entry_s + dt
    since_exit_s = 0.0 if exited > 0.0 else s.since_exit_s + dt
    exits_since_entry = (0.0 if entered > 0.0 else s.exits_since_entry) + exited
    if reset:  # the nightly zeroing, unless people came in just before it
        recent_entry = s.since_entry_s + dt < RESET_KEEPS_COUNT_IF_ENTRY_WITHIN_S
        offset = s.count if recent_entry else 0.0
    elif c_ok and not seen:  # first reading: start from the current estimate
        offset = s.count - raw
    else:
        offset = s.offset
    count = raw + offset
    if count < 0.0:  # missed INs cannot make people < 0
        offset = offset - count
    count = max(count, 0.0) if c_ok else s.count
    steady_s = 0.0 if count != s.count else s.steady_s + dt

    # --- CO2 mass balance on low-passed CO2, against a self-calibrated outdoor reference ---
    q_ok = c.has_co2 and math.isfinite(co2_ppm) and math.isfinite(co2_out_ppm)
    alpha = -math.expm1(-dt / CO2_FILTER_S)
    q = airflow + c.infiltration_m3s
    if q_ok:
        had_f = math.isfinite(s.co2_f)
        co2_f = s.co2_f + alpha * (co2_ppm - s.co2_f) if had_f else co2_ppm
        d_raw = (co2_f - s.co2_f) / dt if had_f else 0.0
        dco2 = s.dco2_ppm_s + alpha * (d_raw - s.dco2_ppm_s)
        if math.isfinite(s.outdoor_ref):
            beta = -math.expm1(-dt / OUTDOOR_REFERENCE_TAU_S)
            out_ref = s.outdoor_ref + beta * (co2_out_ppm - s.outdoor_ref)
        else:
            out_ref = co2_out_ppm
        rise = BASELINE_RISE_PPM_PER_DAY * dt / 86400.0
        base = _fmin(s.co2_base + rise if math.isfinite(s.co2_base) else out_ref, co2_f)
        base = min(max(base, out_ref - BASELINE_MAX_OFFSET_PPM), out_ref + BASELINE_MAX_OFFSET_PPM)
        excess = co2_f - base
        n_raw = (c.volume_m3 * dco2 + q * excess) / (1e6 * c.co2_gen_m3s)
        n_co2 = s.n_co2 + alpha * (n_raw - s.n_co2)
        co2_age_s = 0.0
        co2_run_s = s.co2_run_s + dt
    else:
        co2_f, dco2, out_ref, base, n_co2 = (
            s.co2_f, s.dco2_ppm_s, s.outdoor_ref, s.co2_base, s.n_co2
        )  # fmt: skip
        co2_age_s = s.co2_age_s + dt
        co2_run_s = 0.0 if co2_age_s > CO2_VALID_FOR_S else s.co2_run_s
    have_co2 = co2_age_s <= CO2_VALID_FOR_S and co2_run_s >= CO2_WARMUP_S
    n_co2_pos = max(n_co2, 0.0)

    # --- fusion ---
    have_c = c_ok and count <= PLAUSIBLE_FACTOR * c.design_occupancy + PLAUSIBLE_MARGIN
    both = have_c and have_co2
    empty_s = s.empty_s + dt if have_co2 and n_co2 < EMPTY_PERSONS else 0.0
    ghost_max = max(GHOST_MAX_PERSONS, GHOST_MAX_FRACTION * c.design_occupancy)
    small = have_c and 0.0 < count <= ghost_max
    visible = 1e6 * c.co2_gen_m3s * count / q >= CO2_DETECTABLE_PPM
    if have_co2 and visible:  # CO2 can see these people: it decides
        quiet = since_entry_s >= GHOST_CLEAR_AFTER_S
        ghosts = small and quiet and empty_s >= GHOST_CLEAR_AFTER_S
    else:  # the field rule: nobody came in, some went out lately, a few remain
        ghosts = (
            small
            and since_entry_s >= FIELD_RULE_WINDOW_S
            and exits_since_entry >= FIELD_RULE_MIN_EXITS
            and since_exit_s <= FIELD_RULE_WINDOW_S
            and count <= GHOST_MAX_PERSONS
        )
    if ghosts:
        offset = offset - count
        count = 0.0
    scale = s.scale
    learn = (
        both
        and steady_s >= SCALE_LEARN_STEADY_S
        and count >= SCALE_LEARN_MIN_PERSONS
        and n_co2 >= SCALE_LEARN_MIN_PERSONS
    )
    if learn:
        ratio = _clip(n_co2_pos / max(count, 1.0), *SCALE_RANGE)
        scale = s.scale + -math.expm1(-dt / SCALE_TAU_S) * (ratio - s.scale)
    sees_people = n_co2 >= max(DISTRUST_MIN_PERSONS, DISTRUST_MIN_FRACTION * c.design_occupancy)
    disagree = both and count < EMPTY_PERSONS and sees_people
    disagree_s = s.disagree_s + dt if disagree else 0.0
    distrust = disagree_s >= DISTRUST_AFTER_S
    if have_c and not distrust:
        margin = CO2_FLOOR_MARGIN_PERSONS + CO2_FLOOR_MARGIN_FRACTION * c.design_occupancy
        co2_floor = n_co2 - margin if have_co2 else 0.0
        occupancy = max(count * scale, co2_floor)
    elif have_co2:
        occupancy = n_co2_pos
    else:
        occupancy = NAN

    s.offset = offset
    if c_ok:
        s.last_in, s.last_out = counter_in, counter_out
    s.count = count
    s.since_entry_s = since_entry_s
    s.exits_since_entry = exits_since_entry
    s.since_exit_s = since_exit_s
    s.steady_s = steady_s
    s.scale = scale
    s.co2_f = co2_f
    s.co2_base = base
    s.outdoor_ref = out_ref
    s.dco2_ppm_s = dco2
    s.n_co2 = n_co2
    s.co2_age_s = co2_age_s
    s.co2_run_s = co2_run_s
    s.empty_s = empty_s
    s.disagree_s = disagree_s
    return occupancy


# --- schedule and comfort band (controller.schedule, controller.law.comfort_band) ----------------


def schedule_zone(
    open_today: float, close_today: float, open_tomorrow: float, tod_s: float
) -> tuple[bool, float]:
    """(inside scheduled hours now, seconds until the next opening; inf if none by tomorrow)."""
    scheduled = open_today <= tod_s < close_today  # False on a closed day (NaN)
    to_open = open_today - tod_s if tod_s < open_today else DAY_S - tod_s + open_tomorrow
    return scheduled, INF if math.isnan(to_open) else to_open


def comfort_band_zone(c: ZoneControl, t_out_24h_c: float) -> tuple[float, float]:
    """Operative temperature band of the zone's comfort class, (low, high) in °C."""
    if not c.band_adaptive:
        return c.band_low_c, c.band_high_c
    # A missing 24 h mean reads as 0 °C: the winter end of the adaptive band.
    t24 = 0.0 if math.isnan(t_out_24h_c) else t_out_24h_c
    lo, hi = ADAPTIVE_T_OUT_RANGE_C
    mid = ADAPTIVE_BASE_C + ADAPTIVE_SLOPE * min(max(t24, lo), hi)
    return mid - c.band_half_width_k, mid + c.band_half_width_k


# --- the control law (controller.law.step) -------------------------------------------------------


def zone_mode(  # noqa: PLR0911  (one return per mode reads like the G36 table)
    *,
    freeze: bool,
    standby: bool,
    occupied: bool,
    warm: bool,
    cool: bool,
    t: float,
    c: ZoneControl,
) -> int:
    """G36 zone mode: the first that applies, the most urgent first."""
    if freeze:
        return _FREEZE
    if standby:
        return _STANDBY
    if occupied:
        return _OCCUPIED
    if warm:
        return _WARM_UP
    if cool:
        return _COOL_DOWN
    if t > c.unocc_cool_c:  # False when t is NaN
        return _SETUP
    if t < c.unocc_heat_c:
        return _SETBACK
    return _UNOCCUPIED


def law_zone(
    s: LawState,
    c: ZoneControl,
    *,
    dt: float,
    scheduled: bool,
    time_to_open_s: float,
    occupancy: float,
    co2_ppm: float,
    t_zone_c: float,
    t_supply_c: float,
    co2_out_ppm: float,
    band_low_c: float,
    band_high_c: float,
) -> ZoneCommand:
    """Mode, setpoints and airflow request of one zone; learns its recovery rates."""
    # Temperatures no room or air stream can have are missing readings.
    t = t_zone_c if abs(t_zone_c) <= PLAUSIBLE_C else NAN
    t_supply = t_supply_c if abs(t_supply_c) <= PLAUSIBLE_C else NAN
    t_ok = math.isfinite(t)
    co2_ok = math.isfinite(co2_ppm)
    occ_ok = math.isfinite(occupancy) and c.use_occupancy
    populated = occ_ok and occupancy >= POPULATED_PERSONS
    unpopulated_s = 0.0 if populated or not occ_ok else s.unpopulated_s + dt

    # Occupied setpoints sit inside the comfort band, keeping G36's minimum deadband.
    margin = min(max(0.5 * (band_high_c - band_low_c - MIN_DEADBAND_K), 0.0), COMFORT_MARGIN_K)
    occ_heat = band_low_c + margin
    occ_cool = band_high_c - margin

    # --- mode ---
    override = populated and not scheduled
    occupied = scheduled or override
    standby = occupied and occ_ok and unpopulated_s >= STANDBY_AFTER_S
    freeze = t_ok and (t < FREEZE_ON_C or (s.mode == _FREEZE and t < FREEZE_OFF_C))
    heat_gap = occ_heat - t if t_ok else INF  # unknown temperature: assume the worst
    cool_gap = t - occ_cool if t_ok else -INF
    t_opt_heat = min(max(heat_gap, 0.0) / s.warm.rate_k_s, OPT_START_MAX_S)
    t_opt_cool = min(max(cool_gap, 0.0) / s.cool.rate_k_s, OPT_START_MAX_S)
    resting = not occupied and c.optimal_start
    warm = resting and heat_gap > OPT_START_U_HIGH_K and time_to_open_s <= t_opt_heat
    cool = resting and not warm and cool_gap > OPT_START_U_HIGH_K and time_to_open_s <= t_opt_cool
    mode = zone_mode(
        freeze=freeze, standby=standby, occupied=occupied, warm=warm, cool=cool, t=t, c=c
    )

    # --- setpoints ---
    use_occ_setpoints = occupied or warm or cool or freeze or not c.setback
    relax = min(c.standby_relax_k, margin) if standby and not freeze else 0.0
    t_heat = (occ_heat if use_occ_setpoints else c.unocc_heat_c) - relax
    t_cool = (occ_cool if use_occ_setpoints else c.unocc_cool_c) + relax

    # --- ventilation: ASHRAE 62.1 Vbz = Rp·Pz + Ra·Az and the G36 CO2 loop ---
    v_area = c.ra_m3s * c.area_m2
    failsafe = not occ_ok and (c.use_occupancy or not (c.co2_loop and co2_ok))
    people = c.design_occupancy if failsafe else (max(occupancy, 0.0) if occ_ok else 0.0)
    co2 = co2_ppm if co2_ok else 0.0
    u_co2 = _clip01((co2 - (c.co2_limit_ppm - CO2_BAND_PPM)) / CO2_BAND_PPM) if c.co2_loop else 0.0
    v_max_bz = c.airflow_max_m3s * c.ez
    v_co2 = v_area + u_co2 * max(v_max_bz - v_area, 0.0)
    v_occupied = max(v_area + c.rp_m3s * people, v_co2) / c.ez
    co2_out = co2_out_ppm if math.isfinite(co2_out_ppm) else INF
    u_purge = _clip01((co2 - co2_out - PURGE_ABOVE_OUTDOOR_PPM) / PURGE_BAND_PPM)
    v_standby = max(u_co2 * c.airflow_max_m3s, u_purge * v_area / c.ez)
    # VAV cooling with supply air cool enough to be worth moving (False if either is NaN).
    free_cooling = t_ok and t - t_supply > FREE_COOLING_MIN_DT_K
    if free_cooling and c.demand_control:
        u_cool = _clip01((t - (t_cool - COOLING_BAND_K)) / COOLING_BAND_K)
    else:
        u_cool = 0.0
    v_cool = u_cool * c.airflow_max_m3s
    if not occupied:
        airflow = v_cool if cool else 0.0
    elif standby:
        airflow = max(v_standby, v_cool)
    elif c.demand_control:
        airflow = max(v_occupied, v_cool, c.airflow_min_m3s)
    else:
        airflow = c.design_airflow_m3s

    # Trim & Respond: requests for colder supply air (NaN comparisons are False).
    requests = 0.0
    if occupied:
        requests = float((t > t_cool - 0.2) + (t > t_cool + 2.0) + (t > t_cool + 3.0))

    # --- optimal start learns how fast the zone warms and cools ---
    advance_episode(
        s.warm, starting=mode == _WARM_UP, target=occ_heat, sign=1.0, t=t, mode=mode, dt=dt
    )
    advance_episode(
        s.cool, starting=mode == _COOL_DOWN, target=occ_cool, sign=-1.0, t=t, mode=mode, dt=dt
    )
    s.mode = mode
    s.unpopulated_s = unpopulated_s
    return ZoneCommand(t_heat, t_cool, airflow, requests)


def advance_episode(
    e: Episode, *, starting: bool, target: float, sign: float, t: float, mode: int, dt: float
) -> None:
    """One step of a warm-up (sign +1) or cool-down (sign −1) episode (MBL OptimalStart.mo)."""
    t_ok = math.isfinite(t)
    running = math.isfinite(e.t0_c)
    start = starting and not running and t_ok
    if start:
        e.t0_c = t
        running = True
    if not running:
        e.elapsed_s = 0.0
        return
    elapsed = e.elapsed_s + (0.0 if start else dt)
    reached = t_ok and sign * (t - target) >= 0.0 and elapsed > 0.0
    timed_out = elapsed >= OPT_START_MAX_S
    # Abandon an episode the zone left for another reason (back to unoccupied, sensor lost).
    keep = mode in (_OCCUPIED, _STANDBY) or starting
    aborted = not reached and not timed_out and (not keep or not t_ok)
    done = (reached or timed_out) and t_ok
    if done:
        sample_k_s = sign * (t - e.t0_c) / max(elapsed, dt)
        sample_k_s = _fmin(_fmax(sample_k_s, _MIN_RATE_K_S), _MAX_RATE_K_S)
        e.rate_k_s = e.rate_k_s + (sample_k_s - e.rate_k_s) / OPT_START_DAYS
    if done or aborted or timed_out:
        e.t0_c = NAN
        e.elapsed_s = 0.0
    else:
        e.elapsed_s = elapsed


def ahu_airflow_scale(total_m3s: float, a: AhuControl) -> float:
    """Factor on the zone airflows that keeps a running AHU within [min fraction, 1] of design."""
    if not total_m3s > 0.0:
        return 0.0
    target = min(max(total_m3s, a.min_fraction * a.design_airflow_m3s), a.design_airflow_m3s)
    return target / total_m3s


def ahu_supply_setpoint(
    t_max_c: float, requests: float, t_out_c: float, a: AhuControl, dt: float
) -> tuple[float, float]:
    """G36 supply air temperature: Trim & Respond, then outdoor reset; (new T-max, setpoint)."""
    extra = requests - TR_IGNORE_REQUESTS
    change = max(TR_RESPOND_K * extra, TR_RESPOND_MAX_K) if extra > 0.0 else TR_TRIM_K
    t_max_c = t_max_c + change * (dt / TR_PERIOD_S)
    t_max_c = min(max(t_max_c, a.supply_t_min_c), a.supply_t_max_c)
    f = _clip01((t_out_c - OAT_RESET_LOW_C) / (OAT_RESET_HIGH_C - OAT_RESET_LOW_C))
    if math.isnan(f):
        f = 0.0
    reset = t_max_c - f * (t_max_c - a.supply_t_min_c)
    setpoint = reset if a.supply_reset else a.supply_t_design_c
    # The last line of defence (controller.law.enforce_limits).
    return t_max_c, _fmax(_fmin(setpoint, a.supply_t_max_c), a.supply_t_min_c)


def enforce_zone_limits(cmd: ZoneCommand, c: ZoneControl) -> None:
    """Every zone command inside its configured limits (controller.law.enforce_limits)."""
    t_heat = _fmin(_fmax(cmd.t_heat_c, c.heat_lo_c), c.heat_hi_c)
    t_cool = _fmax(_fmin(cmd.t_cool_c, c.cool_hi_c), c.cool_lo_c)
    # Keep the deadband where the limits allow it; the limits win where they do not.
    cmd.t_heat_c = max(min(t_heat, t_cool - MIN_DEADBAND_K), c.heat_lo_c)
    cmd.t_cool_c = t_cool
    cmd.airflow_m3s = _fmin(_fmax(cmd.airflow_m3s, 0.0), c.airflow_max_m3s)


# --- the plant (sim.plant) -----------------------------------------------------------------------


@dataclass(slots=True)
class AhuAir:
    supply_c: float
    fan_w: float
    heating_w: float
    cooling_w: float


def ahu_supply_air(
    q_m3s: float,
    q_theta_sum: float,
    a: AhuPhysics,
    supply_setpoint_c: float,
    t_out_c: float,
) -> AhuAir:
    """Supply air of one AHU: heat recovery with bypass, coils and supply fan heat.

    q_m3s is the sum of its zones' airflows, q_theta_sum that of airflow × air temperature.
    """
    on = q_m3s > 0.0
    q_safe = q_m3s if on else 1.0
    t_extract = q_theta_sum / q_safe
    fan_w = a.fan_power_design_w * (q_m3s / a.design_airflow_m3s) ** a.fan_exponent if on else 0.0
    m_cp = RHO_CP_J_M3K * q_safe
    fan_rise = SUPPLY_FAN_SHARE * fan_w / m_cp
    target = supply_setpoint_c - fan_rise  # what the coils deliver before the supply fan
    t_hr_full = t_out_c + a.hr_effectiveness * (t_extract - t_out_c)
    # Heat recovery with bypass: as close to the target as the exchanger allows, never beyond.
    t_hr = min(max(target, min(t_out_c, t_hr_full)), max(t_out_c, t_hr_full))
    if not on:
        return AhuAir(supply_setpoint_c, 0.0, 0.0, 0.0)
    heating_w = m_cp * max(target - t_hr, 0.0)
    cooling_w = m_cp * max(t_hr - target, 0.0) if a.has_cooling else 0.0
    t_coil = target if a.has_cooling else max(target, t_hr)
    return AhuAir(t_coil + fan_rise, fan_w, heating_w, cooling_w)


def plant_zone(
    s: ThermalState,
    z: ZonePhysics,
    *,
    dt: float,
    t_out_c: float,
    solar_wm2: float,
    co2_out_ppm: float,
    people: float,
    equipment_on: float,
    airflow_m3s: float,
    t_heat_c: float,
    t_cool_c: float,
    t_supply_c: float,
) -> tuple[float, float]:
    """Advance one ISO 13790 5R1C zone and its CO2 by a step; (heating, cooling) power in W."""
    q_zone = max(airflow_m3s, 0.0)
    t_e = t_out_c
    # Ventilation: supply air and infiltration mixed into one equivalent supply temperature.
    q_total = q_zone + z.infiltration_m3s
    h_ve = RHO_CP_J_M3K * q_total
    theta_sup = (q_zone * t_supply_c + z.infiltration_m3s * t_e) / q_total

    # Gains split over the nodes (ISO 13790 eqs. C.1-C.3).
    n_people = max(people, 0.0)
    phi_int = z.sensible_w_per_person * n_people + z.equipment_w_m2 * z.area_m2 * equipment_on
    phi_sol = z.solar_aperture_m2 * solar_wm2
    phi_ia = PEOPLE_CONVECTIVE * phi_int
    rest = (1.0 - PEOPLE_CONVECTIVE) * phi_int + phi_sol
    phi_m = z.a_m_over_a_t * rest
    phi_st = (1.0 - z.a_m_over_a_t - z.h_win_over_h_ms_a_t) * rest

    # ISO 13790 eqs. C.4-C.10 with C_m/3600 generalized to C_m/dt, mass node Crank-Nicolson.
    h_tr_1 = 1.0 / (1.0 / h_ve + 1.0 / z.h_tr_is)
    h_tr_2 = h_tr_1 + z.h_tr_w
    h_tr_3 = 1.0 / (1.0 / h_tr_2 + 1.0 / z.h_tr_ms)
    c_dt = z.c_m_j_k / dt
    half = 0.5 * (h_tr_3 + z.h_tr_em)
    theta_m0 = s.theta_m_c
    base_m_tot = phi_m + z.h_tr_em * t_e + h_tr_3 * (phi_st + z.h_tr_w * t_e) / h_tr_2
    sum_s = z.h_tr_ms + z.h_tr_w + h_tr_1
    denom_air = z.h_tr_is + h_ve

    def solve(phi_hc: float) -> tuple[float, float, float]:
        """(θ_m at step end, θ_s and θ_air step means) for a convective heating power phi_hc."""
        phi_air = phi_ia + phi_hc
        m_tot = base_m_tot + h_tr_3 * h_tr_1 * (phi_air / h_ve + theta_sup) / h_tr_2
        theta_m1 = (theta_m0 * (c_dt - half) + m_tot) / (c_dt + half)
        theta_m = 0.5 * (theta_m0 + theta_m1)
        theta_s = (
            z.h_tr_ms * theta_m + phi_st + z.h_tr_w * t_e + h_tr_1 * (theta_sup + phi_air / h_ve)
        ) / sum_s
        theta_air = (z.h_tr_is * theta_s + h_ve * theta_sup + phi_air) / denom_air
        return theta_m1, theta_s, theta_air

    # Affine in the heating power: two solutions give all (ISO 13790 §C.4.2). The local loops
    # hold the operative temperature between the heating and cooling setpoints.
    probe = 10.0 * z.area_m2
    m0, s0, a0 = solve(0.0)
    m10, s10, a10 = solve(probe)
    op0 = OP_AIR * a0 + (1.0 - OP_AIR) * s0
    per_w = (OP_AIR * (a10 - a0) + (1.0 - OP_AIR) * (s10 - s0)) / probe  # K per W
    need_heat = min(max((t_heat_c - op0) / per_w, 0.0), z.heat_cap_w)
    need_cool = min(max((op0 - t_cool_c) / per_w, 0.0), z.cool_cap_w)
    f = (need_heat - need_cool) / probe
    s.theta_m_c = m0 + f * (m10 - m0)
    s.theta_s_c = s0 + f * (s10 - s0)
    s.theta_air_c = a0 + f * (a10 - a0)

    # CO2: exact over the step; (1 − e^(−a))/a → 1 as the air change a = Q·dt/V → 0.
    a = q_total * dt / z.volume_m3
    phi = -math.expm1(-a) / max(a, 1e-12) if a > 1e-12 else 1.0
    source = 1e6 * z.co2_gen_m3s * n_people
    s.co2_ppm = (
        s.co2_ppm + (q_total * (co2_out_ppm - s.co2_ppm) + source) * (dt / z.volume_m3) * phi
    )
    return need_heat, need_cool


# --- KPIs (sim.kpi.KpiAccumulator.add) -----------------------------------------------------------


def kpi_zone(
    k: ZoneTotals,
    *,
    dt: float,
    t_op_c: float,
    band_low_c: float,
    band_high_c: float,
    co2_ppm: float,
    co2_limit_ppm: float,
    people: float,
    delivered_oa_m3s: float,
    required_oa_m3s: float,
    heat_w: float,
    cool_w: float,
) -> None:
    """Add one step of one zone to its KPI integrals."""
    h = dt / 3600.0
    present = people > 0.0
    settled = present and k.present_s >= COMFORT_DWELL_S  # there 15 min when the step began
    k.present_s = k.present_s + dt if present else 0.0
    low = band_low_c if settled else UNOCCUPIED_LOW_C
    high = band_high_c if settled else UNOCCUPIED_HIGH_C
    dev = max(low - t_op_c, 0.0) + max(t_op_c - high, 0.0)
    k.tdis_kh += dev * h
    over = max(co2_ppm - co2_limit_ppm, 0.0)
    k.idis_ppmh += over * h
    if present:
        k.occupied_h += h
        if dev == 0.0 and over == 0.0:
            k.comfortable_h += h
        if delivered_oa_m3s < SHORTFALL_TOLERANCE * required_oa_m3s:
            k.short_h += h
    k.zone_heat_j += heat_w * dt
    k.zone_cool_j += cool_w * dt


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceResult:
    """What the reference loop gives: per-lane KPIs, per-row integrals and its timing."""

    scenario: Scenario
    lanes: tuple[Lane, ...]
    kpis: tuple[Kpis, ...]
    totals: KpiAccumulator  # per-row integrals, rows and AHU rows lane-major as in simulate
    steps: int  # steps run, warm-up included
    zone_steps: int  # steps × rows
    setup_s: float  # wall time of the preparation
    loop_s: float  # wall time of the stepping loop alone


def _or_nan(x: float | None) -> float:
    return NAN if x is None else x


def _build(sc: Scenario, lanes: tuple[Lane, ...]) -> tuple[list[Zone], list[Ahu]]:
    """Per-row zones and per-lane AHUs with their constants and initial states."""
    site = sc.site
    nz, n_ahu = len(site.zone), len(site.ahu)
    nominal_infiltration = [
        zc.infiltration_ach * r.volume_m3 / 3600.0
        for zc, r in zip(site.zone, site.resolved, strict=True)
    ]
    classes = [CLASS_DEFAULTS[zc.comfort_class] for zc in site.zone]
    plants = {seed: build_plant(site, seed, mismatch=sc.mismatch) for seed in sc.seeds}
    zones: list[Zone] = []
    ahus: list[Ahu] = []
    for li, lane in enumerate(lanes):
        params = compile_params(site, lane.controller)
        zp, ap = plants[lane.seed]
        ahus.extend(
            Ahu(
                _pick(AhuControl, params.ahus, a),
                _pick(AhuPhysics, ap, a),
                float(params.ahus.supply_t_max_c[a]),
                AhuTotals(),
            )
            for a in range(n_ahu)
        )
        for i, zc in enumerate(site.zone):
            zones.append(
                Zone(
                    lane=li,
                    zone=i,
                    seed_index=sc.seeds.index(lane.seed),
                    ahu=li * n_ahu + int(params.zones.ahu[i]),
                    oracle=lane.controller is Strategy.ORACLE,
                    ctl=_pick(
                        ZoneControl,
                        params.zones,
                        i,
                        band_adaptive=classes[i].adaptive_half_width_k is not None,
                        band_low_c=_or_nan(classes[i].t_low_c),
                        band_high_c=_or_nan(classes[i].t_high_c),
                        band_half_width_k=classes[i].adaptive_half_width_k or 0.0,
                        infiltration_m3s=nominal_infiltration[i],
                        has_counter=zc.has_people_counter,
                        has_co2=zc.has_co2_sensor,
                    ),
                    phys=_pick(ZonePhysics, zp, i),
                    co2_check=CheckState(),
                    t_check=CheckState(),
                    est=EstimatorState(),
                    law=LawState(),
                    thermal=ThermalState(
                        INITIAL_TEMPERATURE_C,
                        INITIAL_TEMPERATURE_C,
                        INITIAL_TEMPERATURE_C,
                        site.site.co2_outdoor_ppm,
                    ),
                    totals=ZoneTotals(),
                )
            )
    assert len(zones) == len(lanes) * nz  # noqa: S101
    return zones, ahus


def simulate_reference(
    sc: Scenario, progress: ProgressFn | None = None, *, max_steps: int | None = None
) -> ReferenceResult:
    """Run every lane of the scenario through the closed loop, one zone at a time.

    max_steps : stop after this many steps (for timing); the KPIs then cover the counted steps
    run. The scenario's record_zones are ignored: no series are kept.
    """
    t_setup = time.perf_counter()
    site = sc.site
    lanes = tuple(Lane(c, s) for s in sc.seeds for c in sc.controllers)
    nz = len(site.zone)
    n = len(lanes) * nz
    first = sc.start - timedelta(days=sc.warmup_days)
    clock = make_clock(first, sc.days + sc.warmup_days, sc.dt_s, site.tz)
    k_count = int(np.searchsorted(clock.local_day, sc.start.toordinal()))
    years = sorted({d.year for d in clock.days} | {clock.days[-1].year + 1})
    closed = site.site.closed_days(years)
    ws = sample(sc.weather or synthetic_helsinki(sc.weather_seed), clock.epoch_s)
    ex = _exogenous(sc, clock, closed)
    zones, ahus = _build(sc, lanes)

    row_seeds = np.array([sc.seeds[z.seed_index] for z in zones], dtype=np.int64)
    row_keys = np.array([zone_key(site.zone[z.zone].name) for z in zones], dtype=np.int64)
    co2_bank = Co2SensorBank(
        row_seeds, row_keys, clock, Co2SensorErrors() if sc.sensor_faults else PERFECT_CO2
    )
    thermo = ThermometerBank(
        row_seeds, row_keys, clock, ThermometerErrors() if sc.sensor_faults else PERFECT_THERMOMETER
    )
    table = week_table([r.occupied_hours for r in site.resolved])
    open_s, close_s = table.open_s.tolist(), table.close_s.tolist()
    # Weather and people as Python numbers, one list per step.
    t_out_steps = ws.t_out_c.tolist()
    t24_steps = ws.t_out_24h_c.tolist()
    solar_steps = ws.solar_wm2.tolist()
    tod_steps = clock.local_tod_s.tolist()
    day_steps = clock.local_day.tolist()

    dt = float(sc.dt_s)
    co2_out_nominal = float(site.site.co2_outdoor_ppm)
    n_ahus = len(ahus)
    n_steps = clock.n_steps if max_steps is None else max(0, min(max_steps, clock.n_steps))
    report_every = max(1, clock.n_steps // 200)
    day = -1
    open_today = close_today = open_tomorrow = [NAN] * nz
    setup_s = time.perf_counter() - t_setup

    t_loop = time.perf_counter()
    for k in range(n_steps):
        if day_steps[k] != day:
            day = day_steps[k]
            today, tomorrow = date.fromordinal(day), date.fromordinal(day + 1)
            open_today = [NAN if today in closed else o[today.weekday()] for o in open_s]
            close_today = [NAN if today in closed else c[today.weekday()] for c in close_s]
            open_tomorrow = [NAN if tomorrow in closed else o[tomorrow.weekday()] for o in open_s]
        tod = tod_steps[k]
        t_out = t_out_steps[k]
        t24 = t24_steps[k]
        solar = solar_steps[k]
        co2_out_true = co2_out_nominal + OUTDOOR_CO2_DAILY_AMPLITUDE_PPM * math.cos(
            2 * math.pi * (tod - 5 * 3600.0) / 86400.0
        )
        people_k = ex.people[:, k].tolist()
        counter_in_k = ex.counter_in[:, k].tolist()
        counter_out_k = ex.counter_out[:, k].tolist()
        counting = k >= k_count

        # Sensors read the building as it is at the start of the step.
        co2_meas = co2_bank.read(k, np.array([z.thermal.co2_ppm for z in zones])).tolist()
        t_meas = thermo.read(k, np.array([z.thermal.operative_c() for z in zones])).tolist()

        # Pass 1 over zones: validation, estimation, the zone control law; sums per AHU.
        commands: list[ZoneCommand] = []
        bands: list[tuple[float, float]] = []
        ahu_airflow = [0.0] * n_ahus
        ahu_requests = [0.0] * n_ahus
        for r, z in enumerate(zones):
            co2_clean = validate_reading(z.co2_check, co2_meas[r], 0.0, CO2_LIMITS, dt)
            t_clean = validate_reading(z.t_check, t_meas[r], 0.0, T_LIMITS, dt)
            estimated = estimate_zone(
                z.est,
                z.ctl,
                dt=dt,
                counter_in=z.counter_in_prev,
                counter_out=z.counter_out_prev,
                co2_ppm=co2_clean,
                co2_out_ppm=co2_out_nominal,
                airflow_m3s=z.airflow_prev,
            )
            i = z.zone
            scheduled, to_open = schedule_zone(open_today[i], close_today[i], open_tomorrow[i], tod)
            band = comfort_band_zone(z.ctl, t24)
            cmd = law_zone(
                z.law,
                z.ctl,
                dt=dt,
                scheduled=scheduled,
                time_to_open_s=to_open,
                occupancy=z.people_prev if z.oracle else estimated,
                co2_ppm=co2_clean,
                t_zone_c=t_clean,
                t_supply_c=z.t_supply_prev,
                co2_out_ppm=co2_out_nominal,
                band_low_c=band[0],
                band_high_c=band[1],
            )
            commands.append(cmd)
            bands.append(band)
            ahu_airflow[z.ahu] += cmd.airflow_m3s
            ahu_requests[z.ahu] += cmd.cooling_requests

        # AHUs: airflow range and supply air temperature setpoint.
        scale = [0.0] * n_ahus
        supply_setpoint = [0.0] * n_ahus
        for a, ahu in enumerate(ahus):
            scale[a] = ahu_airflow_scale(ahu_airflow[a], ahu.ctl)
            ahu.t_max_c, supply_setpoint[a] = ahu_supply_setpoint(
                ahu.t_max_c, ahu_requests[a], t_out, ahu.ctl, dt
            )

        # Pass 2 over zones: airflow within the AHU's range, command limits; sums for the plant.
        ahu_q = [0.0] * n_ahus
        ahu_q_theta = [0.0] * n_ahus
        for z, cmd in zip(zones, commands, strict=True):
            cmd.airflow_m3s = min(cmd.airflow_m3s * scale[z.ahu], z.ctl.airflow_max_m3s)
            enforce_zone_limits(cmd, z.ctl)
            q_zone = max(cmd.airflow_m3s, 0.0)
            ahu_q[z.ahu] += q_zone
            ahu_q_theta[z.ahu] += q_zone * z.thermal.theta_air_c

        # AHUs: the supply air they deliver over the step.
        air: list[AhuAir] = []
        for a, ahu in enumerate(ahus):
            out = ahu_supply_air(ahu_q[a], ahu_q_theta[a], ahu.phys, supply_setpoint[a], t_out)
            air.append(out)
            if counting:
                ahu.totals.fan_j += out.fan_w * dt
                ahu.totals.coil_heat_j += out.heating_w * dt
                ahu.totals.coil_cool_j += out.cooling_w * dt

        # Pass 3 over zones: the plant and the KPIs.
        for z, cmd, band in zip(zones, commands, bands, strict=True):
            people = float(people_k[z.seed_index][z.zone])
            heat_w, cool_w = plant_zone(
                z.thermal,
                z.phys,
                dt=dt,
                t_out_c=t_out,
                solar_wm2=solar[z.phys.facade],
                co2_out_ppm=co2_out_true,
                people=people,
                equipment_on=1.0 if people > 0.0 else EQUIPMENT_STANDBY_FRACTION,
                airflow_m3s=cmd.airflow_m3s,
                t_heat_c=cmd.t_heat_c,
                t_cool_c=cmd.t_cool_c,
                t_supply_c=air[z.ahu].supply_c,
            )
            if counting:
                c = z.ctl
                kpi_zone(
                    z.totals,
                    dt=dt,
                    t_op_c=z.thermal.operative_c(),
                    band_low_c=band[0],
                    band_high_c=band[1],
                    co2_ppm=z.thermal.co2_ppm,
                    co2_limit_ppm=c.co2_limit_ppm,
                    people=people,
                    delivered_oa_m3s=cmd.airflow_m3s,
                    required_oa_m3s=(c.ra_m3s * c.area_m2 + c.rp_m3s * people) / c.ez,
                    heat_w=heat_w,
                    cool_w=cool_w,
                )
            z.airflow_prev = cmd.airflow_m3s
            z.t_supply_prev = air[z.ahu].supply_c
            z.people_prev = people
            z.counter_in_prev = float(counter_in_k[z.seed_index][z.zone])
            z.counter_out_prev = float(counter_out_k[z.seed_index][z.zone])
        if progress is not None and (k % report_every == 0 or k == n_steps - 1):
            progress(k + 1, n_steps)
    loop_s = time.perf_counter() - t_loop

    totals = _accumulator(zones, ahus)
    area = np.array([z.ctl.area_m2 for z in zones])
    n_ahu = len(site.ahu)
    kpis = tuple(
        lane_kpis(
            totals,
            rows=slice(i * nz, (i + 1) * nz),
            ahu_rows=slice(i * n_ahu, (i + 1) * n_ahu),
            area_m2=area,
            heating_efficiency=site.energy.heating_efficiency,
            cooling_cop=site.energy.cooling_cop,
        )
        for i in range(len(lanes))
    )
    return ReferenceResult(sc, lanes, kpis, totals, n_steps, n_steps * n, setup_s, loop_s)


def _accumulator(zones: list[Zone], ahus: list[Ahu]) -> KpiAccumulator:
    """The per-row integrals as sim.kpi's accumulator, for lane_kpis and comparisons."""

    def col(values: list[float]) -> Any:  # noqa: ANN401  (a float64 array)
        return np.array(values, dtype=np.float64)

    t = [z.totals for z in zones]
    return KpiAccumulator(
        tdis_kh=col([x.tdis_kh for x in t]),
        idis_ppmh=col([x.idis_ppmh for x in t]),
        occupied_h=col([x.occupied_h for x in t]),
        comfortable_h=col([x.comfortable_h for x in t]),
        short_h=col([x.short_h for x in t]),
        zone_heat_j=col([x.zone_heat_j for x in t]),
        zone_cool_j=col([x.zone_cool_j for x in t]),
        fan_j=col([a.totals.fan_j for a in ahus]),
        coil_heat_j=col([a.totals.coil_heat_j for a in ahus]),
        coil_cool_j=col([a.totals.coil_cool_j for a in ahus]),
        present_s=col([x.present_s for x in t]),
    )
