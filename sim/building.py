"""The plant of a site: zone and AHU physics built from the site model, with honest mismatch.

The controller knows the nominal building (the config). The simulated building differs from it
the way real ones do, drawn once per zone and seed: people emit a little more or less CO2 than the
textbook value, and the envelope leaks more or less than its nominal infiltration rate. Without
that, the CO2 estimator would invert its own model exactly.
"""

from __future__ import annotations

import zlib

import numpy as np

from controller.site import Site
from controller.standards import THERMAL_MASS
from sim.plant import (
    GLAZED_FRACTION,
    H_IS_W_M2K,
    H_MS_W_M2K,
    LAMBDA_AT,
    AhuPlant,
    ZonePlant,
)
from sim.weather import FACADES

# Spread of the mismatch between the real building and its config (1 sigma).
CO2_GENERATION_SPREAD = 0.10  # people's CO2 output varies with age, size and activity (domain §3)
INFILTRATION_SPREAD = 0.30  # lognormal: leakage is uncertain by tens of percent


def zone_key(name: str) -> int:
    """A zone's stable random-stream key: the same zone draws the same randomness in every run."""
    return zlib.crc32(name.encode())


def build_plant(site: Site, seed: int, *, mismatch: bool = True) -> tuple[ZonePlant, AhuPlant]:
    """Physics of every zone and AHU of `site`; `mismatch` draws the real-vs-nominal differences."""
    rz = site.resolved
    area = np.array([r.zone.area_m2 for r in rz])
    volume = np.array([r.volume_m3 for r in rz])
    kappa = np.array([THERMAL_MASS[r.zone.thermal_mass][0] for r in rz])
    f_ms = np.array([THERMAL_MASS[r.zone.thermal_mass][1] for r in rz])
    a_m = f_ms * area  # effective mass area (ISO 13790 §12.2.2)
    a_t = LAMBDA_AT * area
    h_tr_ms = H_MS_W_M2K * a_m
    h_tr_w = np.array([r.zone.u_window_w_m2k * r.zone.window_m2 for r in rz])
    h_op = np.array(
        [
            r.zone.u_wall_w_m2k * r.zone.exterior_wall_m2 + r.zone.u_roof_w_m2k * r.zone.roof_m2
            for r in rz
        ]
    )
    # ISO 13790 eq. 63: the opaque envelope couples outdoor air to the mass node.
    with np.errstate(divide="ignore"):
        h_tr_em = np.where(h_op > 0.0, 1.0 / (1.0 / np.maximum(h_op, 1e-12) - 1.0 / h_tr_ms), 0.0)
    if np.any(h_tr_em < 0.0):
        raise ValueError("an opaque envelope conducts more than the zone's mass can absorb")
    aperture = np.array([r.zone.g_window * GLAZED_FRACTION * r.zone.window_m2 for r in rz])
    facade = np.array(
        [FACADES.index(r.zone.facade) if r.zone.facade else FACADES.index("H") for r in rz]
    )
    infiltration = np.array([r.zone.infiltration_ach * r.volume_m3 / 3600.0 for r in rz])
    co2_gen = np.array([r.co2_generation_m3s_per_person for r in rz])
    if mismatch:
        g_factor = np.empty(len(rz))
        inf_factor = np.empty(len(rz))
        for i, r in enumerate(rz):
            rng = np.random.default_rng([seed, zone_key(r.zone.name), 0x6D69])
            g_factor[i] = np.clip(rng.normal(1.0, CO2_GENERATION_SPREAD), 0.75, 1.3)
            inf_factor[i] = np.exp(rng.normal(0.0, INFILTRATION_SPREAD))
        co2_gen = co2_gen * g_factor
        infiltration = infiltration * inf_factor
    zones = ZonePlant(
        area_m2=area,
        volume_m3=volume,
        c_m_j_k=kappa * area,
        h_tr_w=h_tr_w,
        h_tr_em=h_tr_em,
        h_tr_ms=h_tr_ms,
        h_tr_is=H_IS_W_M2K * a_t,
        a_m_over_a_t=a_m / a_t,
        h_win_over_h_ms_a_t=h_tr_w / (H_MS_W_M2K * a_t),
        solar_aperture_m2=aperture,
        facade=facade,
        infiltration_m3s=infiltration,
        co2_gen_m3s=co2_gen,
        sensible_w_per_person=np.array([r.sensible_w_per_person for r in rz]),
        equipment_w_m2=np.array([r.equipment_w_m2 for r in rz]),
        heat_cap_w=np.array([r.zone.heating_capacity_w_m2 * r.zone.area_m2 for r in rz]),
        cool_cap_w=np.array([r.zone.cooling_capacity_w_m2 * r.zone.area_m2 for r in rz]),
        ahu=np.array([site.ahu_index[r.zone.ahu] for r in rz], dtype=np.int64),
    )
    ahus = AhuPlant(
        design_airflow_m3s=np.array([a.design_airflow_m3s for a in site.ahu]),
        fan_power_design_w=np.array(
            [a.sfp_kw_per_m3s * 1e3 * a.design_airflow_m3s for a in site.ahu]
        ),
        fan_exponent=np.array([a.fan_exponent for a in site.ahu]),
        hr_effectiveness=np.array([a.heat_recovery_effectiveness for a in site.ahu]),
        has_cooling=np.array([a.has_cooling_coil for a in site.ahu]),
        heating_efficiency=np.full(len(site.ahu), site.energy.heating_efficiency),
        cooling_cop=np.full(len(site.ahu), site.energy.cooling_cop),
    )
    return zones, ahus


def replicate(site: Site, n_zones: int) -> Site:
    """A site of exactly n_zones built from copies of `site`'s zones and AHUs (for benchmarks).

    Copy k of zone "x" is named "x-k" and served by copy k of its AHU, so every copy is a
    complete building of its own.
    """
    from controller.site import parse_site  # noqa: PLC0415  (site → sim import at call time only)

    base = site.model_dump(mode="json", exclude_none=True)
    zones, ahus = [], []
    copies = -(-n_zones // len(site.zone))
    for k in range(copies):
        ahus += [{**a, "name": f"{a['name']}-{k}"} for a in base["ahu"]]
        zones += [{**z, "name": f"{z['name']}-{k}", "ahu": f"{z['ahu']}-{k}"} for z in base["zone"]]
    used = {z["ahu"] for z in zones[:n_zones]}
    doc = {**base, "ahu": [a for a in ahus if a["name"] in used], "zone": zones[:n_zones]}
    doc.pop("zone_defaults", None)
    return parse_site(doc, source=f"{site.site.name} × {n_zones} zones")
