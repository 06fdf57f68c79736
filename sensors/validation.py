"""Reading validation: range, stuck value, spike and staleness checks, each with a quality flag."""

from __future__ import annotations

from enum import IntFlag
from typing import NamedTuple

import numpy as np
import numpy as xp  # backend of the elementwise stage (see controller.law)
import numpy.typing as npt

from sensors.arrays import Elem, FloatArray


class Quality(IntFlag):
    """Why a reading is not to be trusted; GOOD (0) when nothing is wrong. Carried on the wire."""

    GOOD = 0
    MISSING = 1  # no value (device silent, NaN)
    OUT_OF_RANGE = 2  # outside the point's physical range
    STUCK = 4  # the same value for longer than the point ever stays still
    SPIKE = 8  # a jump faster than the quantity can change
    STALE = 16  # the device's value is older than allowed
    REPLAYED = 32  # replayed from a gateway's buffer (not a fault; see the wire contract)


QualityArray = npt.NDArray[np.int16]
_MISSING, _OUT_OF_RANGE, _STUCK, _SPIKE, _STALE = (
    int(q)
    for q in (Quality.MISSING, Quality.OUT_OF_RANGE, Quality.STUCK, Quality.SPIKE, Quality.STALE)
)

# A rejected jump that the next readings confirm is a real change, not a spike: accept it after
# this many consecutive readings agree with each other.
SPIKE_CONFIRM_READINGS = 3


class CheckParams(NamedTuple):
    """Limits per point row. Every field (n_points,); inf disables a check."""

    lo: FloatArray
    hi: FloatArray
    stuck_after_s: FloatArray
    max_rate_per_s: FloatArray
    stale_after_s: FloatArray


class CheckState(NamedTuple):
    last_value: FloatArray  # last reading seen (good or not); NaN if none
    unchanged_s: FloatArray  # how long last_value has not changed
    last_good: FloatArray  # last reading that passed; NaN if none
    good_age_s: FloatArray  # time since last_good was taken
    rejected: npt.NDArray[np.int32]  # consecutive spike rejections


def initial_check_state(n: int) -> CheckState:
    return CheckState(
        np.full(n, np.nan),
        np.zeros(n),
        np.full(n, np.nan),
        np.zeros(n),
        np.zeros(n, dtype=np.int32),
    )


def check(
    state: CheckState, value: FloatArray, age_s: FloatArray, p: CheckParams, dt_s: float
) -> tuple[CheckState, FloatArray, QualityArray]:
    """Validate one reading per point.

    value : (n,) the raw reading in SI units; NaN when the device gave none.
    age_s : (n,) how old the reading is (0 for a fresh sample).
    Returns the new state, the clean value (NaN unless GOOD) and the quality flags.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # ±1e308 readings: inf differences
        out = check_reading(state, value, age_s, p, dt_s)
    n = len(CheckState._fields)
    return CheckState(*out[:n]), out[n], out[n + 1].astype(np.int16)


def check_reading(
    s: CheckState, value: Elem, age_s: Elem, p: CheckParams, dt_s: float
) -> tuple[Elem, ...]:
    """One reading, elementwise (see controller.law): the CheckState fields, the clean value and
    the quality flags."""
    last_value = s.last_value
    last_good = s.last_good
    good_age_s = s.good_age_s
    present = xp.isfinite(value)
    missing = ~present
    stale = present & (age_s > p.stale_after_s)
    out_of_range = present & ~stale & ((value < p.lo) | (value > p.hi))
    same = present & (value == last_value)
    # A gap (missing reading) does not end a stuck episode: a frozen sensor on a flaky link is
    # still frozen.
    unchanged_s = xp.where(same | missing, s.unchanged_s + dt_s, 0.0)
    stuck = same & (unchanged_s >= p.stuck_after_s)
    candidate = present & ~stale & ~out_of_range & ~stuck
    have_good = xp.isfinite(last_good)
    max_rate = p.max_rate_per_s
    jump = candidate & have_good & (xp.abs(value - last_good) > max_rate * (good_age_s + dt_s))
    # Consecutive rejected readings that agree with each other are a real change.
    agree = xp.abs(value - last_value) <= max_rate * dt_s
    rejected = xp.where(jump, xp.where(agree, s.rejected + 1, 1), 0)
    spike = jump & (rejected < SPIKE_CONFIRM_READINGS)
    good = candidate & ~spike
    quality = (
        missing * _MISSING
        + out_of_range * _OUT_OF_RANGE
        + stuck * _STUCK
        + spike * _SPIKE
        + stale * _STALE
    )
    return (
        xp.where(present, value, last_value),
        unchanged_s,
        xp.where(good, value, last_good),
        xp.where(good, 0.0, good_age_s + dt_s),
        xp.where(good, 0, rejected),
        xp.where(good, value, xp.nan),
        quality,
    )


class PointLimits(NamedTuple):
    """Validation limits of one kind of reading (one row of CheckParams but staleness)."""

    lo: float
    hi: float
    stuck_after_s: float
    max_rate_per_s: float


# Defaults per quantity (the wire's point names). CO2 never reads below ~250 ppm outdoors nor
# changes 20 ppm/s in a room, and NDIR noise makes 30 min of identical readings a stuck sensor;
# room temperatures move slowly. Counters and setpoints rightly hold still for hours: no stuck
# check there. Counter rates: a wide door passes ~1 person/s per lane.
QUANTITY_LIMITS: dict[str, PointLimits] = {
    "co2_ppm": PointLimits(250.0, 5000.0, 1800.0, 20.0),
    "t_zone_c": PointLimits(-10.0, 50.0, 12 * 3600.0, 0.05),
    "rh_pct": PointLimits(0.0, 100.0, 12 * 3600.0, 1.0),
    "people_in": PointLimits(0.0, 4.3e9, np.inf, np.inf),
    "people_out": PointLimits(0.0, 4.3e9, np.inf, np.inf),
    "people_count": PointLimits(0.0, 10_000.0, np.inf, 10.0),
    "airflow_m3s": PointLimits(0.0, 100.0, np.inf, np.inf),
    "t_supply_c": PointLimits(-10.0, 70.0, 12 * 3600.0, 0.5),
    "airflow_setpoint_m3s": PointLimits(0.0, 100.0, np.inf, np.inf),
    "t_heat_setpoint_c": PointLimits(0.0, 40.0, np.inf, np.inf),
    "t_cool_setpoint_c": PointLimits(0.0, 45.0, np.inf, np.inf),
}


def check_params_for(quantities: list[str], stale_after_s: float) -> CheckParams:
    """CheckParams for rows of these quantities (QUANTITY_LIMITS), all stale after one age."""
    rows = [QUANTITY_LIMITS[q] for q in quantities]
    n = len(rows)

    def col(i: int) -> FloatArray:
        return np.array([r[i] for r in rows], dtype=np.float64).reshape(n)

    return CheckParams(col(0), col(1), col(2), col(3), np.full(n, stale_after_s))
