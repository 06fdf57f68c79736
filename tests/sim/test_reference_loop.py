"""The vectorized closed loop against a straightforward per-zone Python loop of the same model.

bench/reference_loop.py writes validation, estimation, the control law, the plant and the KPIs
again over scalars, one zone at a time. Both must give the same figures: a disagreement is a bug in
one of them (the reference is the one that is easy to read against the equations).
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.reference_loop import simulate_reference
from controller.params import Strategy
from controller.site import Site, load_site, parse_site
from sim.kpi import KpiAccumulator
from sim.runner import Scenario, simulate

ROOT = Path(__file__).parents[2]

REL = 1e-6
ABS = 1e-9  # for figures that are zero in one run: J, K·h, ppm·h, h


@cache
def office() -> Site:
    return load_site(ROOT / "config" / "sites" / "helsinki-office.toml")


@cache
def three_zones() -> Site:
    """A small site that takes the branches the office in January does not.

    Two AHUs, one without a cooling coil and one that has to scale its zones' airflow; a fixed
    (EN 16798-1) and two adaptive (Finnish) comfort classes; a zone with only a CO2 sensor and one
    with only a people counter; a heating-only zone, a roof, heavy and light mass, Ez < 1.
    """
    return parse_site(
        {
            "site": {
                "name": "three",
                "latitude_deg": 60.2,
                "longitude_deg": 24.9,
                "timezone": "Europe/Helsinki",
                "unoccupied_heating_c": 17.0,
                "unoccupied_cooling_c": 27.0,
            },
            "energy": {"heating_efficiency": 0.9, "cooling_cop": 3.0},
            "ahu": [
                {
                    "name": "A",
                    "design_airflow_m3s": 0.25,
                    "min_airflow_fraction": 0.3,
                    "supply_t_min_c": 15.0,
                    "supply_t_max_c": 19.0,
                    "supply_t_design_c": 17.0,
                },
                {"name": "B", "design_airflow_m3s": 0.6, "has_cooling_coil": False},
            ],
            "zone": [
                {
                    "name": "meeting",
                    "kind": "meeting_room",
                    "ahu": "A",
                    "area_m2": 30.0,
                    "design_occupancy": 12,
                    "comfort_class": "S1",
                    "occupied_hours": ["Mon-Fri 15:00-20:00"],  # a warm afternoon: cool-down
                    "facade": "W",
                    "exterior_wall_m2": 12.0,
                    "window_m2": 10.0,
                    "thermal_mass": "light",
                    "cooling_capacity_w_m2": 30.0,
                },
                {
                    "name": "office",
                    "kind": "office",
                    "ahu": "A",
                    "area_m2": 20.0,
                    "design_occupancy": 2,
                    "comfort_class": "II",
                    "facade": "W",
                    "exterior_wall_m2": 8.0,
                    "window_m2": 5.0,
                    "airflow_min_m3s": 0.02,
                    "has_people_counter": False,
                },
                {
                    "name": "classroom",
                    "kind": "classroom",
                    "ahu": "B",
                    "area_m2": 60.0,
                    "design_occupancy": 25,
                    "comfort_class": "S2",
                    "occupied_hours": ["Mon-Fri 08:00-16:00"],
                    "facade": "E",
                    "exterior_wall_m2": 20.0,
                    "window_m2": 12.0,
                    "roof_m2": 60.0,
                    "thermal_mass": "heavy",
                    "ez": 0.8,
                    "cooling_capacity_w_m2": 20.0,
                    "cooling_setpoint_limits_c": [21.0, 24.2],  # below the band: deadband
                    "has_co2_sensor": False,
                },
            ],
        }
    )


def scenario(site: Site, start: date) -> Scenario:
    return Scenario(
        site=site,
        start=start,
        days=1,
        controllers=tuple(Strategy),
        seeds=(1,),
        warmup_days=1,
    )


def assert_same_totals(vec: KpiAccumulator, ref: KpiAccumulator) -> None:
    """Per zone and AHU of every lane, every integral."""
    for name in vec.__dataclass_fields__:
        a, b = getattr(vec, name), getattr(ref, name)
        np.testing.assert_allclose(b, a, rtol=REL, atol=ABS, err_msg=name)


def assert_same_kpis(sc: Scenario) -> None:
    vec, ref = simulate(sc), simulate_reference(sc)
    assert ref.lanes == vec.lanes
    assert (ref.steps, ref.zone_steps) == (vec.steps, vec.zone_steps)
    for lane, a, b in zip(vec.lanes, vec.kpis, ref.kpis, strict=True):
        expected: dict[str, Any] = a.as_dict()
        assert b.as_dict() == pytest.approx(expected, rel=REL, abs=ABS), lane.controller.value
    assert_same_totals(vec.totals, ref.totals)


def test_office_in_january_all_controllers() -> None:
    assert_same_kpis(scenario(office(), date(2027, 1, 12)))


def test_three_zones_on_a_warm_summer_day() -> None:
    """Cooling, free cooling with supply air, the AHUs' airflow limits, supply air reset."""
    assert_same_kpis(scenario(three_zones(), date(2027, 7, 20)))


def test_reference_reports_its_work_and_can_stop_early() -> None:
    sc = scenario(three_zones(), date(2027, 7, 20))
    calls: list[tuple[int, int]] = []
    ref = simulate_reference(sc, lambda k, n: calls.append((k, n)), max_steps=30)
    assert ref.steps == 30
    assert ref.zone_steps == 30 * len(sc.controllers) * len(sc.site.zone)
    assert ref.loop_s > 0.0
    assert ref.setup_s > 0.0
    assert calls[-1] == (30, 30)
    assert all(k.occupied_zone_h == 0.0 for k in ref.kpis)  # warm-up only: nothing counted
