"""The control law: modes, setpoints and airflow for every zone at once; AHUs follow their zones.

Pure: no clock, no I/O. `step` maps (state, inputs, params) to (state, commands) over arrays with
one row per zone; NaN (or any non-finite value) in an input means "missing" and is handled by a
fail-safe, never passed through to a command.

One source, two backends. The per-zone logic is written once, in three elementwise stages over
`xp`: `zone_demand` (each zone on its own), `ahu_update` (each AHU from its zones' sums) and
`zone_settle` (each zone with its AHU's answer). A stage takes rows: NamedTuples whose fields are
arrays over every zone, or scalars of one zone. `step` runs the stages with `xp = numpy` on
arrays: plain vectorized numpy, as on a gateway. The simulator compiles the very same functions
with numba against a scalar `xp` and calls them zone by zone inside one fused loop
(sim/fused.py). So the stages use only what both backends have: arithmetic, comparisons,
`& | ~` on booleans, and the `xp` functions listed in sim/fused.py; no indexing, no masks, no
Python `if` on values.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import NamedTuple

import numpy as np
import numpy as xp  # the backend of the elementwise stages; see the module docstring
import numpy.typing as npt

from controller.params import AhuParams, Params, ZoneParams, adaptive_band_mid_c
from sensors.arrays import BoolArray, Elem, FloatArray, Int8Array


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


# Plain ints for array code: reading an Enum member costs a microsecond each time, and numba
# compiles module-level ints as constants.
_OCCUPIED, _COOL_DOWN, _SETUP, _WARM_UP, _SETBACK, _FREEZE, _UNOCCUPIED, _STANDBY = (
    int(m) for m in Mode
)
(
    _R_SCHEDULE, _R_OCCUPANCY, _R_CO2, _R_COOLING, _R_STANDBY, _R_PURGE, _R_WARM_UP,
    _R_COOL_DOWN, _R_SETBACK, _R_FREEZE, _R_FAILSAFE, _R_OVERRIDE, _R_AHU_LIMIT,
) = (int(r) for r in Reason)  # fmt: skip

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


class Inputs(NamedTuple):
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


class ZoneState(NamedTuple):
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


class Commands(NamedTuple):
    """What the core asks of the building. Zone arrays (n_zones,), AHU arrays (n_ahus,)."""

    mode: Int8Array
    t_heat_c: FloatArray  # heating setpoint
    t_cool_c: FloatArray  # cooling setpoint
    airflow_m3s: FloatArray  # zone supply (outdoor) airflow setpoint
    reason: npt.NDArray[np.int32]  # Reason flags
    ahu_on: BoolArray
    ahu_airflow_m3s: FloatArray
    ahu_supply_c: FloatArray  # supply air temperature setpoint


class Demand(NamedTuple):
    """Stage 1, per zone: what the zone asks for before its AHU answers."""

    mode: Elem  # Mode code
    t_heat_c: Elem  # setpoints before limits
    t_cool_c: Elem
    airflow_m3s: Elem  # requested airflow before the AHU's fan range
    requests: Elem  # cooling requests for the supply air Trim & Respond (0-3)
    reason: Elem  # Reason flags but AHU_LIMIT
    unpopulated_s: Elem
    occ_heat_c: Elem  # occupied setpoints: the targets of warm-up and cool-down
    occ_cool_c: Elem
    t_c: Elem  # the zone temperature, NaN when missing or implausible


class AhuAnswer(NamedTuple):
    """Stage 2, per AHU."""

    on: Elem
    scale: Elem  # factor on its zones' airflow to stay within the fan's range
    t_max_c: Elem  # new Trim & Respond variable
    supply_c: Elem  # supply air temperature setpoint, within limits


class Settled(NamedTuple):
    """Stage 3, per zone: the final command and the learned state."""

    airflow_m3s: Elem
    t_heat_c: Elem
    t_cool_c: Elem
    reason: Elem
    heat_rate_k_s: Elem
    warm_t0_c: Elem
    warm_s: Elem
    cool_rate_k_s: Elem
    cool_t0_c: Elem
    cool_s: Elem


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
_MIN_RATE_K_S = 0.1 / 3600.0  # a zone that barely moves still gets a finite, slow rate
# No radiator or beam changes a room faster than this: a faster "episode" is a sensor glitch.
_MAX_RATE_K_S = 20.0 / 3600.0


def _plausible_c(t: Elem) -> Elem:
    """Temperatures no room or air stream can have are missing readings, not numbers."""
    return xp.where(xp.abs(t) <= PLAUSIBLE_C, t, xp.nan)


def _clip01(x: Elem) -> Elem:
    return xp.minimum(xp.maximum(x, 0.0), 1.0)


def comfort_band(p: Params, t_out_24h_c: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Operative temperature band of each zone's comfort class, (n_zones,) low and high in °C."""
    return _band(p.zones, t_out_24h_c)


def _band(z: ZoneParams, t_out_24h_c: Elem) -> tuple[Elem, Elem]:
    # A missing 24 h mean reads as 0 °C (fmax ignores NaN): the winter end of the adaptive band.
    mid = z.band_weight * adaptive_band_mid_c(xp.fmax(t_out_24h_c, 0.0))
    return mid + z.band_low_offset_c, mid + z.band_high_offset_c


def zone_demand(z: ZoneParams, u: Inputs, s: ZoneState) -> tuple[Elem, ...]:
    """Stage 1: a zone's mode, setpoints, requested airflow and cooling requests (a Demand)."""
    dt = u.dt_s
    t = _plausible_c(u.t_zone_c)
    t_supply = _plausible_c(u.t_supply_c)
    t_ok = xp.isfinite(t)
    co2_in = u.co2_ppm
    co2_ok = xp.isfinite(co2_in)
    occupancy = u.occupancy
    use_occupancy = z.use_occupancy
    co2_loop = z.co2_loop
    demand_control = z.demand_control
    occ_ok = xp.isfinite(occupancy) & use_occupancy
    populated = occ_ok & (occupancy >= POPULATED_PERSONS)
    unpopulated_s = xp.where(populated | ~occ_ok, 0.0, s.unpopulated_s + dt)

    # Occupied setpoints sit inside the comfort band, keeping G36's minimum deadband.
    band_lo, band_hi = _band(z, u.t_out_24h_c)
    margin = xp.minimum(
        xp.maximum(0.5 * (band_hi - band_lo - MIN_DEADBAND_K), 0.0), COMFORT_MARGIN_K
    )
    occ_heat = band_lo + margin
    occ_cool = band_hi - margin

    # --- modes (G36 §5.1 zone group modes, applied per zone) ---
    scheduled = u.scheduled
    override = populated & ~scheduled
    occupied = scheduled | override
    standby = occupied & occ_ok & (unpopulated_s >= STANDBY_AFTER_S)
    freeze = t_ok & ((t < FREEZE_ON_C) | ((s.mode == _FREEZE) & (t < FREEZE_OFF_C)))
    heat_gap = xp.where(t_ok, occ_heat - t, xp.inf)  # unknown temperature: assume the worst
    cool_gap = xp.where(t_ok, t - occ_cool, -xp.inf)
    t_opt_heat = xp.minimum(xp.maximum(heat_gap, 0.0) / s.heat_rate_k_s, OPT_START_MAX_S)
    t_opt_cool = xp.minimum(xp.maximum(cool_gap, 0.0) / s.cool_rate_k_s, OPT_START_MAX_S)
    to_open = u.time_to_open_s
    resting = ~occupied & z.optimal_start
    warm = resting & (heat_gap > OPT_START_U_HIGH_K) & (to_open <= t_opt_heat)
    cool = resting & ~warm & (cool_gap > OPT_START_U_HIGH_K) & (to_open <= t_opt_cool)
    unocc_heat = z.unocc_heat_c
    unocc_cool = z.unocc_cool_c
    mode = xp.where(
        freeze, _FREEZE,
        xp.where(standby, _STANDBY,
        xp.where(occupied, _OCCUPIED,
        xp.where(warm, _WARM_UP,
        xp.where(cool, _COOL_DOWN,
        xp.where(t_ok & (t > unocc_cool), _SETUP,
        xp.where(t_ok & (t < unocc_heat), _SETBACK, _UNOCCUPIED)))))),
    )  # fmt: skip

    # --- setpoints (G36 §5.3: occupied setpoints in occupied, warm-up and cool-down) ---
    use_occ_setpoints = occupied | warm | cool | freeze | ~z.setback
    # G36 relaxes by 0.5 K in standby; ilma lets an empty zone drift to its band's edge, not out.
    relax = xp.where(standby & ~freeze, xp.minimum(z.standby_relax_k, margin), 0.0)
    t_heat = xp.where(use_occ_setpoints, occ_heat, unocc_heat) - relax
    t_cool = xp.where(use_occ_setpoints, occ_cool, unocc_cool) + relax

    # --- ventilation (ASHRAE 62.1 Vbz = Rp·Pz + Ra·Az; G36 §5.2.1.3 CO2 loop) ---
    ez = z.ez
    airflow_max = z.airflow_max_m3s
    v_area = z.ra_m3s * z.area_m2
    # Population: the estimate; the design occupancy when the estimate is missing, unless the
    # CO2 loop is there to find the people (CO2-only control).
    failsafe = ~occ_ok & (use_occupancy | ~(co2_loop & co2_ok))
    people = xp.where(
        failsafe, z.design_occupancy, xp.where(occ_ok, xp.maximum(occupancy, 0.0), 0.0)
    )
    co2 = xp.where(co2_ok, co2_in, 0.0)
    limit = z.co2_limit_ppm
    u_co2 = xp.where(co2_loop, _clip01((co2 - (limit - CO2_BAND_PPM)) / CO2_BAND_PPM), 0.0)
    v_co2 = v_area + u_co2 * xp.maximum(airflow_max * ez - v_area, 0.0)
    v_occupied = xp.maximum(v_area + z.rp_m3s * people, v_co2) / ez
    co2_out_in = u.co2_out_ppm
    co2_out = xp.where(xp.isfinite(co2_out_in), co2_out_in, xp.inf)
    u_purge = _clip01((co2 - co2_out - PURGE_ABOVE_OUTDOOR_PPM) / PURGE_BAND_PPM)
    v_standby = xp.maximum(u_co2 * airflow_max, u_purge * v_area / ez)
    # VAV cooling: more air when the zone warms towards its cooling setpoint and the supply air
    # can actually cool it.
    free_cooling = t_ok & (t - t_supply > FREE_COOLING_MIN_DT_K)  # False if either is NaN
    u_cool = xp.where(
        free_cooling & demand_control,
        _clip01((t - (t_cool - COOLING_BAND_K)) / COOLING_BAND_K),
        0.0,
    )
    v_cool = u_cool * airflow_max
    airflow = xp.where(
        standby,
        xp.maximum(v_standby, v_cool),
        xp.where(
            demand_control,
            xp.maximum(xp.maximum(v_occupied, v_cool), z.airflow_min_m3s),
            z.design_airflow_m3s,
        ),
    )
    airflow = xp.where(occupied, airflow, xp.where(cool, v_cool, 0.0))

    # A zone asks for colder supply air (G36 §5.6.8.1, simplified to temperatures): one request
    # within 0.2 K of its cooling setpoint, two at 2 K above it, three at 3 K above it.
    requests = occupied * (
        1.0 * (t > t_cool - 0.2) + 1.0 * (t > t_cool + 2.0) + 1.0 * (t > t_cool + 3.0)
    )
    reason = (
        scheduled * _R_SCHEDULE
        + (occupied & occ_ok & ~standby) * _R_OCCUPANCY
        + (occupied & (u_co2 > 0.0)) * _R_CO2
        + ((occupied | cool) & (u_cool > 0.0)) * _R_COOLING
        + standby * _R_STANDBY
        + (standby & (u_purge > 0.0)) * _R_PURGE
        + warm * _R_WARM_UP
        + cool * _R_COOL_DOWN
        + (~use_occ_setpoints) * _R_SETBACK
        + freeze * _R_FREEZE
        + (occupied & ~standby & failsafe & demand_control) * _R_FAILSAFE
        + override * _R_OVERRIDE
    )
    return (
        mode, t_heat, t_cool, airflow, requests, reason, unpopulated_s, occ_heat, occ_cool, t,
    )  # fmt: skip


def ahu_update(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    a: AhuParams, total_m3s: Elem, requests: Elem, t_max_c: Elem, t_out_c: Elem, dt: float
) -> tuple[Elem, ...]:
    """Stage 2: an AHU from its zones' total airflow and cooling requests (an AhuAnswer); the
    arrays are per AHU (t_out_c: the outdoor temperature at each AHU).

    Below its minimum the fan cannot turn down further, so the zones served take more air; above
    design it cannot deliver more, so every zone gets its share. The supply air temperature
    follows G36 Trim & Respond on the zones' requests, then the outdoor-air reset.
    """
    design = a.design_airflow_m3s
    total = total_m3s
    on = total > 0.0
    target = xp.minimum(xp.maximum(total, a.min_fraction * design), design)
    scale = xp.where(on, target / xp.where(on, total, 1.0), 0.0)
    t_lo, t_hi = a.supply_t_min_c, a.supply_t_max_c
    extra = requests - TR_IGNORE_REQUESTS
    change = xp.where(extra > 0.0, xp.maximum(TR_RESPOND_K * extra, TR_RESPOND_MAX_K), TR_TRIM_K)
    t_max = xp.minimum(xp.maximum(t_max_c + change * (dt / TR_PERIOD_S), t_lo), t_hi)
    # Outdoor reset: T-max at 16 °C outdoor and below, the minimum at 21 °C and above; fmax/fmin
    # drop NaN, so an unknown outdoor temperature keeps the warmest supply air.
    f = xp.fmin(
        xp.fmax((t_out_c - OAT_RESET_LOW_C) / (OAT_RESET_HIGH_C - OAT_RESET_LOW_C), 0.0), 1.0
    )
    supply = xp.where(a.supply_reset, t_max - f * (t_max - t_lo), a.supply_t_design_c)
    supply = xp.fmax(xp.fmin(supply, t_hi), t_lo)
    return on, scale, t_max, supply


def zone_settle(z: ZoneParams, s: ZoneState, d: Demand, scale: Elem, dt: float) -> tuple[Elem, ...]:
    """Stage 3: a zone's final command within its limits, and what optimal start learned."""
    requested = d.airflow_m3s
    airflow_max = z.airflow_max_m3s
    airflow = xp.minimum(requested * scale, airflow_max)
    scaled = (requested > 0.0) & (xp.abs(scale - 1.0) > 1e-9)
    reason = d.reason + scaled * _R_AHU_LIMIT
    # The last line of defence: every command inside its configured limits; fmax/fmin ignore
    # NaN, so a missing value lands on the safe bound (heating low, cooling high, no air).
    heat_lo, cool_hi = z.heat_lo_c, z.cool_hi_c
    t_heat = xp.fmin(xp.fmax(d.t_heat_c, heat_lo), z.heat_hi_c)
    t_cool = xp.fmax(xp.fmin(d.t_cool_c, cool_hi), z.cool_lo_c)
    # Keep the deadband where the limits allow it; the limits win where they do not.
    t_heat = xp.maximum(xp.minimum(t_heat, t_cool - MIN_DEADBAND_K), heat_lo)
    airflow = xp.fmin(xp.fmax(airflow, 0.0), airflow_max)

    # Optimal start learns how fast each zone warms and cools (MBL OptimalStart.mo).
    mode, t = d.mode, d.t_c
    heat = _episode(
        s.heat_rate_k_s, s.warm_t0_c, s.warm_s, mode == _WARM_UP,
        t, d.occ_heat_c, 1.0, mode, dt,
    )  # fmt: skip
    cool = _episode(
        s.cool_rate_k_s, s.cool_t0_c, s.cool_s, mode == _COOL_DOWN,
        t, d.occ_cool_c, -1.0, mode, dt,
    )  # fmt: skip
    return (airflow, t_heat, t_cool, reason, *heat, *cool)


def _episode(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    rate: Elem, t0: Elem, elapsed: Elem, starting: Elem, t: Elem, target: Elem, sign: float,
    mode: Elem, dt: float,
) -> tuple[Elem, Elem, Elem]:  # fmt: skip
    """One recovery episode: starts with warm-up (cool-down), ends when the occupied setpoint is
    reached or after tOptMax; its mean rate updates an average weighted like the last nDay days.
    Returns (rate, start temperature, elapsed)."""
    t_ok = xp.isfinite(t)
    running = xp.isfinite(t0)
    start = starting & ~running & t_ok
    t0 = xp.where(start, t, t0)
    running = running | start
    elapsed = xp.where(running, elapsed + xp.where(start, 0.0, dt), 0.0)
    progress = sign * (t - t0)
    reached = running & t_ok & (sign * (t - target) >= 0.0) & (elapsed > 0.0)
    timed_out = running & (elapsed >= OPT_START_MAX_S)
    # Abandon an episode the zone left for another reason (back to unoccupied, sensor lost).
    keep = (mode == _OCCUPIED) | (mode == _STANDBY) | starting
    aborted = running & ~reached & ~timed_out & (~keep | ~t_ok)
    done = (reached | timed_out) & t_ok
    sample = xp.where(done, progress, 0.0) / xp.maximum(elapsed, dt)
    sample = xp.fmin(xp.fmax(sample, _MIN_RATE_K_S), _MAX_RATE_K_S)  # NaN → the slow end
    rate = xp.where(done, rate + (sample - rate) / OPT_START_DAYS, rate)
    finished = done | aborted | (timed_out & ~t_ok)
    return rate, xp.where(finished, xp.nan, t0), xp.where(finished, 0.0, elapsed)


def step(state: ZoneState, u: Inputs, p: Params) -> tuple[ZoneState, Commands]:
    """One control step for all zones and AHUs: the three stages over numpy arrays."""
    z, a = p.zones, p.ahus
    d = Demand(*zone_demand(z, u, state))
    total = np.bincount(z.ahu, weights=d.airflow_m3s, minlength=a.n)
    requests = np.bincount(z.ahu, weights=d.requests, minlength=a.n)
    h = AhuAnswer(
        *ahu_update(a, total, requests, state.ahu_t_max_c, u.t_out_c[a.first_zone], u.dt_s)
    )
    f = Settled(*zone_settle(z, state, d, h.scale[z.ahu], u.dt_s))
    ahu_airflow = np.minimum(
        np.bincount(z.ahu, weights=f.airflow_m3s, minlength=a.n), a.design_airflow_m3s
    )
    mode = d.mode.astype(np.int8)
    new_state = ZoneState(
        mode, d.unpopulated_s, f.heat_rate_k_s, f.cool_rate_k_s, f.warm_t0_c, f.warm_s,
        f.cool_t0_c, f.cool_s, h.t_max_c,
    )  # fmt: skip
    commands = Commands(
        mode, f.t_heat_c, f.t_cool_c, f.airflow_m3s, f.reason.astype(np.int32), h.on,
        ahu_airflow, h.supply_c,
    )  # fmt: skip
    return new_state, commands


def enforce_limits(c: Commands, p: Params) -> Commands:
    """Every command inside its configured limits, whatever produced it (for commands that did
    not come from `step`, e.g. received over the wire). NaN lands on the safe bound."""
    z, a = p.zones, p.ahus
    t_heat = np.fmin(np.fmax(c.t_heat_c, z.heat_lo_c), z.heat_hi_c)
    t_cool = np.fmax(np.fmin(c.t_cool_c, z.cool_hi_c), z.cool_lo_c)
    t_heat = np.maximum(np.minimum(t_heat, t_cool - MIN_DEADBAND_K), z.heat_lo_c)
    airflow = np.fmin(np.fmax(c.airflow_m3s, 0.0), z.airflow_max_m3s)
    ahu_airflow = np.fmin(np.fmax(c.ahu_airflow_m3s, 0.0), a.design_airflow_m3s)
    ahu_supply = np.fmax(np.fmin(c.ahu_supply_c, a.supply_t_max_c), a.supply_t_min_c)
    return Commands(c.mode, t_heat, t_cool, airflow, c.reason, c.ahu_on, ahu_airflow, ahu_supply)
