"""Tests for controller.schedule: week tables, a day's hours and time until the next opening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.schedule import DAY_S, WeekTable, day_hours, scheduled_now, stack_tables, week_table
from controller.site import Hours, load_site, parse_hours

HELSINKI = Path(__file__).resolve().parents[2] / "config" / "sites" / "helsinki-office.toml"
H = 3600.0
NAN, INF = float("nan"), float("inf")


def _table(*zones: list[str]) -> WeekTable:
    return week_table([[parse_hours(h) for h in hours] for hours in zones])


def test_week_table_golden() -> None:
    table = _table(
        ["Mon-Fri 07:00-18:00"],
        ["Mon,Wed 08:00-12:00", "Sat 09:00-24:00"],
        [],
    )
    nan = np.nan
    np.testing.assert_array_equal(
        table.open_s,
        [
            [7 * H, 7 * H, 7 * H, 7 * H, 7 * H, nan, nan],
            [8 * H, nan, 8 * H, nan, nan, 9 * H, nan],
            [nan] * 7,
        ],
    )
    np.testing.assert_array_equal(
        table.close_s,
        [
            [18 * H, 18 * H, 18 * H, 18 * H, 18 * H, nan, nan],
            [12 * H, nan, 12 * H, nan, nan, DAY_S, nan],
            [nan] * 7,
        ],
    )
    assert table.open_s.shape == table.close_s.shape == (3, 7)


def test_week_table_of_the_example_site() -> None:
    site = load_site(HELSINKI)
    table = week_table([r.occupied_hours for r in site.resolved])
    hall = site.zone_index["lecture-hall"]
    cafeteria = site.zone_index["cafeteria"]
    office = site.zone_index["office-e1"]
    assert table.open_s[hall, 0] == 8 * H
    assert table.close_s[cafeteria, 4] == 15 * H
    assert table.open_s[cafeteria, 4] == 7.5 * H
    assert table.open_s[office, 2] == 7 * H
    assert np.all(np.isnan(table.open_s[:, 5:]))  # nobody works weekends


def test_stack_tables_puts_lanes_one_after_the_other() -> None:
    a = _table(["Mon-Fri 07:00-18:00"])
    b = _table(["Sat 09:00-14:00"], ["daily 00:00-24:00"])
    s = stack_tables([a, b])
    np.testing.assert_array_equal(s.open_s, np.concatenate([a.open_s, b.open_s]))
    np.testing.assert_array_equal(s.close_s, np.concatenate([a.close_s, b.close_s]))


def test_day_hours_picks_each_zones_weekday_and_closes_holidays() -> None:
    table = _table(["Mon-Fri 07:00-18:00"], ["Sat 09:00-14:00"], ["daily 06:00-22:00"])
    open_s, close_s = day_hours(
        table, weekday=np.array([0, 5, 6]), closed=np.array([False, False, True])
    )
    np.testing.assert_array_equal(open_s, [7 * H, 9 * H, np.nan])
    np.testing.assert_array_equal(close_s, [18 * H, 14 * H, np.nan])
    # A weekend day of a weekday zone is closed without any holiday.
    open_s, close_s = day_hours(table, weekday=np.array([6, 0, 3]), closed=np.zeros(3, bool))
    np.testing.assert_array_equal(open_s, [np.nan, np.nan, 6 * H])
    np.testing.assert_array_equal(close_s, [np.nan, np.nan, 22 * H])


# (open today, close today, open tomorrow, time of day) -> (scheduled, seconds to next opening)
SCHEDULED_GOLDEN = [
    (7 * H, 18 * H, 7 * H, 6 * H, False, 1 * H),  # before opening: today's
    (7 * H, 18 * H, 7 * H, 7 * H, True, 24 * H),  # opening instant: scheduled; next is tomorrow
    (7 * H, 18 * H, 7 * H, 12 * H, True, 19 * H),  # open: tomorrow's opening
    (7 * H, 18 * H, 7 * H, 18 * H, False, 13 * H),  # closing instant: closed
    (7 * H, 18 * H, 8 * H, 19 * H, False, 13 * H),  # after closing: tomorrow's opening
    (7 * H, 18 * H, NAN, 19 * H, False, INF),  # after closing, closed tomorrow
    (7 * H, 18 * H, NAN, 12 * H, True, INF),  # open now, closed tomorrow
    (7 * H, 18 * H, NAN, 6 * H, False, 1 * H),  # closed tomorrow, but today's opening is ahead
    (NAN, NAN, 7 * H, 10 * H, False, 21 * H),  # closed today (holiday): tomorrow's opening
    (NAN, NAN, 7 * H, 0.0, False, 31 * H),
    (NAN, NAN, NAN, 10 * H, False, INF),  # closed today and tomorrow
    (0.0, DAY_S, 0.0, 23.5 * H, True, 0.5 * H),  # round the clock: open until midnight
    (0.0, DAY_S, 0.0, 0.0, True, DAY_S),
    (18 * H, DAY_S, 18 * H, 23 * H, True, 19 * H),  # until 24:00
]


@pytest.mark.parametrize(
    ("open_today", "close_today", "open_tomorrow", "tod", "scheduled", "to_open"),
    SCHEDULED_GOLDEN,
)
def test_scheduled_now_golden(
    *,
    open_today: float,
    close_today: float,
    open_tomorrow: float,
    tod: float,
    scheduled: bool,
    to_open: float,
) -> None:
    s, t = scheduled_now(
        np.array([open_today]), np.array([close_today]), np.array([open_tomorrow]), np.array([tod])
    )
    assert s.dtype == np.bool_
    assert bool(s[0]) is scheduled
    assert t[0] == to_open


def test_scheduled_now_is_vectorised_over_zones() -> None:
    cases = np.array([row[:4] for row in SCHEDULED_GOLDEN], dtype=np.float64)
    s, t = scheduled_now(cases[:, 0], cases[:, 1], cases[:, 2], cases[:, 3])
    np.testing.assert_array_equal(s, [row[4] for row in SCHEDULED_GOLDEN])
    np.testing.assert_array_equal(t, [row[5] for row in SCHEDULED_GOLDEN])


@settings(max_examples=200)
@given(
    start_min=st.integers(0, 24 * 60 - 1),
    length_min=st.integers(1, 24 * 60),
    tod=st.floats(0.0, DAY_S, exclude_max=True),
    tomorrow_open=st.booleans(),
)
def test_time_to_open_is_never_negative_and_zero_only_at_opening(
    start_min: int, length_min: int, tod: float, tomorrow_open: bool
) -> None:
    end_min = min(start_min + length_min, 24 * 60)
    hours = Hours(frozenset({0, 1}), start_min * 60, end_min * 60)
    table = week_table([[hours]])
    open_today, close_today = day_hours(table, np.array([0]), np.array([False]))
    open_tomorrow, _ = day_hours(table, np.array([1]), np.array([not tomorrow_open]))
    s, t = scheduled_now(open_today, close_today, open_tomorrow, np.array([tod]))
    assert t[0] > 0.0
    assert bool(s[0]) == (start_min * 60 <= tod < end_min * 60)
    if tod < start_min * 60:
        assert t[0] == start_min * 60 - tod
    elif tomorrow_open:
        assert t[0] == pytest.approx(DAY_S - tod + start_min * 60)
        assert t[0] <= 2 * DAY_S
    else:
        assert t[0] == INF
