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

from dataclasses import dataclass

import numpy as np

from sensors.arrays import BoolArray, FloatArray, IntArray

RHO_CP_J_M3K = 1.2 * 1005.0  # air density × specific heat at ~20 °C (ISO 13790 uses 1200 J/m³K)
H_IS_W_M2K = 3.45  # ISO 13790 §7.2.2.2: air-surface heat transfer coefficient
H_MS_W_M2K = 9.1  # ISO 13790 §12.2.2: mass-surface heat transfer coefficient
LAMBDA_AT = 4.5  # ISO 13790 §7.2.2.2: ratio of internal surface area to floor area
SUPPLY_FAN_SHARE = 0.5  # of total fan power; its heat ends up in the supply air
GLAZED_FRACTION = 0.75  # window area that is glass, not frame (ISO 13790 F_F = 0.25)
PEOPLE_CONVECTIVE = 0.5  # ISO 13790 Annex C: half the internal gains to the air node
OP_AIR = 0.3  # ISO 13790 eq. C.11: θ_op = 0.3·θ_air + 0.7·θ_s


@dataclass(frozen=True, slots=True)
class ZonePlant:
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


@dataclass(frozen=True, slots=True)
class AhuPlant:
    """Per AHU row. Every field (n_ahus,)."""

    design_airflow_m3s: FloatArray
    fan_power_design_w: FloatArray  # SFP × design airflow
    fan_exponent: FloatArray
    hr_effectiveness: FloatArray
    has_cooling: BoolArray
    heating_efficiency: FloatArray  # delivered heat / purchased energy
    cooling_cop: FloatArray


@dataclass(frozen=True, slots=True)
class PlantState:
    theta_m_c: FloatArray  # (n,) mass node temperature
    theta_air_c: FloatArray  # (n,) air temperature (mean over the last step)
    theta_s_c: FloatArray  # (n,) surface temperature (mean over the last step)
    co2_ppm: FloatArray  # (n,) at the end of the last step


@dataclass(frozen=True, slots=True)
class Drive:
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


@dataclass(frozen=True, slots=True)
class Flows:
    """Step-mean heat flows and powers, W. Zone arrays (n,), AHU arrays (n_ahus,)."""

    zone_heating_w: FloatArray
    zone_cooling_w: FloatArray
    gains_w: FloatArray  # people, equipment and sun
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


def ahu_step(
    zone_airflow: FloatArray, theta_air: FloatArray, zp: ZonePlant, ap: AhuPlant, d: Drive
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Supply air of every AHU for the step.

    Returns (airflow, supply temperature, fan power, heating coil, cooling coil, heat recovered),
    each (n_ahus,), powers in W.
    """
    n_ahu = ap.design_airflow_m3s.shape[0]
    q = np.bincount(zp.ahu, weights=zone_airflow, minlength=n_ahu).astype(np.float64, copy=False)
    on = q > 0.0
    q_safe = np.where(on, q, 1.0)
    t_extract = np.bincount(zp.ahu, weights=zone_airflow * theta_air, minlength=n_ahu) / q_safe
    fan_w = np.where(
        on, ap.fan_power_design_w * (q / ap.design_airflow_m3s) ** ap.fan_exponent, 0.0
    )
    m_cp = RHO_CP_J_M3K * q_safe
    fan_rise = SUPPLY_FAN_SHARE * fan_w / m_cp
    target = d.ahu_supply_c - fan_rise  # what the coils must deliver before the supply fan
    t_out = d.ahu_t_out_c
    t_hr_full = t_out + ap.hr_effectiveness * (t_extract - t_out)
    # Heat recovery with bypass: as close to the target as the exchanger allows, never beyond.
    t_hr = np.clip(target, np.minimum(t_out, t_hr_full), np.maximum(t_out, t_hr_full))
    heat_w = np.where(on, m_cp * np.maximum(target - t_hr, 0.0), 0.0)
    cool_w = np.where(on & ap.has_cooling, m_cp * np.maximum(t_hr - target, 0.0), 0.0)
    t_coil = np.where(ap.has_cooling, target, np.maximum(target, t_hr))
    supply = np.where(on, t_coil + fan_rise, d.ahu_supply_c)
    hr_w = np.where(on, m_cp * (t_hr - t_out), 0.0)
    return q, supply, fan_w, heat_w, cool_w, hr_w


def step(
    s: PlantState, d: Drive, zp: ZonePlant, ap: AhuPlant, dt_s: float
) -> tuple[PlantState, Flows]:
    """Advance every zone and AHU by one step of dt_s seconds with constant inputs."""
    q_zone = np.maximum(d.airflow_m3s, 0.0)
    q_ahu, t_sup_ahu, fan_w, coil_h, coil_c, hr_w = ahu_step(q_zone, s.theta_air_c, zp, ap, d)
    t_sup = t_sup_ahu[zp.ahu]
    t_e = d.t_out_c

    # Ventilation: supply air and infiltration mixed into one equivalent supply temperature.
    q_total = q_zone + zp.infiltration_m3s
    h_ve = RHO_CP_J_M3K * q_total
    theta_sup = (q_zone * t_sup + zp.infiltration_m3s * t_e) / q_total

    # Gains split over the nodes (ISO 13790 eqs. C.1-C.3).
    phi_int = (
        zp.sensible_w_per_person * np.maximum(d.people, 0.0)
        + zp.equipment_w_m2 * zp.area_m2 * d.equipment_on
    )
    phi_sol = zp.solar_aperture_m2 * d.solar_wm2
    phi_ia = PEOPLE_CONVECTIVE * phi_int
    rest = (1.0 - PEOPLE_CONVECTIVE) * phi_int + phi_sol
    phi_m = zp.a_m_over_a_t * rest
    phi_st = (1.0 - zp.a_m_over_a_t - zp.h_win_over_h_ms_a_t) * rest

    # ISO 13790 eqs. C.4-C.10 with C_m/3600 generalized to C_m/dt.
    h_tr_1 = 1.0 / (1.0 / h_ve + 1.0 / zp.h_tr_is)
    h_tr_2 = h_tr_1 + zp.h_tr_w
    h_tr_3 = 1.0 / (1.0 / h_tr_2 + 1.0 / zp.h_tr_ms)
    c_dt = zp.c_m_j_k / dt_s
    half = 0.5 * (h_tr_3 + zp.h_tr_em)
    theta_m0 = s.theta_m_c
    base_m_tot = phi_m + zp.h_tr_em * t_e + h_tr_3 * (phi_st + zp.h_tr_w * t_e) / h_tr_2
    sum_s = zp.h_tr_ms + zp.h_tr_w + h_tr_1
    denom_air = zp.h_tr_is + h_ve

    def solve(phi_hc: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(θ_m at step end, θ_s and θ_air step means) for a convective heating power phi_hc."""
        phi_air = phi_ia + phi_hc
        m_tot = base_m_tot + h_tr_3 * h_tr_1 * (phi_air / h_ve + theta_sup) / h_tr_2
        theta_m1 = (theta_m0 * (c_dt - half) + m_tot) / (c_dt + half)
        theta_m = 0.5 * (theta_m0 + theta_m1)
        theta_s = (
            zp.h_tr_ms * theta_m + phi_st + zp.h_tr_w * t_e + h_tr_1 * (theta_sup + phi_air / h_ve)
        ) / sum_s
        theta_air = (zp.h_tr_is * theta_s + h_ve * theta_sup + phi_air) / denom_air
        return theta_m1, theta_s, theta_air

    # Everything is affine in the heating power: two solutions give all (ISO 13790 §C.4.2).
    probe = 10.0 * zp.area_m2
    m0, s0, a0 = solve(np.zeros_like(probe))
    m10, s10, a10 = solve(probe)
    # The local loops (radiator valves, chilled beams) hold the operative temperature that a
    # room sensor on an interior wall reads, between the heating and cooling setpoints.
    op0 = OP_AIR * a0 + (1.0 - OP_AIR) * s0
    per_w = (OP_AIR * (a10 - a0) + (1.0 - OP_AIR) * (s10 - s0)) / probe  # K per W
    need_heat = np.clip((d.t_heat_c - op0) / per_w, 0.0, zp.heat_cap_w)
    need_cool = np.clip((op0 - d.t_cool_c) / per_w, 0.0, zp.cool_cap_w)
    phi_hc = need_heat - need_cool
    f = phi_hc / probe
    theta_m1 = m0 + f * (m10 - m0)
    theta_s = s0 + f * (s10 - s0)
    theta_air = a0 + f * (a10 - a0)

    # CO2: exact over the step; (1 − e^(−a))/a → 1 as the air change a = Q·dt/V → 0.
    a = q_total * dt_s / zp.volume_m3
    phi = np.where(a > 1e-12, -np.expm1(-a) / np.maximum(a, 1e-12), 1.0)
    source = 1e6 * zp.co2_gen_m3s * np.maximum(d.people, 0.0)
    co2 = s.co2_ppm + (q_total * (d.co2_out_ppm - s.co2_ppm) + source) * (dt_s / zp.volume_m3) * phi

    theta_m_mean = 0.5 * (theta_m0 + theta_m1)
    flows = Flows(
        zone_heating_w=need_heat,
        zone_cooling_w=need_cool,
        gains_w=phi_int + phi_sol,
        ventilation_w=h_ve * (theta_sup - theta_air),
        transmission_w=zp.h_tr_w * (t_e - theta_s) + zp.h_tr_em * (t_e - theta_m_mean),
        ahu_airflow_m3s=q_ahu,
        ahu_supply_c=t_sup_ahu,
        fan_w=fan_w,
        coil_heating_w=coil_h,
        coil_cooling_w=coil_c,
        heat_recovery_w=hr_w,
    )
    return PlantState(theta_m1, theta_air, theta_s, co2), flows
