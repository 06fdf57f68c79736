"""The simulated building: ISO 13790 5R1C zones, well-mixed CO2, and AHUs with heat recovery.

Vectorized over zone rows (and AHU rows). Thermal: the ISO 13790 Annex C simple hourly method,
generalized from 3600 s to any step: air and surface nodes are algebraic, the mass node is
integrated with Crank-Nicolson (implicit, A-stable, second order), and ideal local heating and
cooling (radiators, chilled beams) hold the operative temperature between their setpoints within
their capacity (ISO 13790 §C.4 holds the air temperature; comfort is judged on operative).
CO2: the exact solution of V·dC/dt = Q·(C_out − C) + 1e6·n·G over a step with constant inputs.
AHUs: 100 % outdoor air, heat recovery with bypass, heating and cooling coils, supply fan heat,
fan power P = P_design·(Q/Q_design)^n.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from sensors.arrays import BoolArray, FloatArray, IntArray

RHO_CP_J_M3K = 1.2 * 1005.0  # air density × specific heat at ~20 °C (ISO 13790 uses 1200 J/m³K)
H_IS_W_M2K = 3.45  # ISO 13790 §7.2.2.2: air-surface heat transfer coefficient
H_MS_W_M2K = 9.1  # ISO 13790 §12.2.2: mass-surface heat transfer coefficient
LAMBDA_AT = 4.5  # ISO 13790 §7.2.2.2: ratio of internal surface area to floor area
SUPPLY_FAN_SHARE = 0.5  # of total fan power; its heat ends up in the supply air
GLAZED_FRACTION = 0.75  # window area that is glass, not frame (ISO 13790 F_F = 0.25)
PEOPLE_CONVECTIVE = 0.5  # ISO 13790 Annex C: half the internal gains to the air node
OP_AIR = 0.3  # ISO 13790 eq. C.11: θ_op = 0.3·θ_air + 0.7·θ_s


class ZonePlant(NamedTuple):
    """Physical constants per zone row. Every field (n,)."""

    area_m2: FloatArray
    volume_m3: FloatArray
    c_m_j_k: FloatArray  # internal heat capacity
    h_tr_w: FloatArray  # windows, W/K
    h_tr_em: FloatArray  # opaque envelope, exterior to mass node, W/K
    h_tr_ms: FloatArray  # mass to surface, W/K
    h_tr_is: FloatArray  # surface to air, W/K
    a_m_over_a_t: FloatArray  # effective mass area / total internal area
    h_win_over_h_ms_a_t: FloatArray  # H_tr,w / (h_ms·A_t)
    solar_aperture_m2: FloatArray  # g × glazed area of the zone's facade
    facade: IntArray  # column of the facade in the weather's solar array
    infiltration_m3s: FloatArray  # actual (the controller only knows its nominal value)
    co2_gen_m3s: FloatArray  # actual CO2 per person (people differ from the textbook value)
    sensible_w_per_person: FloatArray
    equipment_w_m2: FloatArray
    heat_cap_w: FloatArray
    cool_cap_w: FloatArray
    ahu: IntArray


class AhuPlant(NamedTuple):
    """Per AHU row. Every field (n_ahus,)."""

    design_airflow_m3s: FloatArray
    fan_power_design_w: FloatArray  # SFP × design airflow
    fan_exponent: FloatArray
    hr_effectiveness: FloatArray
    has_cooling: BoolArray
    heating_efficiency: FloatArray  # delivered heat / purchased energy
    cooling_cop: FloatArray


class PlantState(NamedTuple):
    theta_m_c: FloatArray  # (n,) mass node temperature
    theta_air_c: FloatArray  # (n,) air temperature (mean over the last step)
    theta_s_c: FloatArray  # (n,) surface temperature (mean over the last step)
    co2_ppm: FloatArray  # (n,) at the end of the last step


class Drive(NamedTuple):
    """What acts on the building during one step. Zone arrays (n,), AHU arrays (n_ahus,)."""

    t_out_c: FloatArray  # (n,) outdoor temperature seen by each zone row
    solar_wm2: FloatArray  # (n,) irradiance on the zone's facade
    co2_out_ppm: FloatArray  # (n,)
    people: FloatArray  # (n,) true occupancy
    equipment_on: FloatArray  # (n,) 0..1 fraction of lights and plug loads on
    airflow_m3s: FloatArray  # (n,) supply airflow delivered by the VAV box
    t_heat_c: FloatArray  # (n,) local heating setpoint (operative)
    t_cool_c: FloatArray  # (n,) local cooling setpoint (operative)
    ahu_supply_c: FloatArray  # (n_ahus,) supply temperature setpoint
    ahu_t_out_c: FloatArray  # (n_ahus,) outdoor temperature at the AHU intake


class Flows(NamedTuple):
    """Step-mean heat flows and powers, W. Zone arrays (n,), AHU arrays (n_ahus,)."""

    zone_heating_w: FloatArray
    zone_cooling_w: FloatArray
    gains_w: FloatArray  # people, equipment and sun that enter the zone (ISO 13790 lets the
    # radiative share H_tr,w/(h_ms·A_t) of them leave through the windows at once)
    ventilation_w: FloatArray  # H_ve·(θ_sup − θ_air): what supply air and infiltration bring
    transmission_w: FloatArray  # through windows and the opaque envelope
    ahu_airflow_m3s: FloatArray
    ahu_supply_c: FloatArray
    fan_w: FloatArray
    coil_heating_w: FloatArray
    coil_cooling_w: FloatArray
    heat_recovery_w: FloatArray


def initial_plant_state(n: int, t_c: float, co2_ppm: float) -> PlantState:
    return PlantState(
        theta_m_c=np.full(n, t_c),
        theta_air_c=np.full(n, t_c),
        theta_s_c=np.full(n, t_c),
        co2_ppm=np.full(n, co2_ppm),
    )


def operative_c(s: PlantState) -> FloatArray:
    """ISO 13790 eq. C.11: θ_op = 0.3·θ_air + 0.7·θ_s."""
    return OP_AIR * s.theta_air_c + (1.0 - OP_AIR) * s.theta_s_c


def step(
    s: PlantState, d: Drive, zp: ZonePlant, ap: AhuPlant, dt_s: float
) -> tuple[PlantState, Flows]:
    """Advance every zone and AHU by one step of dt_s seconds with constant inputs."""
    new = PlantState(*(x.copy() for x in s))
    n, na = zp.area_m2.shape[0], ap.design_airflow_m3s.shape[0]
    flows = Flows(*(np.empty(n) for _ in range(5)), *(np.empty(na) for _ in range(6)))
    advance(new, d, zp, ap, float(dt_s), flows)
    return new, flows


# The kernel below is the model: one pass over AHUs' zones to sum their airflow, one per AHU,
# one per zone. numba compiles it to a fused loop; with NUMBA_DISABLE_JIT=1 it runs as Python.
# error_model="numpy": divisions by zero give inf/NaN as numpy's do, without numba's zero test
# and branch before each of the dozen divisions per zone.
@njit(cache=True, error_model="numpy")
def advance(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    s: PlantState, d: Drive, zp: ZonePlant, ap: AhuPlant, dt: float, f: Flows
) -> None:
    """Advance state `s` in place by one step of dt seconds; write the step's flows into `f`."""
    # Each array once out of its tuple: numba then counts no references inside the loops.
    t_out, solar, co2_out, people = d.t_out_c, d.solar_wm2, d.co2_out_ppm, d.people
    equipment_on, airflow, t_heat, t_cool = d.equipment_on, d.airflow_m3s, d.t_heat_c, d.t_cool_c
    ahu_supply_set, ahu_t_out = d.ahu_supply_c, d.ahu_t_out_c
    area, volume, c_m, h_tr_w, h_tr_em = zp.area_m2, zp.volume_m3, zp.c_m_j_k, zp.h_tr_w, zp.h_tr_em
    h_tr_ms, h_tr_is, am_at, hw_hms_at = (
        zp.h_tr_ms,
        zp.h_tr_is,
        zp.a_m_over_a_t,
        zp.h_win_over_h_ms_a_t,
    )
    aperture, infiltration, co2_gen = zp.solar_aperture_m2, zp.infiltration_m3s, zp.co2_gen_m3s
    sensible_pp, equipment_w_m2 = zp.sensible_w_per_person, zp.equipment_w_m2
    heat_cap, cool_cap, ahu = zp.heat_cap_w, zp.cool_cap_w, zp.ahu
    a_design, a_fan_design, a_exponent = (
        ap.design_airflow_m3s,
        ap.fan_power_design_w,
        ap.fan_exponent,
    )
    a_effectiveness, a_has_cooling = ap.hr_effectiveness, ap.has_cooling
    # The extract air of the last step: read below before the zone loop overwrites it, no copy.
    theta_air_prev = s.theta_air_c
    # Unsigned row counts: numba indexes without wrapping negative indices (see sim.kernel).
    n = np.uint64(area.shape[0])
    na = a_design.shape[0]
    q_ahu = f.ahu_airflow_m3s
    q_ahu[:] = 0.0
    q_t_ahu = np.zeros(na)
    for i in range(n):
        q = max(airflow[i], 0.0)
        q_ahu[ahu[i]] += q
        q_t_ahu[ahu[i]] += q * theta_air_prev[i]

    # --- AHUs: heat recovery with bypass, coils, supply fan heat, fan power law ---
    supply = f.ahu_supply_c
    fan_w = f.fan_w
    coil_heat = f.coil_heating_w
    coil_cool = f.coil_cooling_w
    hr_w = f.heat_recovery_w
    for j in range(na):
        q = q_ahu[j]
        fan_w[j] = 0.0
        coil_heat[j] = 0.0
        coil_cool[j] = 0.0
        hr_w[j] = 0.0
        if q <= 0.0:
            supply[j] = ahu_supply_set[j]
            continue
        t_extract = q_t_ahu[j] / q
        fan_w[j] = a_fan_design[j] * (q / a_design[j]) ** a_exponent[j]
        m_cp = RHO_CP_J_M3K * q
        fan_rise = SUPPLY_FAN_SHARE * fan_w[j] / m_cp
        target = ahu_supply_set[j] - fan_rise  # what the coils must deliver before the fan
        te = ahu_t_out[j]
        t_hr_full = te + a_effectiveness[j] * (t_extract - te)
        # As close to the target as the exchanger allows, never beyond: bypass the rest.
        t_hr = min(max(target, min(te, t_hr_full)), max(te, t_hr_full))
        coil_heat[j] = m_cp * max(target - t_hr, 0.0)
        if a_has_cooling[j]:
            coil_cool[j] = m_cp * max(t_hr - target, 0.0)
            t_coil = target
        else:
            t_coil = max(target, t_hr)
        supply[j] = t_coil + fan_rise
        hr_w[j] = m_cp * (t_hr - te)

    # --- zones: ISO 13790 Annex C, C_m/3600 generalized to C_m/dt ---
    # The state is advanced in place, zone by zone: each zone reads only its own old state.
    theta_m1 = s.theta_m_c
    theta_air = s.theta_air_c
    theta_s = s.theta_s_c
    co2 = s.co2_ppm
    heating = f.zone_heating_w
    cooling = f.zone_cooling_w
    gains = f.gains_w
    ventilation = f.ventilation_w
    transmission = f.transmission_w
    inv_dt = 1.0 / dt
    for i in range(n):
        te = t_out[i]
        q_zone = max(airflow[i], 0.0)
        q_total = q_zone + infiltration[i]
        inv_q = 1.0 / q_total
        h_ve = RHO_CP_J_M3K * q_total
        inv_h_ve = 1.0 / h_ve
        # Supply air and infiltration mixed into one equivalent supply temperature.
        theta_sup = (q_zone * supply[ahu[i]] + infiltration[i] * te) * inv_q
        n_people = max(people[i], 0.0)
        # Gains split over the nodes (ISO 13790 eqs. C.1-C.3); the radiative share
        # H_tr,w/(h_ms·A_t) leaves through the windows at once.
        phi_int = sensible_pp[i] * n_people + equipment_w_m2[i] * area[i] * equipment_on[i]
        phi_ia = PEOPLE_CONVECTIVE * phi_int
        rest = (1.0 - PEOPLE_CONVECTIVE) * phi_int + aperture[i] * solar[i]
        phi_m = am_at[i] * rest
        phi_st = (1.0 - am_at[i] - hw_hms_at[i]) * rest
        # Conductances in series, h·h'/(h + h'), one division each.
        h_is, h_ms, h_w, h_em = h_tr_is[i], h_tr_ms[i], h_tr_w[i], h_tr_em[i]
        h1 = h_ve * h_is / (h_ve + h_is)
        h2 = h1 + h_w
        inv_h2 = 1.0 / h2
        h3 = h2 * h_ms / (h2 + h_ms)
        c_dt = c_m[i] * inv_dt
        half = 0.5 * (h3 + h_em)
        inv_cn = 1.0 / (c_dt + half)
        base_m = phi_m + h_em * te + h3 * (phi_st + h_w * te) * inv_h2
        inv_sum_s = 1.0 / (h_ms + h_w + h1)
        inv_air = 1.0 / (h_is + h_ve)
        m0 = theta_m1[i]
        # Everything is affine in the convective heating power phi (ISO 13790 §C.4.2): solve
        # for phi = 0, then for the sensitivity of each node to phi.
        m_tot = base_m + h3 * h1 * (phi_ia * inv_h_ve + theta_sup) * inv_h2
        tm1_0 = (m0 * (c_dt - half) + m_tot) * inv_cn
        tm_0 = 0.5 * (m0 + tm1_0)
        ts_0 = (h_ms * tm_0 + phi_st + h_w * te + h1 * (theta_sup + phi_ia * inv_h_ve)) * inv_sum_s
        ta_0 = (h_is * ts_0 + h_ve * theta_sup + phi_ia) * inv_air
        dtm1 = h3 * h1 * inv_h_ve * inv_h2 * inv_cn  # per W of phi
        dts = (h_ms * 0.5 * dtm1 + h1 * inv_h_ve) * inv_sum_s
        dta = (h_is * dts + 1.0) * inv_air
        # The local loops hold the operative temperature a room sensor reads.
        op_0 = OP_AIR * ta_0 + (1.0 - OP_AIR) * ts_0
        inv_d_op = 1.0 / (OP_AIR * dta + (1.0 - OP_AIR) * dts)
        need_heat = min(max((t_heat[i] - op_0) * inv_d_op, 0.0), heat_cap[i])
        need_cool = min(max((op_0 - t_cool[i]) * inv_d_op, 0.0), cool_cap[i])
        phi = need_heat - need_cool
        theta_m1[i] = tm1_0 + phi * dtm1
        theta_s[i] = ts_0 + phi * dts
        theta_air[i] = ta_0 + phi * dta
        heating[i] = need_heat
        cooling[i] = need_cool
        gains[i] = phi_ia + phi_st + phi_m
        ventilation[i] = h_ve * (theta_sup - theta_air[i])
        transmission[i] = h_w * (te - theta_s[i]) + h_em * (te - 0.5 * (m0 + theta_m1[i]))
        # CO2: exact over the step; (1 − e^(−a))/a → 1 as the air change a = Q·dt/V → 0.
        dt_v = dt / volume[i]
        a = q_total * dt_v
        phi_a = -math.expm1(-a) / a if a > 1e-12 else 1.0
        source = 1e6 * co2_gen[i] * n_people
        c0 = co2[i]
        co2[i] = c0 + (q_total * (co2_out[i] - c0) + source) * dt_v * phi_a
