"""Occupancy estimation: a drift-corrected people counter fused with an inverse CO2 mass balance.

People counters see arrivals at once but drift: OUT events are missed more often than IN events
(ghosts at the end of the day), groups are undercounted at peaks, devices reset at night
(domain.md §4, after Irisys and field notes). The CO2 mass balance
n = (V·dC/dt + Q·(C − C_out)) / (1e6·G) has no drift but lags and is noisy when the room is
nearly empty. The fusion keeps the counter's speed and lets CO2 correct its scale, clear its ghosts
and take over when it fails. Pure and vectorized: one row per zone; NaN means missing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy as xp  # backend of the elementwise stage (see controller.law)

from sensors.arrays import BoolArray, Elem, FloatArray

CO2_FILTER_S = 300.0  # low-pass of CO2 and of its derivative (Hernandez-Cruz et al.: 10-min EMA)
CO2_VALID_FOR_S = 600.0  # a CO2 estimate older than this is not used
CO2_WARMUP_S = 900.0  # the filters need this long after the first reading
EMPTY_PERSONS = 0.5  # CO2 estimate below this: nobody
GHOST_CLEAR_AFTER_S = 900.0  # CO2 says empty and nobody came in for 15 min: clear ghosts
GHOST_MAX_PERSONS = 7.0  # field notes: 5-7 ghosts when a room is empty (domain.md §4) ...
GHOST_MAX_FRACTION = 0.5  # ... more in a busy room: missed OUTs add up over a day of meetings
# Self-calibration of the CO2 reference, as NDIR sensors' ABC/ASC do (domain.md §3): the lowest
# filtered reading is outdoor air as this sensor sees it, so its offset cancels out of the mass
# balance. The reference may creep up this fast to follow drift, and stays this close to outdoor.
# It starts at the outdoor value (so a room that is full when the estimator starts reads full)
# and is held within a plausible sensor offset of the slowly averaged outdoor value: NDIR sensors
# are specified to ±(30 ppm + 3 %) (SCD30, domain.md §3).
BASELINE_RISE_PPM_PER_DAY = 20.0
BASELINE_MAX_OFFSET_PPM = 60.0
OUTDOOR_REFERENCE_TAU_S = 86400.0
# Inputs beyond these are faults, treated as missing before they can poison a filter.
MAX_PLAUSIBLE_PPM = 1e5
MAX_PLAUSIBLE_AIRFLOW_M3S = 1e3
MAX_PLAUSIBLE_REGISTER = 1e12
RESET_KEEPS_COUNT_IF_ENTRY_WITHIN_S = 1800.0
# CO2 can only refute a count it could see: the excess those people would cause at the current
# airflow, 1e6·G·n/Q, must stand clear of sensor offsets and outdoor swings (tens of ppm). Two
# people in a well-ventilated open office raise CO2 by ~30 ppm: CO2 cannot tell them from none.
CO2_DETECTABLE_PPM = 60.0
# Where CO2 cannot decide, the field rule (raum-tracker notes, domain.md §4): nobody came in for
# 30 min, at least 2 went out in that time, and a small count remains: those are ghosts.
FIELD_RULE_WINDOW_S = 1800.0
FIELD_RULE_MIN_EXITS = 2.0
SCALE_LEARN_STEADY_S = 1200.0  # learn the counter's undercount when the count held 20 min
SCALE_TAU_S = 1800.0
# Counters undercount crowds by 1.5-3× (domain.md §4); they overcount only through ghosts, which
# are cleared, not scaled. The factor is learned only from rooms with enough people in them.
SCALE_RANGE = (1.0, 3.0)
SCALE_LEARN_MIN_PERSONS = 3.0
# The counter reads 0 while CO2 has seen people for 15 min: an entry was missed or the counter is
# broken, and CO2 is believed until the counter moves again.
DISTRUST_AFTER_S = 900.0
DISTRUST_MIN_PERSONS = 0.7
DISTRUST_MIN_FRACTION = 0.1
# When CO2 sees more people than the counter, believe CO2 (counters undercount crowds) less a
# margin for its noise, which grows with the room's volume: an empty room's noise stays "nobody".
CO2_FLOOR_MARGIN_PERSONS = 0.5
CO2_FLOOR_MARGIN_FRACTION = 0.05
PLAUSIBLE_FACTOR = 1.5  # a count above 1.5 × design + 5 is a fault, not a crowd
PLAUSIBLE_MARGIN = 5.0


class EstimatorParams(NamedTuple):
    """Per zone row. Every field (n_zones,)."""

    volume_m3: FloatArray
    co2_gen_m3s: FloatArray  # CO2 generation per person, m³/s
    infiltration_m3s: FloatArray  # outdoor air entering without the supply fan
    design_occupancy: FloatArray
    has_counter: BoolArray
    has_co2: BoolArray


class Observation(NamedTuple):
    """One step's inputs; arrays (n_zones,), NaN = missing (after validation)."""

    dt_s: float
    counter_in: FloatArray  # the counter's cumulative IN register
    counter_out: FloatArray  # the counter's cumulative OUT register
    co2_ppm: FloatArray
    co2_out_ppm: FloatArray
    airflow_m3s: FloatArray  # outdoor air supplied to the zone over the last step


class Estimate(NamedTuple):
    occupancy: FloatArray  # people, ≥ 0; NaN when no source works
    confidence: FloatArray  # 0 (nothing known) .. 1
    from_counter: FloatArray  # drift-corrected counter; NaN if no counter
    from_co2: FloatArray  # mass-balance estimate; NaN if no CO2


class EstimatorState(NamedTuple):
    offset: FloatArray  # added to (IN − OUT): corrects drift and device resets
    last_in: FloatArray
    last_out: FloatArray
    counted: FloatArray  # corrected counter occupancy
    since_entry_s: FloatArray  # since the counter last saw somebody enter
    exits_since_entry: FloatArray  # OUT events since the counter last saw an entry
    since_exit_s: FloatArray  # since the counter last saw somebody leave
    steady_s: FloatArray  # since the count last changed
    scale: FloatArray  # counter undercount factor learned from CO2
    co2_f: FloatArray  # low-passed CO2
    co2_base: FloatArray  # self-calibrated outdoor reference of this sensor
    outdoor_ref: FloatArray  # outdoor CO2 averaged over a day
    dco2_ppm_s: FloatArray  # low-passed dC/dt
    n_co2: FloatArray  # smoothed mass-balance estimate
    co2_age_s: FloatArray  # since the last valid CO2 reading
    co2_run_s: FloatArray  # how long the CO2 filters have been fed
    empty_s: FloatArray  # how long CO2 has said the zone is empty
    disagree_s: FloatArray  # how long the counter said 0 while CO2 saw people


def initial_estimator_state(n: int) -> EstimatorState:
    nan = np.full(n, np.nan)
    zero = np.zeros(n)
    return EstimatorState(
        offset=zero.copy(),
        last_in=nan.copy(),
        last_out=nan.copy(),
        counted=zero.copy(),
        since_entry_s=np.full(n, np.inf),
        exits_since_entry=zero.copy(),
        since_exit_s=np.full(n, np.inf),
        steady_s=zero.copy(),
        scale=np.ones(n),
        co2_f=nan.copy(),
        co2_base=nan.copy(),
        outdoor_ref=nan.copy(),
        dco2_ppm_s=zero.copy(),
        n_co2=zero.copy(),
        co2_age_s=np.full(n, np.inf),
        co2_run_s=zero.copy(),
        empty_s=zero.copy(),
        disagree_s=zero.copy(),
    )


class FilterGains(NamedTuple):
    """The step's first-order filter gains 1 − e^(−dt/τ): the same for every zone."""

    co2: float  # CO2, its derivative and the mass-balance estimate
    outdoor: float  # the day-long outdoor reference
    scale: float  # the counter's undercount factor


def filter_gains(dt_s: float) -> FilterGains:
    return FilterGains(
        -math.expm1(-dt_s / CO2_FILTER_S),
        -math.expm1(-dt_s / OUTDOOR_REFERENCE_TAU_S),
        -math.expm1(-dt_s / SCALE_TAU_S),
    )


def _within(x: Elem, lo: float, hi: float) -> Elem:
    """x where lo <= x <= hi, NaN elsewhere (non-finite values included)."""
    return xp.where((x >= lo) & (x <= hi), x, xp.nan)


def estimate(
    s: EstimatorState, o: Observation, p: EstimatorParams
) -> tuple[EstimatorState, Estimate]:
    """One estimation step for all zones (numpy)."""
    out = estimate_zone(s, o, p, filter_gains(o.dt_s))
    n = len(EstimatorState._fields)
    return EstimatorState(*out[:n]), Estimate(*out[n:])


def estimate_zone(
    s: EstimatorState, o: Observation, p: EstimatorParams, g: FilterGains
) -> tuple[Elem, ...]:
    """One estimation step, elementwise (see controller.law): the EstimatorState fields, then
    the Estimate fields."""
    dt = o.dt_s
    counter_in = _within(o.counter_in, 0.0, MAX_PLAUSIBLE_REGISTER)
    counter_out = _within(o.counter_out, 0.0, MAX_PLAUSIBLE_REGISTER)
    co2_ppm = _within(o.co2_ppm, 0.0, MAX_PLAUSIBLE_PPM)
    co2_out_ppm = _within(o.co2_out_ppm, 0.0, MAX_PLAUSIBLE_PPM)
    airflow = xp.where(
        _within(o.airflow_m3s, 0.0, MAX_PLAUSIBLE_AIRFLOW_M3S) > 0.0, o.airflow_m3s, 0.0
    )
    # --- counter: IN − OUT + offset, never negative, continuous across device resets ---
    c_ok = p.has_counter & xp.isfinite(counter_in) & xp.isfinite(counter_out)
    raw = xp.where(c_ok, counter_in - counter_out, 0.0)
    seen = c_ok & xp.isfinite(s.last_in)
    reset = seen & ((counter_in < s.last_in) | (counter_out < s.last_out))
    # Registers restart from 0 at a reset: what they hold then happened since the reset.
    entered = xp.where(seen, xp.where(reset, counter_in, counter_in - s.last_in), 0.0)
    exited = xp.where(seen, xp.where(reset, counter_out, counter_out - s.last_out), 0.0)
    since_entry_s = xp.where(entered > 0.0, 0.0, s.since_entry_s + dt)
    since_exit_s = xp.where(exited > 0.0, 0.0, s.since_exit_s + dt)
    exits_since_entry = xp.where(entered > 0.0, 0.0, s.exits_since_entry) + exited
    # A nightly device reset is the field practice's daily zeroing, unless people just came in
    # (the entries since the reset itself excluded: they are counted in the registers).
    recent_entry = (s.since_entry_s + dt) < RESET_KEEPS_COUNT_IF_ENTRY_WITHIN_S
    carry = xp.where(recent_entry, s.counted, 0.0)
    # First reading: the registers' history is unknown, start from the current estimate.
    offset = xp.where(reset, carry, xp.where(c_ok & ~seen, s.counted - raw, s.offset))
    count = raw + offset
    offset = xp.where(count < 0.0, offset - count, offset)  # missed INs cannot make people < 0
    count = xp.where(c_ok, xp.maximum(count, 0.0), s.counted)
    steady_s = xp.where(count != s.counted, 0.0, s.steady_s + dt)

    # --- CO2 mass balance on low-passed CO2 ---
    q_ok = p.has_co2 & xp.isfinite(co2_ppm) & xp.isfinite(co2_out_ppm)
    alpha = g.co2
    had_f = xp.isfinite(s.co2_f)
    co2_f = xp.where(had_f, s.co2_f + alpha * (co2_ppm - s.co2_f), co2_ppm)
    co2_f = xp.where(q_ok, co2_f, s.co2_f)
    d_raw = xp.where(q_ok & had_f, (co2_f - s.co2_f) / dt, 0.0)
    dco2 = xp.where(q_ok, s.dco2_ppm_s + alpha * (d_raw - s.dco2_ppm_s), s.dco2_ppm_s)
    q = airflow + p.infiltration_m3s
    out_ref = xp.where(
        xp.isfinite(s.outdoor_ref),
        s.outdoor_ref + g.outdoor * (co2_out_ppm - s.outdoor_ref),
        co2_out_ppm,
    )
    out_ref = xp.where(q_ok, out_ref, s.outdoor_ref)
    rise = BASELINE_RISE_PPM_PER_DAY * dt / 86400.0
    base = xp.fmin(xp.where(xp.isfinite(s.co2_base), s.co2_base + rise, out_ref), co2_f)
    base = xp.minimum(
        xp.maximum(base, out_ref - BASELINE_MAX_OFFSET_PPM), out_ref + BASELINE_MAX_OFFSET_PPM
    )
    base = xp.where(q_ok, base, s.co2_base)
    excess = xp.where(q_ok, co2_f - base, 0.0)
    n_raw = (p.volume_m3 * dco2 + q * excess) / (1e6 * p.co2_gen_m3s)
    n_co2 = xp.where(q_ok, s.n_co2 + alpha * (n_raw - s.n_co2), s.n_co2)
    co2_age_s = xp.where(q_ok, 0.0, s.co2_age_s + dt)
    lost = co2_age_s > CO2_VALID_FOR_S
    co2_run_s = xp.where(q_ok, s.co2_run_s + dt, xp.where(lost, 0.0, s.co2_run_s))
    have_co2 = (co2_age_s <= CO2_VALID_FOR_S) & (co2_run_s >= CO2_WARMUP_S)
    n_co2_pos = xp.maximum(n_co2, 0.0)

    # --- fusion ---
    plausible = count <= PLAUSIBLE_FACTOR * p.design_occupancy + PLAUSIBLE_MARGIN
    have_c = c_ok & plausible
    both = have_c & have_co2
    empty_s = xp.where(have_co2 & (n_co2 < EMPTY_PERSONS), s.empty_s + dt, 0.0)
    ghost_max = xp.maximum(GHOST_MAX_PERSONS, GHOST_MAX_FRACTION * p.design_occupancy)
    small = have_c & (count > 0.0) & (count <= ghost_max)
    quiet = since_entry_s >= GHOST_CLEAR_AFTER_S
    visible = 1e6 * p.co2_gen_m3s * count / q >= CO2_DETECTABLE_PPM
    co2_decides = have_co2 & visible
    co2_says_empty = empty_s >= GHOST_CLEAR_AFTER_S
    field_rule = (
        (since_entry_s >= FIELD_RULE_WINDOW_S)
        & (exits_since_entry >= FIELD_RULE_MIN_EXITS)
        & (since_exit_s <= FIELD_RULE_WINDOW_S)
        & (count <= GHOST_MAX_PERSONS)
    )
    ghosts = small & xp.where(co2_decides, quiet & co2_says_empty, field_rule)
    offset = xp.where(ghosts, offset - count, offset)
    count = xp.where(ghosts, 0.0, count)
    learn = (
        both
        & (steady_s >= SCALE_LEARN_STEADY_S)
        & (count >= SCALE_LEARN_MIN_PERSONS)
        & (n_co2 >= SCALE_LEARN_MIN_PERSONS)
    )
    ratio = xp.minimum(
        xp.maximum(n_co2_pos / xp.maximum(count, 1.0), SCALE_RANGE[0]), SCALE_RANGE[1]
    )
    scale = xp.where(learn, s.scale + g.scale * (ratio - s.scale), s.scale)
    sees_people = n_co2 >= xp.maximum(
        DISTRUST_MIN_PERSONS, DISTRUST_MIN_FRACTION * p.design_occupancy
    )
    disagree = both & (count < EMPTY_PERSONS) & sees_people
    disagree_s = xp.where(disagree, s.disagree_s + dt, 0.0)
    distrust = disagree_s >= DISTRUST_AFTER_S
    from_counter = xp.where(have_c, count * scale, xp.nan)
    margin = CO2_FLOOR_MARGIN_PERSONS + CO2_FLOOR_MARGIN_FRACTION * p.design_occupancy
    co2_floor = xp.where(have_co2, n_co2 - margin, 0.0)
    occupancy = xp.where(
        have_c & ~distrust,
        xp.maximum(from_counter, co2_floor),
        xp.where(have_co2, n_co2_pos, xp.nan),
    )
    agreement = 1.0 - xp.minimum(
        xp.abs(n_co2_pos - count * scale) / (xp.maximum(n_co2_pos, count * scale) + 3.0), 1.0
    )
    confidence = xp.where(
        both & ~distrust,
        0.6 + 0.4 * agreement,
        xp.where(have_c, 0.6, xp.where(have_co2, 0.4, 0.0)),
    )
    return (
        offset,
        xp.where(c_ok, counter_in, s.last_in),
        xp.where(c_ok, counter_out, s.last_out),
        count,
        since_entry_s,
        exits_since_entry,
        since_exit_s,
        steady_s,
        scale,
        co2_f,
        base,
        out_ref,
        dco2,
        n_co2,
        co2_age_s,
        co2_run_s,
        empty_s,
        disagree_s,
        occupancy,
        confidence,
        from_counter,
        xp.where(have_co2, n_co2_pos, xp.nan),
    )
