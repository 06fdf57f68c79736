"""Key performance indicators, accumulated step by step: comfort, air quality, energy, compliance.

Definitions follow BOPTEST (ibpsa/project1-boptest docs/design/source/core_kpi.rst) where it has
one: thermal discomfort in K·h and IAQ discomfort in ppm·h, each summed per zone and averaged over
zones; energy in kWh per m² of floor. BOPTEST takes its comfort bounds from a schedule; here they
follow the people actually there: the zone's comfort class once the zone has been occupied for
COMFORT_DWELL_S (ASHRAE 55 applies to occupants who stay at least 15 minutes [U]), BOPTEST
bestest_air's unoccupied bounds (15/30 °C) otherwise. A controller is judged on the comfort of
people, not of empty rooms, nor of someone crossing a corridor on a Sunday.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy as xp  # backend of the elementwise stage (see controller.law)

from sensors.arrays import Elem, FloatArray, IntArray

UNOCCUPIED_LOW_C = 15.0  # BOPTEST bestest_air unoccupied heating bound [V: domain.md §6]
UNOCCUPIED_HIGH_C = 30.0
COMFORT_DWELL_S = 900.0  # ASHRAE 55 scope: occupants present for 15 min or more [U]
SHORTFALL_TOLERANCE = 0.9  # delivered outdoor air below 90 % of the requirement counts as short
J_PER_KWH = 3.6e6


@dataclass
class KpiAccumulator:
    """Running integrals. Zone arrays (n_rows,), AHU arrays (n_ahu_rows,); time in hours."""

    tdis_kh: FloatArray
    idis_ppmh: FloatArray
    occupied_h: FloatArray
    comfortable_h: FloatArray
    short_h: FloatArray
    zone_heat_j: FloatArray  # delivered
    zone_cool_j: FloatArray
    fan_j: FloatArray
    coil_heat_j: FloatArray
    coil_cool_j: FloatArray
    present_s: FloatArray  # how long each zone has been continuously occupied

    @classmethod
    def zeros(cls, n_rows: int, n_ahus: int) -> KpiAccumulator:
        z, a = np.zeros(n_rows), np.zeros(n_ahus)
        return cls(
            z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
            a.copy(), a.copy(), a.copy(), z.copy(),
        )  # fmt: skip

    def add(
        self,
        *,
        dt_s: float,
        t_op_c: FloatArray,
        band_low_c: FloatArray,
        band_high_c: FloatArray,
        co2_ppm: FloatArray,
        co2_limit_ppm: FloatArray,
        people: FloatArray,
        delivered_oa_m3s: FloatArray,
        required_oa_m3s: FloatArray,
        zone_heat_w: FloatArray,
        zone_cool_w: FloatArray,
        fan_w: FloatArray,
        coil_heat_w: FloatArray,
        coil_cool_w: FloatArray,
    ) -> None:
        """Add one step. `people` is the true occupancy; temperatures are step means."""
        tdis, idis, occ, comfy, short, present = kpi_zone(
            dt_s, t_op_c, band_low_c, band_high_c, co2_ppm, co2_limit_ppm, people,
            delivered_oa_m3s, required_oa_m3s, self.present_s,
        )  # fmt: skip
        self.tdis_kh += tdis
        self.idis_ppmh += idis
        self.occupied_h += occ
        self.comfortable_h += comfy
        self.short_h += short
        self.present_s = present
        self.zone_heat_j += zone_heat_w * dt_s
        self.zone_cool_j += zone_cool_w * dt_s
        self.fan_j += fan_w * dt_s
        self.coil_heat_j += coil_heat_w * dt_s
        self.coil_cool_j += coil_cool_w * dt_s


def kpi_zone(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    dt_s: float, t_op_c: Elem, band_low_c: Elem, band_high_c: Elem, co2_ppm: Elem,
    co2_limit_ppm: Elem, people: Elem, delivered_oa_m3s: Elem, required_oa_m3s: Elem,
    present_s: Elem,
) -> tuple[Elem, ...]:  # fmt: skip
    """One step's increments of (tdis K·h, idis ppm·h, occupied h, comfortable h, short h) and
    the new time-present, elementwise (see controller.law)."""
    h = dt_s / 3600.0
    t_op, n = t_op_c, people
    present = n > 0.0
    was_present_s = present_s
    settled = present & (was_present_s >= COMFORT_DWELL_S)  # there 15 min when the step began
    low = xp.where(settled, band_low_c, UNOCCUPIED_LOW_C)
    high = xp.where(settled, band_high_c, UNOCCUPIED_HIGH_C)
    dev = xp.maximum(low - t_op, 0.0) + xp.maximum(t_op - high, 0.0)
    over = xp.maximum(co2_ppm - co2_limit_ppm, 0.0)
    comfortable = present & (dev == 0.0) & (over == 0.0)  # judged while settled
    short = present & (delivered_oa_m3s < SHORTFALL_TOLERANCE * required_oa_m3s)
    return (
        dev * h, over * h, present * h, comfortable * h, short * h,
        xp.where(present, was_present_s + dt_s, 0.0),
    )  # fmt: skip


@dataclass(frozen=True)
class Kpis:
    """One controller's figures over a run (the keys of summary.json)."""

    energy_kwh_m2: float  # purchased HVAC energy: fans + heating + cooling
    fan_kwh_m2: float
    heating_kwh_m2: float  # purchased (delivered / heating efficiency)
    cooling_kwh_m2: float  # purchased (delivered / COP)
    heating_delivered_kwh_m2: float
    cooling_delivered_kwh_m2: float
    thermal_discomfort_kh: float  # per zone (BOPTEST tdis_tot)
    iaq_discomfort_ppmh: float  # per zone (BOPTEST idis_tot)
    comfort_share: float  # of occupied zone-hours inside the class (temperature and CO2)
    ventilation_shortfall_h: float  # per zone: occupied hours with too little outdoor air
    ventilation_shortfall_share: float  # of occupied zone-hours
    occupied_zone_h: float  # total zone-hours with people present

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def lane_kpis(
    acc: KpiAccumulator,
    *,
    rows: IntArray | slice,
    ahu_rows: IntArray | slice,
    area_m2: FloatArray,
    heating_efficiency: float,
    cooling_cop: float,
) -> Kpis:
    """Summarise the rows of one lane (one controller on one seed)."""
    floor = float(np.sum(area_m2[rows]))
    n = float(np.size(area_m2[rows]))
    heat_delivered = float(np.sum(acc.zone_heat_j[rows]) + np.sum(acc.coil_heat_j[ahu_rows]))
    cool_delivered = float(np.sum(acc.zone_cool_j[rows]) + np.sum(acc.coil_cool_j[ahu_rows]))
    fan = float(np.sum(acc.fan_j[ahu_rows]))
    per_m2 = 1.0 / (J_PER_KWH * floor)
    heating = heat_delivered / heating_efficiency * per_m2
    cooling = cool_delivered / cooling_cop * per_m2
    occupied = float(np.sum(acc.occupied_h[rows]))
    return Kpis(
        energy_kwh_m2=fan * per_m2 + heating + cooling,
        fan_kwh_m2=fan * per_m2,
        heating_kwh_m2=heating,
        cooling_kwh_m2=cooling,
        heating_delivered_kwh_m2=heat_delivered * per_m2,
        cooling_delivered_kwh_m2=cool_delivered * per_m2,
        thermal_discomfort_kh=float(np.sum(acc.tdis_kh[rows])) / n,
        iaq_discomfort_ppmh=float(np.sum(acc.idis_ppmh[rows])) / n,
        comfort_share=float(np.sum(acc.comfortable_h[rows])) / occupied if occupied else 1.0,
        ventilation_shortfall_h=float(np.sum(acc.short_h[rows])) / n,
        ventilation_shortfall_share=float(np.sum(acc.short_h[rows])) / occupied
        if occupied
        else 0.0,
        occupied_zone_h=occupied,
    )


def required_outdoor_air_m3s(
    people: FloatArray, rp_m3s: FloatArray, ra_m3s: FloatArray, area_m2: FloatArray, ez: FloatArray
) -> FloatArray:
    """ASHRAE 62.1 zone outdoor airflow Voz = (Rp·Pz + Ra·Az)/Ez for the true occupancy."""
    return (rp_m3s * people + ra_m3s * area_m2) / ez
