"""The site compiled into arrays for the control core: one row per zone, one per AHU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
import numpy as xp  # backend of adaptive_band_mid_c, an elementwise stage (see controller.law)

from controller.site import Site
from controller.standards import (
    ADAPTIVE_BASE_C,
    ADAPTIVE_SLOPE,
    ADAPTIVE_T_OUT_RANGE_C,
    CLASS_DEFAULTS,
    ClassDefaults,
)
from sensors.arrays import BoolArray, Elem, FloatArray, IntArray, concat_rows


class Strategy(StrEnum):
    """How zones are controlled. All four run through the same core, with different flags."""

    ILMA = "ilma"  # occupancy estimate + CO2 loop, standby, setback, optimal start
    SCHEDULE = "schedule"  # design airflow in occupied hours, fixed setpoints: common practice
    CO2 = "co2"  # CO2-only demand control (G36 with a CO2 sensor, no occupancy sensor)
    ORACLE = "oracle"  # ilma fed the true occupancy: the upper bound of what counting can give


@dataclass(frozen=True)
class StrategyFlags:
    use_occupancy: bool  # people count drives the population component and standby
    co2_loop: bool  # CO2 P-loop raises airflow over the 200 ppm below the limit
    demand_control: bool  # False: constant design airflow whenever scheduled occupied
    setback: bool  # unoccupied setpoints outside occupied hours
    optimal_start: bool  # learned warm-up / cool-down before occupancy
    supply_reset: bool  # AHU supply temperature follows zone cooling demand


STRATEGY_FLAGS: dict[Strategy, StrategyFlags] = {
    Strategy.ILMA: StrategyFlags(True, True, True, True, True, True),
    Strategy.ORACLE: StrategyFlags(True, True, True, True, True, True),
    Strategy.CO2: StrategyFlags(False, True, True, True, True, True),
    Strategy.SCHEDULE: StrategyFlags(False, False, False, False, False, False),
}


class ZoneParams(NamedTuple):
    """Constants per zone row for the control core. Every field is (n_zones,)."""

    area_m2: FloatArray
    volume_m3: FloatArray
    rp_m3s: FloatArray  # ASHRAE 62.1 people outdoor air rate, m³/s per person
    ra_m3s: FloatArray  # ASHRAE 62.1 area outdoor air rate, m³/s per m²
    ez: FloatArray  # zone air distribution effectiveness
    design_occupancy: FloatArray
    co2_limit_ppm: FloatArray
    co2_gen_m3s: FloatArray  # CO2 generation per person, m³/s
    airflow_min_m3s: FloatArray  # occupied minimum (G36 Vmin)
    airflow_max_m3s: FloatArray
    design_airflow_m3s: FloatArray
    heat_lo_c: FloatArray  # heating setpoint limits: no command leaves them
    heat_hi_c: FloatArray
    cool_lo_c: FloatArray  # cooling setpoint limits
    cool_hi_c: FloatArray
    # Comfort band = band_weight·mid(T_out,24h) + offset: weight 1 and offsets ∓ half width for the
    # adaptive Finnish classes, weight 0 and the fixed limits for EN 16798-1 categories and S3.
    band_weight: FloatArray
    band_low_offset_c: FloatArray
    band_high_offset_c: FloatArray
    unocc_heat_c: FloatArray
    unocc_cool_c: FloatArray
    standby_relax_k: FloatArray
    ahu: IntArray  # row of the zone's AHU in AhuParams
    use_occupancy: BoolArray
    co2_loop: BoolArray
    demand_control: BoolArray
    setback: BoolArray
    optimal_start: BoolArray

    @property
    def n(self) -> int:
        return int(self.area_m2.shape[0])


class AhuParams(NamedTuple):
    """Constants per AHU row. Every field is (n_ahus,)."""

    design_airflow_m3s: FloatArray
    min_fraction: FloatArray
    supply_t_min_c: FloatArray
    supply_t_max_c: FloatArray
    supply_t_design_c: FloatArray
    supply_reset: BoolArray
    first_zone: IntArray  # a zone of the AHU: its outdoor temperature is the AHU's

    @property
    def n(self) -> int:
        return int(self.design_airflow_m3s.shape[0])


class Params(NamedTuple):
    zones: ZoneParams
    ahus: AhuParams


def compile_params(site: Site, strategy: Strategy = Strategy.ILMA) -> Params:
    """The arrays the core runs on, for one site under one strategy."""
    flags = STRATEGY_FLAGS[strategy]
    rz = site.resolved
    n = len(rz)

    def col(values: Sequence[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    def flag(value: bool) -> BoolArray:
        return np.full(n, value, dtype=np.bool_)

    classes = [CLASS_DEFAULTS[r.zone.comfort_class] for r in rz]
    zones = ZoneParams(
        area_m2=col([r.zone.area_m2 for r in rz]),
        volume_m3=col([r.volume_m3 for r in rz]),
        rp_m3s=col([r.rp_m3s_per_person for r in rz]),
        ra_m3s=col([r.ra_m3s_per_m2 for r in rz]),
        ez=col([r.zone.ez for r in rz]),
        design_occupancy=col([r.design_occupancy for r in rz]),
        co2_limit_ppm=col([r.co2_limit_ppm for r in rz]),
        co2_gen_m3s=col([r.co2_generation_m3s_per_person for r in rz]),
        airflow_min_m3s=col([r.zone.airflow_min_m3s for r in rz]),
        airflow_max_m3s=col([r.airflow_max_m3s for r in rz]),
        design_airflow_m3s=col([r.design_airflow_m3s for r in rz]),
        heat_lo_c=col([r.zone.heating_setpoint_limits_c[0] for r in rz]),
        heat_hi_c=col([r.zone.heating_setpoint_limits_c[1] for r in rz]),
        cool_lo_c=col([r.zone.cooling_setpoint_limits_c[0] for r in rz]),
        cool_hi_c=col([r.zone.cooling_setpoint_limits_c[1] for r in rz]),
        band_weight=col([1.0 if c.adaptive_half_width_k is not None else 0.0 for c in classes]),
        band_low_offset_c=col([_band_offset(c, low=True) for c in classes]),
        band_high_offset_c=col([_band_offset(c, low=False) for c in classes]),
        unocc_heat_c=col([site.site.unoccupied_heating_c] * n),
        unocc_cool_c=col([site.site.unoccupied_cooling_c] * n),
        standby_relax_k=col([site.site.standby_relax_k] * n),
        ahu=np.array([site.ahu_index[r.zone.ahu] for r in rz], dtype=np.int64),
        use_occupancy=flag(flags.use_occupancy),
        co2_loop=flag(flags.co2_loop),
        demand_control=flag(flags.demand_control),
        setback=flag(flags.setback),
        optimal_start=flag(flags.optimal_start),
    )
    first: dict[str, int] = {}  # each AHU's first zone row
    for i, r in enumerate(rz):
        first.setdefault(r.zone.ahu, i)
    ahus = AhuParams(
        design_airflow_m3s=col([a.design_airflow_m3s for a in site.ahu]),
        min_fraction=col([a.min_airflow_fraction for a in site.ahu]),
        supply_t_min_c=col([a.supply_t_min_c for a in site.ahu]),
        supply_t_max_c=col([a.supply_t_max_c for a in site.ahu]),
        supply_t_design_c=col([a.supply_t_design_c for a in site.ahu]),
        supply_reset=np.full(len(site.ahu), flags.supply_reset, dtype=np.bool_),
        first_zone=np.array([first.get(a.name, 0) for a in site.ahu], dtype=np.int64),
    )
    return Params(zones, ahus)


def stack_params(lanes: Sequence[Params]) -> Params:
    """Lanes side by side: zones of lane k follow those of lane k-1, AHU indices shifted.

    Several controllers (or seeds) of one small building then cost one set of numpy calls per
    step instead of one per lane.
    """
    ahu_offsets = np.cumsum([0] + [p.ahus.n for p in lanes[:-1]]).tolist()
    zone_offsets = np.cumsum([0] + [p.zones.n for p in lanes[:-1]]).tolist()
    return Params(
        zones=concat_rows([p.zones for p in lanes], shift={"ahu": ahu_offsets}),
        ahus=concat_rows([p.ahus for p in lanes], shift={"first_zone": zone_offsets}),
    )


def _band_offset(c: ClassDefaults, *, low: bool) -> float:
    if c.adaptive_half_width_k is not None:
        return -c.adaptive_half_width_k if low else c.adaptive_half_width_k
    limit = c.t_low_c if low else c.t_high_c
    assert limit is not None  # noqa: S101  (a class has either a fixed or an adaptive band)
    return limit


def adaptive_band_mid_c(t_out_24h_c: Elem) -> Elem:
    """Finnish classification target operative temperature from the 24 h mean outdoor air."""
    lo, hi = ADAPTIVE_T_OUT_RANGE_C
    return ADAPTIVE_BASE_C + ADAPTIVE_SLOPE * xp.minimum(xp.maximum(t_out_24h_c, lo), hi)
