"""KPIs on hand-made signals: the integrals BOPTEST defines and the rules ilma adds."""

from __future__ import annotations

import numpy as np
import pytest

from sim.kpi import COMFORT_DWELL_S, UNOCCUPIED_LOW_C, KpiAccumulator, lane_kpis


def add(acc: KpiAccumulator, steps: int, dt: float = 60.0, **kw: float) -> None:
    n = acc.tdis_kh.shape[0]
    values = {
        "t_op_c": 21.0, "band_low_c": 20.5, "band_high_c": 22.5, "co2_ppm": 600.0,
        "co2_limit_ppm": 950.0, "people": 0.0, "delivered_oa_m3s": 0.1, "required_oa_m3s": 0.1,
        "zone_heat_w": 0.0, "zone_cool_w": 0.0,
    }  # fmt: skip
    values.update(kw)
    ahu = {k: np.full(acc.fan_j.shape[0], values.pop(k, 0.0)) for k in
           ("fan_w", "coil_heat_w", "coil_cool_w")}  # fmt: skip
    for _ in range(steps):
        acc.add(dt_s=dt, **{k: np.full(n, v) for k, v in values.items()}, **ahu)


def test_discomfort_counts_once_people_have_stayed_fifteen_minutes() -> None:
    acc = KpiAccumulator.zeros(1, 1)
    add(acc, 60, people=3.0, t_op_c=19.5)  # an hour 1 K below the band
    settled_h = (60 * 60 - COMFORT_DWELL_S) / 3600.0
    assert acc.tdis_kh[0] == pytest.approx(1.0 * settled_h)
    assert acc.occupied_h[0] == pytest.approx(1.0)


def test_an_empty_zone_is_judged_on_the_unoccupied_bounds_only() -> None:
    acc = KpiAccumulator.zeros(1, 1)
    add(acc, 60, t_op_c=17.0)
    assert acc.tdis_kh[0] == 0.0
    add(acc, 60, t_op_c=UNOCCUPIED_LOW_C - 2.0)
    assert acc.tdis_kh[0] == pytest.approx(2.0)


def test_iaq_discomfort_is_ppm_hours_above_the_limit() -> None:
    acc = KpiAccumulator.zeros(1, 1)
    add(acc, 30, co2_ppm=1150.0, people=5.0)
    assert acc.idis_ppmh[0] == pytest.approx(200.0 * 0.5)


def test_shortfall_counts_occupied_time_below_ninety_percent_of_the_requirement() -> None:
    acc = KpiAccumulator.zeros(1, 1)
    add(acc, 60, people=4.0, delivered_oa_m3s=0.095, required_oa_m3s=0.1)
    add(acc, 60, people=4.0, delivered_oa_m3s=0.05, required_oa_m3s=0.1)
    add(acc, 60, people=0.0, delivered_oa_m3s=0.0, required_oa_m3s=0.1)
    assert acc.short_h[0] == pytest.approx(1.0)


def test_lane_kpis_turn_joules_into_purchased_kwh_per_square_metre() -> None:
    acc = KpiAccumulator.zeros(2, 1)
    add(acc, 60, zone_heat_w=1000.0, zone_cool_w=300.0, fan_w=500.0, coil_heat_w=2000.0)
    k = lane_kpis(
        acc, rows=slice(0, 2), ahu_rows=slice(0, 1), area_m2=np.array([50.0, 50.0]),
        heating_efficiency=2.0, cooling_cop=3.0,
    )  # fmt: skip
    assert k.heating_delivered_kwh_m2 == pytest.approx((2 * 1.0 + 2.0) / 100.0)
    assert k.heating_kwh_m2 == pytest.approx(k.heating_delivered_kwh_m2 / 2.0)
    assert k.cooling_kwh_m2 == pytest.approx(2 * 0.3 / 3.0 / 100.0)
    assert k.fan_kwh_m2 == pytest.approx(0.5 / 100.0)
    assert k.energy_kwh_m2 == pytest.approx(k.fan_kwh_m2 + k.heating_kwh_m2 + k.cooling_kwh_m2)
