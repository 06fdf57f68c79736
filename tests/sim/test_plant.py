"""Physics of the plant: CO2 mass balance, thermal relaxation, energy balance, stability."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from controller.site import Site, parse_site
from sim.building import build_plant
from sim.plant import (
    RHO_CP_J_M3K,
    SUPPLY_FAN_SHARE,
    AhuPlant,
    Drive,
    PlantState,
    ZonePlant,
    initial_plant_state,
    operative_c,
    step,
)


def one_zone_site(**zone: Any) -> Site:
    z = {
        "name": "room",
        "kind": "meeting_room",
        "ahu": "A",
        "area_m2": 30.0,
        "height_m": 3.0,
        "facade": "S",
        "exterior_wall_m2": 12.0,
        "window_m2": 6.0,
        "heating_capacity_w_m2": 0.0,
        "cooling_capacity_w_m2": 0.0,
        "infiltration_ach": 0.2,
    }
    z.update(zone)
    return parse_site(
        {
            "site": {
                "name": "t",
                "latitude_deg": 60.2,
                "longitude_deg": 24.9,
                "timezone": "Europe/Helsinki",
            },
            "ahu": [{"name": "A", "design_airflow_m3s": 1.0}],
            "zone": [z],
        }
    )


def plant(site: Site) -> tuple[ZonePlant, AhuPlant]:
    return build_plant(site, seed=0, mismatch=False)


def drive(**kw: float) -> Drive:
    one = np.ones(1)
    d = {
        "t_out_c": 0.0,
        "solar_wm2": 0.0,
        "co2_out_ppm": 420.0,
        "people": 0.0,
        "equipment_on": 0.0,
        "airflow_m3s": 0.0,
        "t_heat_c": -100.0,
        "t_cool_c": 100.0,
        "ahu_supply_c": 18.0,
        "ahu_t_out_c": 0.0,
    }
    d.update(kw)
    if "ahu_t_out_c" not in kw:
        d["ahu_t_out_c"] = d["t_out_c"]
    return Drive(**{k: one * v for k, v in d.items()})


def run(
    s: PlantState, d: Drive, zp: ZonePlant, ap: AhuPlant, *, dt: float, n: int
) -> tuple[PlantState, list[Any]]:
    flows = []
    for _ in range(n):
        s, f = step(s, d, zp, ap, dt)
        flows.append(f)
    return s, flows


@pytest.mark.parametrize(("people", "airflow"), [(10, 0.1), (3, 0.02), (25, 0.3)])
def test_co2_steady_state_matches_the_mass_balance(people: float, airflow: float) -> None:
    zp, ap = plant(one_zone_site())
    s = initial_plant_state(1, 21.0, 420.0)
    s, _ = run(
        s, drive(people=people, airflow_m3s=airflow, t_out_c=5.0), zp, ap, dt=60.0, n=24 * 60
    )
    q = airflow + zp.infiltration_m3s[0]
    expected = 420.0 + 1e6 * people * zp.co2_gen_m3s[0] / q
    assert s.co2_ppm[0] == pytest.approx(expected, rel=0.01)


def test_co2_step_is_exact_so_the_step_length_does_not_matter() -> None:
    zp, ap = plant(one_zone_site())
    d = drive(people=8, airflow_m3s=0.05)
    fine, _ = run(initial_plant_state(1, 21.0, 420.0), d, zp, ap, dt=10.0, n=360)
    coarse, _ = run(initial_plant_state(1, 21.0, 420.0), d, zp, ap, dt=3600.0, n=1)
    assert coarse.co2_ppm[0] == pytest.approx(fine.co2_ppm[0], rel=1e-9)


def test_co2_without_any_air_change_rises_linearly() -> None:
    site = one_zone_site(infiltration_ach=1e-9)
    zp, ap = plant(site)
    s, _ = run(initial_plant_state(1, 21.0, 420.0), drive(people=2), zp, ap, dt=60.0, n=60)
    rise = 1e6 * 2 * zp.co2_gen_m3s[0] * 3600.0 / zp.volume_m3[0]
    assert s.co2_ppm[0] == pytest.approx(420.0 + rise, rel=1e-6)


def test_an_empty_unventilated_unheated_zone_relaxes_to_outdoor() -> None:
    zp, ap = plant(one_zone_site())
    s = initial_plant_state(1, 21.0, 420.0)
    d = drive(t_out_c=-5.0)
    temps = []
    for _ in range(24 * 40):  # 40 days at hourly steps: many time constants
        s, _ = step(s, d, zp, ap, 3600.0)
        temps.append(operative_c(s)[0])
    assert np.all(np.diff(temps) <= 1e-9), "cools monotonically: no overshoot at hourly steps"
    assert temps[-1] == pytest.approx(-5.0, abs=0.01)
    assert temps[24] < 21.0 - 1.0, "and it does cool noticeably within a day"


def test_a_zone_with_gains_settles_above_outdoor_by_gains_over_conductance() -> None:
    zp, ap = plant(one_zone_site(window_m2=0.0))
    s = initial_plant_state(1, 10.0, 420.0)
    s, flows = run(s, drive(t_out_c=0.0, people=5), zp, ap, dt=3600.0, n=24 * 60)
    gains = flows[-1].gains_w[0]
    h_ve = RHO_CP_J_M3K * zp.infiltration_m3s[0]
    # Steady state: gains leave by infiltration (through the air node) and the opaque envelope.
    loss = flows[-1].ventilation_w[0] + flows[-1].transmission_w[0]
    assert loss == pytest.approx(-gains, rel=1e-3)  # within 0.1 %: the mass is still settling
    assert s.theta_air_c[0] > 0.0
    assert h_ve > 0.0


def zone_balance_residual(dt: float, n: int, **kw: float) -> tuple[float, float]:
    """Σ heat flows·dt against the change of stored heat, over n steps."""
    zp, ap = plant(one_zone_site(heating_capacity_w_m2=60.0, cooling_capacity_w_m2=40.0))
    s0 = initial_plant_state(1, 16.0, 420.0)
    d = drive(**kw)
    s, flows = run(s0, d, zp, ap, dt=dt, n=n)
    into = (
        sum(
            (f.gains_w + f.zone_heating_w - f.zone_cooling_w + f.ventilation_w + f.transmission_w)[
                0
            ]
            for f in flows
        )
        * dt
    )
    stored = zp.c_m_j_k[0] * (s.theta_m_c[0] - s0.theta_m_c[0])
    return into, stored


@pytest.mark.parametrize(
    "kw",
    [
        {"t_out_c": -10.0, "t_heat_c": 21.0, "t_cool_c": 25.0, "people": 6, "airflow_m3s": 0.05},
        {"t_out_c": 28.0, "t_heat_c": 21.0, "t_cool_c": 24.0, "solar_wm2": 500.0, "people": 10,
         "airflow_m3s": 0.1, "equipment_on": 1.0, "ahu_supply_c": 16.0},
        {"t_out_c": 5.0, "solar_wm2": 200.0},
    ],
)  # fmt: skip
def test_the_zone_energy_balance_closes(kw: dict[str, float]) -> None:
    into, stored = zone_balance_residual(60.0, 600, **kw)
    assert into == pytest.approx(stored, rel=1e-9, abs=1e-3)
    assert abs(stored) > 1e5, "the case does move heat in or out of storage"


def test_the_ahu_energy_balance_closes() -> None:
    zp, ap = plant(one_zone_site())
    s = initial_plant_state(1, 22.0, 420.0)
    for t_out, supply in ((-15.0, 19.0), (8.0, 17.0), (27.0, 16.0), (18.0, 18.0)):
        d = drive(t_out_c=t_out, airflow_m3s=0.4, ahu_supply_c=supply)
        _, f = step(s, d, zp, ap, 60.0)
        q = f.ahu_airflow_m3s[0]
        to_air = RHO_CP_J_M3K * q * (f.ahu_supply_c[0] - t_out)
        from_plant = (
            f.heat_recovery_w[0]
            + f.coil_heating_w[0]
            - f.coil_cooling_w[0]
            + SUPPLY_FAN_SHARE * f.fan_w[0]
        )
        assert to_air == pytest.approx(from_plant, rel=1e-9)
        assert f.ahu_supply_c[0] == pytest.approx(supply), "the coils reach the setpoint"


def test_heat_recovery_never_exceeds_its_effectiveness_and_bypasses_when_warm() -> None:
    zp, ap = plant(one_zone_site())
    s = initial_plant_state(1, 22.0, 420.0)
    _, cold = step(s, drive(t_out_c=-20.0, airflow_m3s=0.5, ahu_supply_c=19.0), zp, ap, 60.0)
    eff = ap.hr_effectiveness[0]
    max_hr = RHO_CP_J_M3K * 0.5 * eff * (22.0 - -20.0)
    assert cold.heat_recovery_w[0] == pytest.approx(max_hr, rel=1e-6)
    _, mild = step(s, drive(t_out_c=15.0, airflow_m3s=0.5, ahu_supply_c=17.0), zp, ap, 60.0)
    assert mild.coil_heating_w[0] == 0.0, "recovery is bypassed rather than heating then cooling"
    assert mild.coil_cooling_w[0] == 0.0


def test_fan_power_follows_the_power_law() -> None:
    zp, ap = plant(one_zone_site())
    s = initial_plant_state(1, 22.0, 420.0)
    _, full = step(s, drive(airflow_m3s=1.0), zp, ap, 60.0)
    _, half = step(s, drive(airflow_m3s=0.5), zp, ap, 60.0)
    assert full.fan_w[0] == pytest.approx(ap.fan_power_design_w[0])
    assert half.fan_w[0] / full.fan_w[0] == pytest.approx(0.5 ** ap.fan_exponent[0])
    _, off = step(s, drive(airflow_m3s=0.0), zp, ap, 60.0)
    assert off.fan_w[0] == 0.0


def test_local_heating_holds_the_operative_setpoint_within_capacity() -> None:
    zp, ap = plant(one_zone_site(heating_capacity_w_m2=80.0))
    s, flows = run(
        initial_plant_state(1, 15.0, 420.0),
        drive(t_out_c=-5.0, t_heat_c=21.0),
        zp,
        ap,
        dt=60.0,
        n=600,
    )
    assert operative_c(s)[0] == pytest.approx(21.0, abs=1e-6)
    assert all(f.zone_heating_w[0] <= zp.heat_cap_w[0] + 1e-6 for f in flows)
    small, _ = plant(one_zone_site(heating_capacity_w_m2=2.0))
    s2, f2 = run(initial_plant_state(1, 15.0, 420.0), drive(t_out_c=-5.0, t_heat_c=21.0),
                 small, ap, dt=60.0, n=600)  # fmt: skip
    assert operative_c(s2)[0] < 21.0, "too small a radiator cannot hold the setpoint"
    assert f2[-1].zone_heating_w[0] == pytest.approx(small.heat_cap_w[0])


def test_sixty_second_steps_agree_with_much_finer_ones() -> None:
    """Crank-Nicolson is second order: 60 s steps are as good as 6 s steps for this model."""
    zp, ap = plant(one_zone_site(heating_capacity_w_m2=60.0, cooling_capacity_w_m2=30.0))
    results = []
    for dt, n in ((6.0, 6000), (60.0, 600)):
        s = initial_plant_state(1, 15.0, 420.0)
        for k in range(n):
            hour = k * dt / 3600.0
            d = drive(
                t_out_c=-5.0 + 5.0 * np.sin(hour),
                people=10.0 * (hour > 3),
                airflow_m3s=0.1 * (hour > 3),
                t_heat_c=21.0 if hour > 2 else 16.0,
                t_cool_c=24.0,
                solar_wm2=300.0 * (hour > 5),
            )
            s, _ = step(s, d, zp, ap, dt)
        results.append(s)
    assert results[1].theta_m_c[0] == pytest.approx(results[0].theta_m_c[0], abs=0.02)
    assert operative_c(results[1])[0] == pytest.approx(operative_c(results[0])[0], abs=0.05)
    assert results[1].co2_ppm[0] == pytest.approx(results[0].co2_ppm[0], rel=1e-3)
