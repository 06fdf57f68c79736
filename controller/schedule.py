"""Scheduled occupied hours as arrays: is a zone scheduled now, and how long until it opens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy as xp  # backend of the elementwise stage (see controller.law)

from controller.site import Hours
from sensors.arrays import BoolArray, Elem, FloatArray, IntArray

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class WeekTable:
    """Opening and closing time per zone and weekday, seconds after local midnight; NaN = closed.

    open_s, close_s : (n_zones, 7), Monday = column 0.
    """

    open_s: FloatArray
    close_s: FloatArray


def week_table(hours_per_zone: Sequence[Sequence[Hours]]) -> WeekTable:
    n = len(hours_per_zone)
    open_s = np.full((n, 7), np.nan)
    close_s = np.full((n, 7), np.nan)
    for i, hours in enumerate(hours_per_zone):
        for h in hours:
            for d in h.days:
                open_s[i, d] = h.start_s
                close_s[i, d] = h.end_s
    return WeekTable(open_s, close_s)


def stack_tables(tables: Sequence[WeekTable]) -> WeekTable:
    return WeekTable(
        np.concatenate([t.open_s for t in tables]), np.concatenate([t.close_s for t in tables])
    )


def day_hours(
    table: WeekTable, weekday: IntArray, closed: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Each zone's (open, close) on a day; NaN when closed (weekday off or a holiday).

    weekday, closed : (n_zones,) the zone's local weekday and whether the site is closed that day.
    """
    rows = np.arange(table.open_s.shape[0])
    open_s = np.where(closed, np.nan, table.open_s[rows, weekday])
    close_s = np.where(closed, np.nan, table.close_s[rows, weekday])
    return open_s, close_s


def scheduled_now(
    open_today: FloatArray, close_today: FloatArray, open_tomorrow: FloatArray, tod_s: FloatArray
) -> tuple[BoolArray, FloatArray]:
    """(inside scheduled hours now, seconds until the next opening; inf if none by tomorrow)."""
    scheduled, to_open = scheduled_at(open_today, close_today, open_tomorrow, tod_s)
    return scheduled, to_open


def scheduled_at(
    open_today: Elem, close_today: Elem, open_tomorrow: Elem, tod_s: Elem
) -> tuple[Elem, Elem]:
    """scheduled_now, elementwise (see controller.law)."""
    o, c, t = open_today, close_today, tod_s
    scheduled = (t >= o) & (t < c)  # False on a closed day: comparisons with NaN are False
    to_open = xp.where(t < o, o - t, DAY_S - t + open_tomorrow)
    return scheduled, xp.where(xp.isnan(to_open), xp.inf, to_open)
