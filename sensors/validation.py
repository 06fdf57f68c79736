"""Reading validation: range, stuck value, spike and staleness checks, each with a quality flag."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from sensors.arrays import FloatArray


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

# A rejected jump that the next readings confirm is a real change, not a spike: accept it after
# this many consecutive readings agree with each other.
SPIKE_CONFIRM_READINGS = 3


@dataclass(frozen=True, slots=True)
class CheckParams:
    """Limits per point row. Every field (n_points,); inf disables a check."""

    lo: FloatArray
    hi: FloatArray
    stuck_after_s: FloatArray
    max_rate_per_s: FloatArray
    stale_after_s: FloatArray


@dataclass(frozen=True, slots=True)
class CheckState:
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
    present = np.isfinite(value)
    missing = ~present
    stale = present & (age_s > p.stale_after_s)
    out_of_range = present & ~stale & ((value < p.lo) | (value > p.hi))
    same = present & (value == state.last_value)
    # A gap (missing reading) does not end a stuck episode: a frozen sensor on a flaky link is
    # still frozen.
    unchanged_s = np.where(same | missing, state.unchanged_s + dt_s, 0.0)
    stuck = same & (unchanged_s >= p.stuck_after_s)
    candidate = present & ~stale & ~out_of_range & ~stuck
    have_good = np.isfinite(state.last_good)
    limit = p.max_rate_per_s * (state.good_age_s + dt_s)
    with np.errstate(over="ignore", invalid="ignore"):  # ±1e308 readings: inf differences
        change = np.abs(value - state.last_good)
        agree = np.abs(value - state.last_value) <= p.max_rate_per_s * dt_s
    jump = candidate & have_good & (change > limit)
    # Consecutive rejected readings that agree with each other are a real change.
    rejected = np.where(jump, np.where(agree, state.rejected + 1, 1), 0).astype(np.int32)
    spike = jump & (rejected < SPIKE_CONFIRM_READINGS)
    good = candidate & ~spike
    quality = (
        missing * Quality.MISSING
        + out_of_range * Quality.OUT_OF_RANGE
        + stuck * Quality.STUCK
        + spike * Quality.SPIKE
        + stale * Quality.STALE
    ).astype(np.int16)
    new_state = CheckState(
        last_value=np.where(present, value, state.last_value),
        unchanged_s=unchanged_s,
        last_good=np.where(good, value, state.last_good),
        good_age_s=np.where(good, 0.0, state.good_age_s + dt_s),
        rejected=np.where(good, 0, rejected).astype(np.int32),
    )
    return new_state, np.where(good, value, np.nan), quality
