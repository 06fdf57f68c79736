"""The simulated clock: regular steps in UTC, with the local calendar that people follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from sensors.arrays import FloatArray, Int8Array, IntArray


@dataclass(frozen=True)
class SimClock:
    """Step k covers [epoch_s[k], epoch_s[k] + dt_s); local fields are those of the step's start.

    Local time follows the site's time zone, daylight saving included: people arrive at 08:00 on
    the wall clock, while weather files are indexed in standard time (see sim.weather).
    """

    start_utc: datetime
    dt_s: int
    n_steps: int
    tz: ZoneInfo
    epoch_s: FloatArray  # (n_steps,) UTC seconds since 1970
    local_day: IntArray  # (n_steps,) proleptic Gregorian ordinal of the local date
    local_tod_s: FloatArray  # (n_steps,) seconds since local midnight
    local_weekday: Int8Array  # (n_steps,) Monday = 0 ... Sunday = 6

    @property
    def days(self) -> list[date]:
        """The local dates the run touches, in order."""
        first, last = int(self.local_day[0]), int(self.local_day[-1])
        return [date.fromordinal(d) for d in range(first, last + 1)]


def make_clock(start: date, days: int, dt_s: int, tz: ZoneInfo) -> SimClock:
    """A clock from local midnight of `start` for `days` days of `dt_s` steps.

    A day with a daylight-saving change has 23 or 25 hours; the run covers the wall-clock days.
    """
    if dt_s <= 0 or 86400 % dt_s:
        raise ValueError(f"dt_s must divide a day evenly, got {dt_s}")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    start_local = datetime(start.year, start.month, start.day, tzinfo=tz)
    end_local = start_local + timedelta(days=days)
    start_utc = start_local.astimezone(UTC)
    span_s = int((end_local.astimezone(UTC) - start_utc).total_seconds())
    n_steps = span_s // dt_s
    t0 = start_utc.timestamp()
    epoch_s = t0 + dt_s * np.arange(n_steps, dtype=np.float64)
    # The UTC offset changes at most twice a year: evaluate it per hour, not per step.
    hours = np.arange(0, span_s + 3600, 3600, dtype=np.float64)
    offsets = np.array(
        [
            datetime.fromtimestamp(t0 + h, tz).utcoffset().total_seconds()  # type: ignore[union-attr]
            for h in hours
        ]
    )
    offset_s = offsets[((epoch_s - t0) // 3600).astype(np.int64)]
    local_s = epoch_s + offset_s
    # Seconds since 0001-01-01 local: ordinal 1 is 0001-01-01; the Unix epoch is ordinal 719163.
    day_since_epoch = np.floor_divide(local_s, 86400.0)
    local_day = day_since_epoch.astype(np.int64) + 719163
    local_tod_s = local_s - day_since_epoch * 86400.0
    local_weekday = ((local_day - 1) % 7).astype(np.int8)  # ordinal 1 was a Monday
    return SimClock(
        start_utc=start_utc,
        dt_s=dt_s,
        n_steps=n_steps,
        tz=tz,
        epoch_s=epoch_s,
        local_day=local_day,
        local_tod_s=local_tod_s,
        local_weekday=local_weekday,
    )
