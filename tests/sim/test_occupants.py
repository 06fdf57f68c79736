"""The occupancy generator: flows add up, people go home, and a zone's day is its own."""

from __future__ import annotations

import zlib
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.clock import SimClock, make_clock
from sim.occupants import (
    ZONE_KINDS,
    Occupancy,
    OccupantProfile,
    generate_occupancy,
    stream_rng,
    stream_rngs,
)

TZ = ZoneInfo("Europe/Helsinki")
SEED = 20250324
DESIGN = {
    "office": 2,
    "open_office": 40,
    "meeting_room": 10,
    "classroom": 24,
    "lecture_hall": 120,
    "cafeteria": 150,
    "corridor": 20,
    "lobby": 60,
}
TRANSIT = ("corridor", "lobby")
HOUR = 3600.0


def profile(kind: str, name: str | None = None, design: int | None = None) -> OccupantProfile:
    key = zlib.crc32((name or kind).encode())
    return OccupantProfile(
        kind, DESIGN[kind] if design is None else design, 7 * HOUR, 18 * HOUR, key
    )


def building(copies: int = 1) -> list[OccupantProfile]:
    return [profile(k, f"{k}-{i}") for i in range(copies) for k in ZONE_KINDS]


def capacity(p: OccupantProfile) -> float:
    if p.kind in TRANSIT:
        return min(p.design_occupancy, max(3, int(np.ceil(0.1 * p.design_occupancy))))
    return 1.1 * p.design_occupancy


def workdays(clock: SimClock, holidays: frozenset[date] = frozenset()) -> np.ndarray:
    off = np.isin(clock.local_day, [d.toordinal() for d in holidays])
    return (clock.local_weekday < 5) & ~off


def between(clock: SimClock, lo_h: float, hi_h: float) -> np.ndarray:
    return (clock.local_tod_s >= lo_h * HOUR) & (clock.local_tod_s < hi_h * HOUR)


def check_invariants(occ: Occupancy, profiles: list[OccupantProfile], clock: SimClock) -> None:
    shape = (clock.n_steps, len(profiles))
    assert occ.ins.shape == occ.outs.shape == occ.count.shape == shape
    assert occ.ins.dtype == occ.outs.dtype == occ.count.dtype == np.int16
    assert (occ.ins >= 0).all()
    assert (occ.outs >= 0).all()
    flows = occ.ins.astype(np.int64) - occ.outs
    np.testing.assert_array_equal(occ.count, np.cumsum(flows, axis=0))
    assert (occ.count >= 0).all()
    caps = np.array([capacity(p) for p in profiles])
    assert (occ.count <= caps).all()
    # Nobody overnight: empty from midnight to 04:00, which includes the 03:00 counter reset.
    night = clock.local_tod_s < 4 * HOUR
    assert night.any()
    assert (occ.count[night] == 0).all()


# Two weeks from Monday 2025-03-24 at 60 s; daylight saving starts on Sunday 2025-03-30.
SPRING_START = date(2025, 3, 24)
HOLIDAY = date(2025, 4, 2)  # a Wednesday, declared a holiday


Spring = tuple[list[OccupantProfile], SimClock, Occupancy]


@pytest.fixture(scope="module")
def spring() -> Spring:
    profiles = building(copies=3)
    clock = make_clock(SPRING_START, 14, 60, TZ)
    return profiles, clock, generate_occupancy(profiles, clock, SEED, frozenset({HOLIDAY}))


def test_invariants_hold_over_a_fortnight_at_60_s(spring: Spring) -> None:
    profiles, clock, occ = spring
    check_invariants(occ, profiles, clock)


@pytest.mark.parametrize(
    "start", [date(2025, 3, 27), date(2025, 10, 23)], ids=["dst-starts", "dst-ends"]
)
def test_invariants_hold_at_300_s_steps_and_across_daylight_saving(start: date) -> None:
    profiles = building(copies=2)
    clock = make_clock(start, 6, 300, TZ)
    occ = generate_occupancy(profiles, clock, SEED)
    check_invariants(occ, profiles, clock)
    assert occ.count[workdays(clock)].sum() > 0


def test_300_s_steps_bin_the_same_people_as_60_s_steps() -> None:
    profiles = building()
    fine_clock = make_clock(SPRING_START, 3, 60, TZ)
    coarse_clock = make_clock(SPRING_START, 3, 300, TZ)
    fine = generate_occupancy(profiles, fine_clock, SEED)
    coarse = generate_occupancy(profiles, coarse_clock, SEED)
    # Same events, coarser bins: the 300 s flows are sums of five 60 s flows.
    np.testing.assert_array_equal(coarse.ins, fine.ins.reshape(-1, 5, len(profiles)).sum(axis=1))
    np.testing.assert_array_equal(coarse.count, fine.count[4::5])


@settings(max_examples=25)
@given(
    kinds=st.lists(st.sampled_from(ZONE_KINDS), min_size=1, max_size=5),
    designs=st.lists(st.integers(0, 80), min_size=5, max_size=5),
    open_h=st.floats(0.0, 10.0),
    hours=st.floats(0.5, 16.0),
    seed=st.integers(0, 2**32 - 1),
    start_offset=st.integers(0, 364),
    dt_s=st.sampled_from([60, 300, 900]),
)
def test_invariants_hold_for_any_profiles(
    *,
    kinds: list[str],
    designs: list[int],
    open_h: float,
    hours: float,
    seed: int,
    start_offset: int,
    dt_s: int,
) -> None:
    close_h = min(open_h + hours, 24.0)
    profiles = [
        OccupantProfile(k, d, open_h * HOUR, close_h * HOUR, i)
        for i, (k, d) in enumerate(zip(kinds, designs, strict=False))
    ]
    clock = make_clock(date(2025, 1, 1) + timedelta(days=start_offset), 3, dt_s, TZ)
    check_invariants(generate_occupancy(profiles, clock, seed), profiles, clock)


def test_schools_meeting_rooms_and_cafeterias_are_empty_on_weekends_and_holidays(
    spring: Spring,
) -> None:
    profiles, clock, occ = spring
    off = ~workdays(clock, frozenset({HOLIDAY}))
    assert np.isin(clock.local_weekday[off], [5, 6]).sum() > 0
    assert (clock.local_day[off] == HOLIDAY.toordinal()).sum() > 0
    for j, p in enumerate(profiles):
        if p.kind in ("classroom", "lecture_hall", "meeting_room", "cafeteria"):
            assert (occ.count[off, j] == 0).all(), p
            assert occ.count[~off, j].max() > 0, p


def test_offices_and_corridors_are_nearly_empty_on_days_off(spring: Spring) -> None:
    profiles, clock, occ = spring
    off = ~workdays(clock, frozenset({HOLIDAY}))
    work = workdays(clock, frozenset({HOLIDAY})) & between(clock, 9, 15)
    for kind in ("office", "open_office", "corridor", "lobby"):
        cols = [j for j, p in enumerate(profiles) if p.kind == kind]
        design = sum(profiles[j].design_occupancy for j in cols)
        off_mean = occ.count[off][:, cols].sum(axis=1).mean() / design
        work_mean = occ.count[work][:, cols].sum(axis=1).mean() / design
        assert off_mean < 0.02, kind
        assert work_mean > 10 * off_mean, kind


def test_a_weekend_worker_sometimes_comes_in() -> None:
    # 2 % per desk and weekend day: 200 desks over 4 weekend days see some visits.
    profiles = [profile("open_office", "big", design=200)]
    clock = make_clock(date(2025, 3, 1), 9, 300, TZ)  # Sat 1st ... Sun 9th
    occ = generate_occupancy(profiles, clock, SEED)
    weekend = clock.local_weekday >= 5
    assert 0 < occ.count[weekend].max() < 0.05 * 200
    assert occ.ins[weekend].sum() == occ.outs[weekend].sum()


def test_the_same_seed_gives_the_same_people_and_another_seed_others() -> None:
    profiles = building()
    clock = make_clock(SPRING_START, 3, 60, TZ)
    a = generate_occupancy(profiles, clock, SEED)
    b = generate_occupancy(profiles, clock, SEED)
    c = generate_occupancy(profiles, clock, SEED + 1)
    for field in ("ins", "outs", "count"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.ins, c.ins)


@pytest.mark.parametrize("dt_s", [60, 300])
def test_a_zones_day_does_not_depend_on_the_runs_start(dt_s: int) -> None:
    profiles = building()
    day = date(2025, 4, 1)
    late = make_clock(day, 3, dt_s, TZ)
    early = make_clock(day - timedelta(days=7), 10, dt_s, TZ)  # across the DST change
    occ_late = generate_occupancy(profiles, late, SEED)
    occ_early = generate_occupancy(profiles, early, SEED)
    tail = early.local_day >= day.toordinal()
    for field in ("ins", "outs", "count"):
        np.testing.assert_array_equal(getattr(occ_late, field), getattr(occ_early, field)[tail])


def test_a_zone_does_not_depend_on_the_other_zones() -> None:
    clock = make_clock(SPRING_START, 3, 60, TZ)
    alone = [profile("meeting_room", "m-7")]
    crowd = [profile("open_office", "x"), profile("meeting_room", "m-7"), *building()]
    a = generate_occupancy(alone, clock, SEED)
    b = generate_occupancy(crowd, clock, SEED)
    np.testing.assert_array_equal(a.count[:, 0], b.count[:, 1])
    np.testing.assert_array_equal(a.ins[:, 0], b.ins[:, 1])


def test_zones_with_different_keys_get_different_people() -> None:
    clock = make_clock(SPRING_START, 3, 60, TZ)
    occ = generate_occupancy([profile("open_office", "a"), profile("open_office", "b")], clock, 1)
    assert not np.array_equal(occ.ins[:, 0], occ.ins[:, 1])


def test_meeting_rooms_see_groups_no_shows_and_partial_bookings(spring: Spring) -> None:
    profiles, clock, occ = spring
    work = workdays(clock, frozenset({HOLIDAY}))
    hours = work & between(clock, 7, 18)
    for j, p in enumerate(profiles):
        if p.kind != "meeting_room":
            continue
        col = occ.count[:, j]
        assert (occ.ins[:, j] >= 3).any(), "a group comes in together"
        assert (occ.outs[:, j] >= 3).any(), "and leaves together"
        assert col.max() <= p.design_occupancy
        # Booked 40-70 % of the day, ~10 % no-shows and a few minutes at both ends.
        assert 0.25 < (col[hours] > 0).mean() < 0.75
        # Most meetings use a fraction of the seats.
        assert np.median(col[hours][col[hours] > 0]) < 0.7 * p.design_occupancy


def test_lecture_halls_fill_beyond_half_on_some_workday(spring: Spring) -> None:
    profiles, clock, occ = spring
    for j, p in enumerate(profiles):
        if p.kind == "lecture_hall":
            assert occ.count[:, j].max() > 0.5 * p.design_occupancy
            # Lectures only in the 08:15 ... 18:00 slots (arrivals from 08:05, leaving by 18:05).
            assert (occ.count[~between(clock, 8, 18.1), j] == 0).all()


def test_open_office_desks_are_used_well_below_design(spring: Spring) -> None:
    profiles, clock, occ = spring
    core = workdays(clock, frozenset({HOLIDAY})) & between(clock, 10, 15)
    for j, p in enumerate(profiles):
        if p.kind == "open_office":
            assert 0.3 < occ.count[core, j].mean() / p.design_occupancy < 0.8


def test_private_offices_hold_their_one_or_two_people_in_office_hours(spring: Spring) -> None:
    profiles, clock, occ = spring
    work = workdays(clock, frozenset({HOLIDAY}))
    for j, p in enumerate(profiles):
        if p.kind == "office":
            assert occ.count[:, j].max() <= p.design_occupancy
            mid_morning = occ.count[work & between(clock, 9.5, 10.5), j]
            assert 0.3 < mid_morning.mean() / p.design_occupancy <= 1.0
            assert (occ.count[work & between(clock, 0, 5), j] == 0).all()


def test_cafeterias_peak_at_lunch(spring: Spring) -> None:
    profiles, clock, occ = spring
    work = workdays(clock, frozenset({HOLIDAY}))
    for j, p in enumerate(profiles):
        if p.kind != "cafeteria":
            continue
        for day in np.unique(clock.local_day[work]):
            steps = np.flatnonzero(clock.local_day == day)
            peak = steps[np.argmax(occ.count[steps, j])]
            assert 10.75 * HOUR <= clock.local_tod_s[peak] <= 13 * HOUR
            assert 0.4 * p.design_occupancy <= occ.count[peak, j] <= p.design_occupancy


def test_classrooms_follow_the_school_day(spring: Spring) -> None:
    profiles, clock, occ = spring
    work = workdays(clock, frozenset({HOLIDAY}))
    for j, p in enumerate(profiles):
        if p.kind != "classroom":
            continue
        col = occ.count[:, j]
        assert (col[work & between(clock, 11.1, 12.2)] == 0).all(), "lunch empties the room"
        assert (col[work & between(clock, 15.2, 24)] == 0).all(), "the school day is over"
        # During a lesson the room holds a class of 80-100 % of its seats, or nobody.
        in_lesson = col[work & between(clock, 8.5, 8.75)]
        assert ((in_lesson == 0) | (in_lesson >= np.floor(0.8 * p.design_occupancy))).all()
        assert (in_lesson > 0).mean() > 0.4
        # Breaks between single lessons are mostly empty.
        assert (col[work & between(clock, 10.1, 10.2)] == 0).mean() > 0.9


def test_corridors_and_lobbies_hold_a_few_transient_people(spring: Spring) -> None:
    profiles, clock, occ = spring
    hours = workdays(clock, frozenset({HOLIDAY})) & between(clock, 7, 18)
    for j, p in enumerate(profiles):
        if p.kind in TRANSIT:
            col = occ.count[:, j]
            assert col[hours].mean() < 0.06 * p.design_occupancy
            assert col.max() <= max(3, int(np.ceil(0.1 * p.design_occupancy)))
            assert (col[hours] > 0).any()


def test_a_run_of_many_zones_fits_in_int16_and_matches_single_zone_runs() -> None:
    clock = make_clock(SPRING_START, 1, 300, TZ)
    profiles = [profile(ZONE_KINDS[i % 8], f"z{i}") for i in range(400)]
    occ = generate_occupancy(profiles, clock, SEED)
    check_invariants(occ, profiles, clock)
    one = generate_occupancy([profiles[123]], clock, SEED)
    np.testing.assert_array_equal(one.count[:, 0], occ.count[:, 123])


def test_zones_without_seats_stay_empty() -> None:
    clock = make_clock(SPRING_START, 2, 300, TZ)
    profiles = [profile(k, design=0) for k in ZONE_KINDS]
    assert not generate_occupancy(profiles, clock, SEED).count.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "kitchen"}, "kind"),
        ({"design_occupancy": -1}, "design_occupancy"),
        ({"open_s": 18 * HOUR, "close_s": 7 * HOUR}, "open_s"),
        ({"close_s": 25 * HOUR}, "close_s"),
        ({"zone_key": -5}, "zone_key"),
    ],
)
def test_bad_profiles_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    fields: dict[str, Any] = {
        "kind": "office",
        "design_occupancy": 1,
        "open_s": 7 * HOUR,
        "close_s": 18 * HOUR,
        "zone_key": 1,
    }
    with pytest.raises(ValueError, match=match):
        OccupantProfile(**(fields | kwargs))


def test_negative_seeds_are_rejected() -> None:
    clock = make_clock(SPRING_START, 1, 300, TZ)
    with pytest.raises(ValueError, match="seed"):
        generate_occupancy([profile("office")], clock, -1)
    with pytest.raises(ValueError, match="seed"):
        stream_rng(-1, 0, 0, 0)


def test_stream_rngs_are_the_generators_of_stream_rng() -> None:
    rng = np.random.default_rng(SEED)
    streams = [(int(s), int(k)) for s, k in rng.integers(0, 2**32, size=(200, 2))]
    streams += [(0, 0), (2**32 - 1, 2**32 - 1), (2**40, 3)]  # the last: more than one word
    for day, purpose in ((0, 4), (date(2027, 1, 11).toordinal(), 3)):
        for (seed, key), g in zip(streams, stream_rngs(streams, day, purpose), strict=True):
            ref = stream_rng(seed, key, day, purpose)
            assert g.bit_generator.state == ref.bit_generator.state
            np.testing.assert_array_equal(g.standard_normal(3), ref.standard_normal(3))
    with pytest.raises(ValueError, match=">= 0"):
        stream_rngs([(-1, 0)], 0, 0)
