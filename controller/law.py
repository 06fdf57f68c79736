"""The control law: modes, setpoints and airflow for every zone at once; AHUs follow their zones.

Pure: no clock, no I/O. `step` maps (state, inputs, params) to (state, commands) over arrays with
one row per zone; NaN (or any non-finite value) in an input means "missing" and is handled by a
fail-safe, never passed through to a command.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np
import numpy.typing as npt

from controller.params import Params, adaptive_band_mid_c
from sensors.arrays import BoolArray, FloatArray, Int8Array


class Mode(IntEnum):
    """Zone operating mode: ASHRAE Guideline 36 codes (MBL G36/Types/OperationModes) + standby."""

    OCCUPIED = 1
    COOL_DOWN = 2
    SETUP = 3
    WARM_UP = 4
    SETBACK = 5
    FREEZE_PROTECTION = 6
    UNOCCUPIED = 7
    OCCUPIED_STANDBY = 8  # G36 occupied mode with the zone unpopulated (a sub-mode there)


class Reason(IntFlag):
    """Why a zone got its command; carried with every command and recorded in history."""

    SCHEDULE = 1  # scheduled occupied hours
    OCCUPANCY = 2  # airflow from the occupancy estimate (Rp·Pz)
    CO2 = 4  # the CO2 loop raised the airflow
    COOLING = 8  # airflow raised for cooling with cool supply air
    STANDBY = 16  # occupied-standby: nobody there for 5 min
    PURGE = 32  # standby purge of CO2 left by the last occupants
    WARM_UP = 64
    COOL_DOWN = 128
    SETBACK = 256  # unoccupied setpoints
    FREEZE = 512
    FAILSAFE = 1024  # an input was missing: design airflow
    OVERRIDE = 2048  # people present outside scheduled hours
    AHU_LIMIT = 4096  # airflow changed to keep the AHU within its fan range


# Plain ints for array code: reading an Enum member costs a microsecond each time.
_OCCUPIED, _COOL_DOWN, _SETUP, _WARM_UP, _SETBACK, _FREEZE, _UNOCCUPIED, _STANDBY = (
    int(m) for m in Mode
)

# ASHRAE Guideline 36 sequences, as in MBL Buildings/Controls/OBC/ASHRAE/G36 [V]:
STANDBY_AFTER_S = 300.0  # ThermalZones/Setpoints.mo: unpopulated 5 min → occupied-standby
CO2_BAND_PPM = 200.0  # VentilationZones/ASHRAE62_1/Setpoints.mo: P-loop 0 % at setpoint − 200 ppm
FREEZE_ON_C = 4.0  # ZoneGroups/OperationMode.mo: freeze protection below 4 °C ...
FREEZE_OFF_C = 7.0  # ... until above 7 °C
MIN_DEADBAND_K = 0.5  # ThermalZones/Setpoints.mo minimum heating/cooling deadband
# Supply air temperature Trim & Respond (G36 §5.16.2.2; MBL AHUs/MultiZone/VAV/SetPoints/
# SupplyTemperature.mo [U: values from memory]): every 2 min, trim the maximum supply temperature
# up by 0.1 K unless more than 2 cooling requests ask for colder air, then respond by −0.2 K per
# request beyond 2, at most −0.6 K. Between 16 °C and 21 °C outdoor the setpoint moves from that
# maximum down to the minimum.
TR_PERIOD_S = 120.0
TR_IGNORE_REQUESTS = 2.0
TR_TRIM_K = 0.1
TR_RESPOND_K = -0.2
TR_RESPOND_MAX_K = -0.6
OAT_RESET_LOW_C = 16.0
OAT_RESET_HIGH_C = 21.0
# MBL Controls/OBC/Utilities/OptimalStart.mo defaults [V]:
OPT_START_MAX_S = 10800.0  # tOptMax: start at most 3 h early
OPT_START_U_HIGH_K = 0.5  # uHigh: no early start for an error this small
OPT_START_DAYS = 3.0  # nDay: the learned rate averages the last 3 days
OPT_START_INITIAL_K_PER_H = 2.0  # ilma's first guess before anything is learned

POPULATED_PERSONS = 0.5  # an estimate at or above this means somebody is there
COMFORT_MARGIN_K = 0.5  # occupied setpoints this far inside the comfort band
COOLING_BAND_K = 1.0  # VAV cooling airflow ramps over this band below the cooling setpoint
FREE_COOLING_MIN_DT_K = 2.0  # supply air this much cooler than the zone makes air worth moving
# ilma's addition to G36: after a room empties, keep purging at the area rate until its CO2 is
# back near outdoor, so the next meeting starts from fresh air (G36 stops all air in standby).
PURGE_ABOVE_OUTDOOR_PPM = 150.0
PURGE_BAND_PPM = 100.0


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the core sees each step. Arrays are (n_zones,); non-finite means missing."""

    dt_s: float  # time since the previous step
    scheduled: BoolArray  # inside the zone's scheduled occupied hours
    time_to_open_s: FloatArray  # until the next scheduled start; inf if none ahead today/tomorrow
    occupancy: FloatArray  # estimated people in the zone (NaN: no estimate)
    co2_ppm: FloatArray  # zone CO2
    t_zone_c: FloatArray  # zone temperature as a room sensor reads it (close to operative)
    t_supply_c: FloatArray  # supply air temperature of the zone's AHU
    t_out_c: FloatArray  # outdoor temperature now
    t_out_24h_c: FloatArray  # mean outdoor temperature over the last 24 h
    co2_out_ppm: FloatArray  # outdoor CO2


@dataclass(frozen=True, slots=True)
class ZoneState:
    """What the core remembers between steps. Zone arrays (n_zones,), AHU arrays (n_ahus,)."""

    mode: Int8Array
    unpopulated_s: FloatArray  # how long the zone has been seen empty
    heat_rate_k_s: FloatArray  # learned warm-up rate (optimal start)
    cool_rate_k_s: FloatArray  # learned cool-down rate
    warm_t0_c: FloatArray  # temperature when the running warm-up began; NaN if none runs
    warm_s: FloatArray  # time since it began
    cool_t0_c: FloatArray
    cool_s: FloatArray
    ahu_t_max_c: FloatArray  # Trim & Respond variable: the warmest supply air now allowed


@dataclass(frozen=True, slots=True)
class Commands:
    """What the core asks of the building. Zone arrays (n_zones,), AHU arrays (n_ahus,)."""

    mode: Int8Array
    t_heat_c: FloatArray  # heating setpoint
    t_cool_c: FloatArray  # cooling setpoint
    airflow_m3s: FloatArray  # zone supply (outdoor) airflow setpoint
    reason: npt.NDArray[np.int32]  # Reason flags
    ahu_on: BoolArray
    ahu_airflow_m3s: FloatArray
    ahu_supply_c: FloatArray  # supply air temperature setpoint


def initial_state(p: Params) -> ZoneState:
    """A fresh state: nothing learned yet, nobody seen, supply air at its warmest."""
    n = p.zones.n
    rate = np.full(n, OPT_START_INITIAL_K_PER_H / 3600.0)
    return ZoneState(
        mode=np.full(n, _UNOCCUPIED, dtype=np.int8),
        unpopulated_s=np.zeros(n),
        heat_rate_k_s=rate,
        cool_rate_k_s=rate.copy(),
        warm_t0_c=np.full(n, np.nan),
        warm_s=np.zeros(n),
        cool_t0_c=np.full(n, np.nan),
        cool_s=np.zeros(n),
        ahu_t_max_c=p.ahus.supply_t_max_c.copy(),
    )


PLAUSIBLE_C = 150.0


def _plausible_c(t: FloatArray) -> FloatArray:
    return np.where(np.abs(t) <= PLAUSIBLE_C, t, np.nan)


def _clip01(x: FloatArray) -> FloatArray:
    return np.minimum(np.maximum(x, 0.0), 1.0)


def comfort_band(p: Params, t_out_24h_c: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Operative temperature band of each zone's comfort class, (n_zones,) low and high in °C."""
    z = p.zones
    # A missing 24 h mean reads as 0 °C (fmax ignores NaN): the winter end of the adaptive band.
    mid = z.band_weight * adaptive_band_mid_c(np.fmax(t_out_24h_c, 0.0))
    return mid + z.band_low_offset_c, mid + z.band_high_offset_c


def step(state: ZoneState, u: Inputs, p: Params) -> tuple[ZoneState, Commands]:
    """One control step for all zones and AHUs."""
    z = p.zones
    dt = u.dt_s
    # Temperatures no room or air stream can have are missing readings, not numbers to divide.
    t = _plausible_c(u.t_zone_c)
    t_supply = _plausible_c(u.t_supply_c)
    t_ok = np.isfinite(t)
    co2_ok = np.isfinite(u.co2_ppm)
    occ_ok = np.isfinite(u.occupancy) & z.use_occupancy
    populated = occ_ok & (u.occupancy >= POPULATED_PERSONS)
    unpopulated_s = np.where(populated | ~occ_ok, 0.0, state.unpopulated_s + dt)

    # Occupied setpoints sit inside the comfort band, keeping G36's minimum deadband.
    band_lo, band_hi = comfort_band(p, u.t_out_24h_c)
    margin = np.minimum(
        np.maximum(0.5 * (band_hi - band_lo - MIN_DEADBAND_K), 0.0), COMFORT_MARGIN_K
    )
    occ_heat = band_lo + margin
    occ_cool = band_hi - margin

    # --- modes (G36 §5.1 zone group modes, applied per zone) ---
    scheduled = u.scheduled.astype(np.bool_)
    override = populated & ~scheduled
    occupied = scheduled | override
    standby = occupied & occ_ok & (unpopulated_s >= STANDBY_AFTER_S)
    freeze = t_ok & ((t < FREEZE_ON_C) | ((state.mode == _FREEZE) & (t < FREEZE_OFF_C)))
    heat_gap = np.where(t_ok, occ_heat - t, np.inf)  # unknown temperature: assume the worst
    cool_gap = np.where(t_ok, t - occ_cool, -np.inf)
    t_opt_heat = np.minimum(np.maximum(heat_gap, 0.0) / state.heat_rate_k_s, OPT_START_MAX_S)
    t_opt_cool = np.minimum(np.maximum(cool_gap, 0.0) / state.cool_rate_k_s, OPT_START_MAX_S)
    resting = ~occupied & z.optimal_start
    warm = resting & (heat_gap > OPT_START_U_HIGH_K) & (u.time_to_open_s <= t_opt_heat)
    cool = resting & ~warm & (cool_gap > OPT_START_U_HIGH_K) & (u.time_to_open_s <= t_opt_cool)
    mode = np.full(z.n, _UNOCCUPIED, dtype=np.int8)
    mode[t_ok & (t < z.unocc_heat_c)] = _SETBACK
    mode[t_ok & (t > z.unocc_cool_c)] = _SETUP
    mode[cool] = _COOL_DOWN
    mode[warm] = _WARM_UP
    mode[occupied] = _OCCUPIED
    mode[standby] = _STANDBY
    mode[freeze] = _FREEZE

    # --- setpoints (G36 §5.3: occupied setpoints in occupied, warm-up and cool-down) ---
    use_occ_setpoints = occupied | warm | cool | freeze | ~z.setback
    # G36 relaxes by 0.5 K in standby; ilma lets an empty zone drift to its band's edge, not out.
    relax = np.where(standby & ~freeze, np.minimum(z.standby_relax_k, margin), 0.0)
    t_heat = np.where(use_occ_setpoints, occ_heat, z.unocc_heat_c) - relax
    t_cool = np.where(use_occ_setpoints, occ_cool, z.unocc_cool_c) + relax

    # --- ventilation (ASHRAE 62.1 Vbz = Rp·Pz + Ra·Az; G36 §5.2.1.3 CO2 loop) ---
    v_area = z.ra_m3s * z.area_m2
    # Population: the estimate; the design occupancy when the estimate is missing, unless the
    # CO2 loop is there to find the people (CO2-only control).
    failsafe = ~occ_ok & (z.use_occupancy | ~(z.co2_loop & co2_ok))
    people = np.where(occ_ok, np.maximum(u.occupancy, 0.0), 0.0)
    people = np.where(failsafe, z.design_occupancy, people)
    co2 = np.where(co2_ok, u.co2_ppm, 0.0)
    u_co2 = np.where(
        z.co2_loop, _clip01((co2 - (z.co2_limit_ppm - CO2_BAND_PPM)) / CO2_BAND_PPM), 0.0
    )
    v_max_bz = z.airflow_max_m3s * z.ez
    v_co2 = v_area + u_co2 * np.maximum(v_max_bz - v_area, 0.0)
    v_occupied = np.maximum(v_area + z.rp_m3s * people, v_co2) / z.ez
    co2_out = np.where(np.isfinite(u.co2_out_ppm), u.co2_out_ppm, np.inf)
    u_purge = _clip01((co2 - co2_out - PURGE_ABOVE_OUTDOOR_PPM) / PURGE_BAND_PPM)
    v_standby = np.maximum(u_co2 * z.airflow_max_m3s, u_purge * v_area / z.ez)
    # VAV cooling: more air when the zone warms towards its cooling setpoint and the supply air
    # can actually cool it.
    free_cooling = t_ok & (t - t_supply > FREE_COOLING_MIN_DT_K)  # False if either is NaN
    u_cool = np.where(
        free_cooling & z.demand_control,
        _clip01((t - (t_cool - COOLING_BAND_K)) / COOLING_BAND_K),
        0.0,
    )
    v_cool = u_cool * z.airflow_max_m3s
    airflow = np.where(
        z.demand_control,
        np.maximum(np.maximum(v_occupied, v_cool), z.airflow_min_m3s),
        z.design_airflow_m3s,
    )
    airflow = np.where(standby, np.maximum(v_standby, v_cool), airflow)
    airflow = np.where(occupied, airflow, np.where(cool, v_cool, 0.0))
    airflow, ahu_airflow, ahu_on, scaled = _ahu_airflow(airflow, p)

    reason = _pack_reasons(
        scheduled,  # in the order of the Reason bits
        occupied & occ_ok & ~standby,
        occupied & (u_co2 > 0.0),
        (occupied | cool) & (u_cool > 0.0),
        standby,
        standby & (u_purge > 0.0),
        warm,
        cool,
        ~use_occ_setpoints,
        freeze,
        occupied & ~standby & failsafe & z.demand_control,
        override,
        scaled,
    )

    ahu_t_max, ahu_supply = _supply_temperature(
        state.ahu_t_max_c, u, p, t=t, t_cool=t_cool, occupied=occupied
    )
    new_state = _learn_recovery_rates(
        state,
        mode=mode,
        unpopulated_s=unpopulated_s,
        t=t,
        t_ok=t_ok,
        occ_heat=occ_heat,
        occ_cool=occ_cool,
        dt=dt,
        ahu_t_max_c=ahu_t_max,
    )
    commands = enforce_limits(
        Commands(mode, t_heat, t_cool, airflow, reason, ahu_on, ahu_airflow, ahu_supply), p
    )
    return new_state, commands


def _pack_reasons(*flags: BoolArray) -> npt.NDArray[np.int32]:
    """Bit i of each zone's reason is flags[i] (one packbits call instead of a sum of 13)."""
    bits = np.packbits(np.stack(flags), axis=0, bitorder="little").astype(np.int32)  # (2, n)
    reason: npt.NDArray[np.int32] = bits[0] | (bits[1] << 8)
    return reason


def _supply_temperature(
    t_max: FloatArray,
    u: Inputs,
    p: Params,
    *,
    t: FloatArray,
    t_cool: FloatArray,
    occupied: BoolArray,
) -> tuple[FloatArray, FloatArray]:
    """G36 supply air temperature: Trim & Respond on zone cooling requests, then outdoor reset.

    A zone requests colder air (G36 §5.6.8.1, simplified to temperatures): one request when it is
    within 0.2 K of its cooling setpoint, two at 2 K above it, three at 3 K above it.
    """
    z, a = p.zones, p.ahus
    # NaN comparisons are False: a zone without a temperature makes no request.
    requests = (
        (t > t_cool - 0.2).astype(np.float64) + (t > t_cool + 2.0) + (t > t_cool + 3.0)
    ) * occupied
    per_ahu = np.bincount(z.ahu, weights=requests, minlength=a.n)
    extra = per_ahu - TR_IGNORE_REQUESTS
    change = np.where(extra > 0.0, np.maximum(TR_RESPOND_K * extra, TR_RESPOND_MAX_K), TR_TRIM_K)
    t_max = t_max + change * (u.dt_s / TR_PERIOD_S)
    t_max = np.minimum(np.maximum(t_max, a.supply_t_min_c), a.supply_t_max_c)
    # Outdoor reset: from T-max at 16 °C outdoor and below to the minimum at 21 °C and above.
    t_out = u.t_out_c[a.first_zone]
    # fmax/fmin drop NaN: an unknown outdoor temperature keeps the warmest supply air.
    f = np.fmin(np.fmax((t_out - OAT_RESET_LOW_C) / (OAT_RESET_HIGH_C - OAT_RESET_LOW_C), 0.0), 1.0)
    reset = t_max - f * (t_max - a.supply_t_min_c)
    return t_max, np.where(a.supply_reset, reset, a.supply_t_design_c)


def _ahu_airflow(
    airflow: FloatArray, p: Params
) -> tuple[FloatArray, FloatArray, BoolArray, BoolArray]:
    """Zone airflows scaled so each running AHU stays within [min fraction, 1] of its design.

    Below its minimum the fan cannot turn down further, so the zones served take more air; above
    design it cannot deliver more, so every zone gets its share.
    """
    z, a = p.zones, p.ahus
    total = np.bincount(z.ahu, weights=airflow, minlength=a.n)
    on = total > 0.0
    target = np.clip(total, a.min_fraction * a.design_airflow_m3s, a.design_airflow_m3s)
    scale = np.where(on, target / np.where(on, total, 1.0), 0.0)
    row_scale = scale[z.ahu]
    scaled = (airflow > 0.0) & (np.abs(row_scale - 1.0) > 1e-9)
    airflow = np.minimum(airflow * row_scale, z.airflow_max_m3s)
    # bincount with weights gives float64; its stubs say intp.
    delivered = np.bincount(z.ahu, weights=airflow, minlength=a.n).astype(np.float64, copy=False)
    return airflow, delivered, on, scaled


def _learn_recovery_rates(
    s: ZoneState,
    *,
    mode: Int8Array,
    unpopulated_s: FloatArray,
    t: FloatArray,
    t_ok: BoolArray,
    occ_heat: FloatArray,
    occ_cool: FloatArray,
    dt: float,
    ahu_t_max_c: FloatArray,
) -> ZoneState:
    """Optimal start learns how fast each zone warms and cools (MBL OptimalStart.mo).

    An episode starts with warm-up (cool-down) and ends when the occupied setpoint is reached or
    after tOptMax; its mean rate updates an average weighted like the last nDay days.
    """
    in_warm = mode == _WARM_UP
    in_cool = mode == _COOL_DOWN
    heat_rate, warm_t0, warm_s = _episode(
        s.heat_rate_k_s, s.warm_t0_c, s.warm_s,
        starting=in_warm, target=occ_heat, sign=1.0, t=t, t_ok=t_ok, mode=mode, dt=dt,
    )  # fmt: skip
    cool_rate, cool_t0, cool_s = _episode(
        s.cool_rate_k_s, s.cool_t0_c, s.cool_s,
        starting=in_cool, target=occ_cool, sign=-1.0, t=t, t_ok=t_ok, mode=mode, dt=dt,
    )  # fmt: skip
    return ZoneState(
        mode, unpopulated_s, heat_rate, cool_rate, warm_t0, warm_s, cool_t0, cool_s, ahu_t_max_c
    )


_MIN_RATE_K_S = 0.1 / 3600.0  # a zone that barely moves still gets a finite, slow rate
# No radiator or beam changes a room faster than this: a faster "episode" is a sensor glitch.
_MAX_RATE_K_S = 20.0 / 3600.0


def _episode(
    rate: FloatArray,
    t0: FloatArray,
    elapsed: FloatArray,
    *,
    starting: BoolArray,
    t: FloatArray,
    t_ok: BoolArray,
    target: FloatArray,
    sign: float,
    mode: Int8Array,
    dt: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Advance one kind of recovery episode; returns (rate, start temperature, elapsed)."""
    running = np.isfinite(t0)
    if not (running.any() or starting.any()):
        return rate, t0, elapsed  # nothing to learn this step: most of the time
    start = starting & ~running & t_ok
    t0 = np.where(start, t, t0)
    running = running | start
    elapsed = np.where(running, elapsed + np.where(start, 0.0, dt), 0.0)
    progress = sign * (t - t0)
    reached = running & t_ok & (sign * (t - target) >= 0.0) & (elapsed > 0.0)
    timed_out = running & (elapsed >= OPT_START_MAX_S)
    # Abandon an episode the zone left for another reason (back to unoccupied, sensor lost).
    keep = (mode == _OCCUPIED) | (mode == _STANDBY) | starting
    aborted = running & ~reached & ~timed_out & (~keep | ~t_ok)
    done = (reached | timed_out) & t_ok
    sample = np.where(done, progress, 0.0) / np.maximum(elapsed, dt)
    sample = np.fmin(np.fmax(sample, _MIN_RATE_K_S), _MAX_RATE_K_S)  # NaN → the slow end
    rate = np.where(done, rate + (sample - rate) / OPT_START_DAYS, rate)
    finished = done | aborted | (timed_out & ~t_ok)
    t0 = np.where(finished, np.nan, t0)
    elapsed = np.where(finished, 0.0, elapsed)
    return rate, t0, elapsed


def enforce_limits(c: Commands, p: Params) -> Commands:
    """The last line of defence: every command inside its configured limits, whatever came before.

    A missing (NaN) value becomes the safe end of its range (heating at its low limit, cooling at
    its high limit, no airflow, the warmest allowed supply air), never NaN.
    """
    z, a = p.zones, p.ahus
    # fmax/fmin ignore NaN: a missing value lands on the named bound.
    t_heat = np.fmin(np.fmax(c.t_heat_c, z.heat_lo_c), z.heat_hi_c)
    t_cool = np.fmax(np.fmin(c.t_cool_c, z.cool_hi_c), z.cool_lo_c)
    # Keep the deadband where the limits allow it; the limits win where they do not.
    t_heat = np.maximum(np.minimum(t_heat, t_cool - MIN_DEADBAND_K), z.heat_lo_c)
    airflow = np.fmin(np.fmax(c.airflow_m3s, 0.0), z.airflow_max_m3s)
    ahu_airflow = np.fmin(np.fmax(c.ahu_airflow_m3s, 0.0), a.design_airflow_m3s)
    ahu_supply = np.fmax(np.fmin(c.ahu_supply_c, a.supply_t_max_c), a.supply_t_min_c)
    return Commands(c.mode, t_heat, t_cool, airflow, c.reason, c.ahu_on, ahu_airflow, ahu_supply)
