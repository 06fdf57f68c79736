"""Simulated sensors: counters miss people as real ones do, CO2 and temperature sensors err."""

from __future__ import annotations

import zlib
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.clock import SimClock, make_clock
from sim.occupants import Occupancy, OccupantProfile, generate_occupancy
from sim.sensor_models import (
    Co2SensorBank,
    Co2SensorErrors,
    CounterErrors,
    ThermometerBank,
    ThermometerErrors,
    simulate_people_counter,
)

TZ = ZoneInfo("Europe/Helsinki")
SEED = 11
HOUR = 3600.0
START = date(2025, 3, 24)  # Monday; daylight saving starts on Sunday 2025-03-30
NO_COUNTER_ERRORS = CounterErrors(
    p_miss_in=0.0, p_miss_out=0.0, p_group_miss=0.0, p_double=0.0, group_threshold=4
)
NO_CO2_ERRORS = Co2SensorErrors(
    noise_ppm=0.0,
    gain_sd=0.0,
    offset_sd_ppm=0.0,
    drift_sd_ppm_per_day=0.0,
    stuck_per_day=0.0,
    dropout_per_day=0.0,
)


def key(name: str) -> int:
    return zlib.crc32(name.encode())


PROFILES = [
    OccupantProfile("lecture_hall", 200, 7 * HOUR, 18 * HOUR, key("hall")),
    OccupantProfile("cafeteria", 150, 7 * HOUR, 18 * HOUR, key("cafe")),
    OccupantProfile("meeting_room", 12, 7 * HOUR, 18 * HOUR, key("meet")),
    OccupantProfile("open_office", 60, 7 * HOUR, 18 * HOUR, key("open")),
    OccupantProfile("classroom", 26, 7 * HOUR, 18 * HOUR, key("class")),
]
KEYS = [p.zone_key for p in PROFILES]


Flows = tuple[SimClock, Occupancy]


@pytest.fixture(scope="module")
def flows() -> Flows:
    clock = make_clock(START, 14, 60, TZ)
    return clock, generate_occupancy(PROFILES, clock, SEED)


def reset_mask(clock: SimClock, reset_tod_s: float = 3 * HOUR) -> np.ndarray:
    """First step of each local day at or after the reset time, and the run's first step."""
    past = clock.local_tod_s >= reset_tod_s
    first_past = past & ~np.r_[False, past[:-1] & (np.diff(clock.local_day) == 0)]
    first_past[0] = True
    return np.asarray(first_past)


def since_reset(flow: np.ndarray, resets: np.ndarray) -> np.ndarray:
    total = np.cumsum(flow.astype(np.int64), axis=0)
    segment = np.cumsum(resets) - 1
    return np.asarray(total - (total - flow)[resets][segment])


# --- people counters ------------------------------------------------------------------------


def test_an_error_free_counter_counts_the_true_flow_since_the_last_reset(flows: Flows) -> None:
    clock, occ = flows
    raw_in, raw_out = simulate_people_counter(occ, clock, SEED, KEYS, NO_COUNTER_ERRORS)
    assert raw_in.dtype == raw_out.dtype == np.int32
    assert raw_in.shape == occ.ins.shape
    resets = reset_mask(clock)
    np.testing.assert_array_equal(raw_in, since_reset(occ.ins, resets))
    np.testing.assert_array_equal(raw_out, since_reset(occ.outs, resets))
    # Nobody is in at 03:00, so in - out is the true count all day.
    np.testing.assert_array_equal(raw_in - raw_out, occ.count)


def test_registers_reset_at_0300_and_never_decrease_in_between(flows: Flows) -> None:
    clock, occ = flows
    raw_in, raw_out = simulate_people_counter(occ, clock, SEED, KEYS)
    resets = reset_mask(clock)
    tods = clock.local_tod_s[resets][1:]
    # 03:00 every night; 04:00 on the night daylight saving skips 03:00-04:00.
    assert set(tods.tolist()) == {3 * HOUR, 4 * HOUR}
    assert (tods == 4 * HOUR).sum() == 1
    for raw in (raw_in, raw_out):
        assert (raw[resets] == 0).all()  # nobody passes at 03:00
        steps = np.diff(raw.astype(np.int64), axis=0)
        assert (steps[~resets[1:]] >= 0).all()
        assert (raw[1:][resets[1:]] <= raw[:-1][resets[1:]]).all()
        assert raw[:, 0].max() > 100


def test_default_errors_leave_ghosts_at_the_end_of_the_day(flows: Flows) -> None:
    clock, occ = flows
    raw_in, raw_out = simulate_people_counter(occ, clock, SEED, KEYS)
    evening = clock.local_tod_s == 22 * HOUR
    assert (occ.count[evening] == 0).all()
    ghosts = (raw_in - raw_out)[evening & (clock.local_weekday < 5)]
    # OUT is missed more often than IN: the counter believes people stayed.
    assert ghosts.sum() > 0
    assert (ghosts[:, :2] > 0).all(), "the busy hall and cafeteria always end the day with ghosts"


def test_default_errors_undercount_at_peaks(flows: Flows) -> None:
    clock, occ = flows
    raw_in, _ = simulate_people_counter(occ, clock, SEED, KEYS)
    seen = np.diff(raw_in.astype(np.int64), axis=0, prepend=0)
    seen[reset_mask(clock)] = raw_in[reset_mask(clock)]
    crowd = occ.ins >= 15
    quiet = (occ.ins > 0) & (occ.ins <= 2)
    assert crowd.sum() > 20
    crowd_ratio = seen[crowd].sum() / occ.ins[crowd].sum()
    quiet_ratio = seen[quiet].sum() / occ.ins[quiet].sum()
    assert crowd_ratio < 0.85  # groups walk through side by side
    assert 0.9 < quiet_ratio < 1.0  # ~3 % missed one by one


def test_counter_errors_are_reproducible_and_per_zone(flows: Flows) -> None:
    clock, occ = flows
    a = simulate_people_counter(occ, clock, SEED, KEYS)
    b = simulate_people_counter(occ, clock, SEED, KEYS)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    other_seed = simulate_people_counter(occ, clock, SEED + 1, KEYS)
    assert not np.array_equal(a[0], other_seed[0])
    # One zone alone sees the same errors as in the crowd.
    alone = Occupancy(ins=occ.ins[:, 2:3], outs=occ.outs[:, 2:3], count=occ.count[:, 2:3])
    one = simulate_people_counter(alone, clock, SEED, KEYS[2:3])
    np.testing.assert_array_equal(one[0][:, 0], a[0][:, 2])
    np.testing.assert_array_equal(one[1][:, 0], a[1][:, 2])


def test_counter_errors_on_a_date_do_not_depend_on_the_runs_start() -> None:
    day = date(2025, 4, 2)
    late = make_clock(day, 2, 60, TZ)
    early = make_clock(day - timedelta(days=5), 7, 60, TZ)
    occ_late = generate_occupancy(PROFILES, late, SEED)
    occ_early = generate_occupancy(PROFILES, early, SEED)
    in_late, out_late = simulate_people_counter(occ_late, late, SEED, KEYS)
    in_early, out_early = simulate_people_counter(occ_early, early, SEED, KEYS)
    # From the first reset on (before it, the late run's device has just been switched on).
    tail = early.local_day >= day.toordinal()
    np.testing.assert_array_equal(in_late[180:], in_early[tail][180:])
    np.testing.assert_array_equal(out_late[180:], out_early[tail][180:])


def test_the_counter_rejects_mismatched_inputs(flows: Flows) -> None:
    clock, occ = flows
    with pytest.raises(ValueError, match="zone_keys"):
        simulate_people_counter(occ, clock, SEED, KEYS[:2])
    with pytest.raises(ValueError, match="steps"):
        simulate_people_counter(occ, make_clock(START, 1, 60, TZ), SEED, KEYS)


SMALL_CLOCK = make_clock(date(2025, 10, 25), 2, 300, TZ)  # daylight saving ends on the 26th


@settings(max_examples=40)
@given(
    ins=arrays(np.int16, (SMALL_CLOCK.n_steps, 2), elements=st.integers(0, 40), fill=st.just(0)),
    outs=arrays(np.int16, (SMALL_CLOCK.n_steps, 2), elements=st.integers(0, 40), fill=st.just(0)),
    seed=st.integers(0, 2**32 - 1),
    p_miss=st.floats(0.0, 1.0),
    p_double=st.floats(0.0, 1.0),
    threshold=st.integers(0, 10),
)
def test_registers_never_decrease_between_resets_whatever_the_flow(
    *,
    ins: np.ndarray,
    outs: np.ndarray,
    seed: int,
    p_miss: float,
    p_double: float,
    threshold: int,
) -> None:
    occ = Occupancy(ins=ins, outs=outs, count=np.zeros_like(ins))
    errors = CounterErrors(
        p_miss_in=p_miss,
        p_miss_out=p_miss,
        p_double=p_double,
        group_threshold=threshold,
        p_group_miss=0.5,
    )
    raw_in, raw_out = simulate_people_counter(occ, SMALL_CLOCK, seed, [1, 2], errors)
    resets = reset_mask(SMALL_CLOCK)
    assert resets.sum() == 3  # the run's start and one reset per night, the long night included
    for raw, flow in ((raw_in, ins), (raw_out, outs)):
        assert (raw >= 0).all()
        assert (np.diff(raw.astype(np.int64), axis=0)[~resets[1:]] >= 0).all()
        # At most every passage counted twice.
        assert (raw <= 2 * since_reset(flow, resets)).all()


# --- CO2 sensors ----------------------------------------------------------------------------


def read_all(bank: Co2SensorBank | ThermometerBank, truth: np.ndarray) -> np.ndarray:
    """Readings (n_steps, n_rows) for truth (n_steps, n_rows)."""
    return np.array([bank.read(k, truth[k]) for k in range(truth.shape[0])])


def test_an_error_free_co2_sensor_reads_the_truth_quantized() -> None:
    clock = make_clock(START, 1, 300, TZ)
    rng = np.random.default_rng(0)
    truth = rng.uniform(380, 2500, (clock.n_steps, 5))
    bank = Co2SensorBank(np.full(5, SEED), np.arange(5), clock, NO_CO2_ERRORS)
    np.testing.assert_array_equal(read_all(bank, truth), np.round(truth))


def test_co2_noise_matches_its_sigma() -> None:
    clock = make_clock(START, 1, 60, TZ)
    errors = Co2SensorErrors(
        noise_ppm=10.0,
        gain_sd=0.0,
        offset_sd_ppm=0.0,
        drift_sd_ppm_per_day=0.0,
        stuck_per_day=0.0,
        dropout_per_day=0.0,
    )
    n = 400
    bank = Co2SensorBank(np.full(n, SEED), np.arange(n), clock, errors)
    truth = np.full((300, n), 600.0)
    err = read_all(bank, truth) - 600.0
    assert abs(err.mean()) < 0.2
    assert 9.7 < err.std() < 10.3
    # White: no correlation from one step to the next.
    assert abs(np.corrcoef(err[1:].ravel(), err[:-1].ravel())[0, 1]) < 0.02


def test_co2_offset_and_gain_match_their_sigma_and_stay_put() -> None:
    clock = make_clock(START, 1, 300, TZ)
    errors = Co2SensorErrors(
        noise_ppm=0.0,
        gain_sd=0.01,
        offset_sd_ppm=15.0,
        drift_sd_ppm_per_day=0.0,
        stuck_per_day=0.0,
        dropout_per_day=0.0,
        resolution_ppm=0.0,
    )
    n = 4000
    bank = Co2SensorBank(np.full(n, SEED), np.arange(n), clock, errors)
    at_1000 = bank.read(0, np.full(n, 1000.0)) - 1000.0
    at_2000 = bank.read(1, np.full(n, 2000.0)) - 2000.0
    gain = (at_2000 - at_1000) / 1000.0
    offset = at_1000 - 1000.0 * gain
    assert 14.0 < offset.std() < 16.0
    assert abs(offset.mean()) < 1.0
    assert 0.0095 < gain.std() < 0.0105
    assert abs(gain.mean()) < 0.001
    # A fixed error: the same next hour and in a bank that starts another day.
    np.testing.assert_allclose(bank.read(14, np.full(n, 1000.0)) - 1000.0, at_1000)
    other_day = make_clock(date(2026, 1, 5), 1, 300, TZ)
    later = Co2SensorBank(np.full(n, SEED), np.arange(n), other_day, errors)
    np.testing.assert_allclose(later.read(0, np.full(n, 1000.0)) - 1000.0, at_1000)


def test_co2_drift_wanders_by_its_daily_sigma_and_depends_only_on_the_date() -> None:
    errors = Co2SensorErrors(
        noise_ppm=0.0,
        gain_sd=0.0,
        offset_sd_ppm=0.0,
        drift_sd_ppm_per_day=0.3,
        stuck_per_day=0.0,
        dropout_per_day=0.0,
        resolution_ppm=0.0,
    )
    n, days = 300, 100
    clock = make_clock(date(2025, 1, 1), days, 3600, TZ)
    bank = Co2SensorBank(np.full(n, SEED), np.arange(n), clock, errors)
    midnight = clock.local_tod_s == 0
    drift = (read_all(bank, np.full((clock.n_steps, n), 500.0)) - 500.0)[midnight]
    daily = np.diff(drift, axis=0)
    assert 0.27 < daily.std() < 0.33
    assert abs(daily.mean()) < 0.01
    assert drift.std() < 4.0  # held near zero, as self-calibration would
    # A bank that starts mid-way reads the same drift at the same date.
    mid = date(2025, 2, 20)
    later = Co2SensorBank(np.full(n, SEED), np.arange(n), make_clock(mid, 2, 3600, TZ), errors)
    later_midnight = later.read(0, np.full(n, 500.0)) - 500.0
    np.testing.assert_allclose(later_midnight, drift[(mid - date(2025, 1, 1)).days], atol=1e-9)


def test_a_stuck_co2_sensor_repeats_its_value() -> None:
    clock = make_clock(START, 2, 60, TZ)
    errors = Co2SensorErrors(stuck_per_day=3.0, stuck_hours=(0.5, 1.0), dropout_per_day=0.0)
    n = 20
    bank = Co2SensorBank(np.full(n, SEED), np.arange(n), clock, errors)
    # A ramp with noise never repeats a value for half an hour unless the sensor is stuck.
    truth = 450.0 + np.arange(clock.n_steps)[:, None] * 0.5 + np.zeros((1, n))
    readings = read_all(bank, truth)
    same = np.diff(readings, axis=0) == 0
    longest = max(_longest_run(same[:, j]) for j in range(n))
    assert longest >= 29
    healthy = Co2SensorErrors(stuck_per_day=0.0, dropout_per_day=0.0)
    free = read_all(Co2SensorBank(np.full(n, SEED), np.arange(n), clock, healthy), truth)
    assert max(_longest_run(np.diff(free[:, j]) == 0) for j in range(n)) < 5


def _longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags.tolist():
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def test_co2_dropouts_give_nan_for_minutes() -> None:
    clock = make_clock(START, 3, 60, TZ)
    n = 50
    truth = np.full((clock.n_steps, n), 700.0)
    dropping = Co2SensorErrors(dropout_per_day=10.0)
    nan = np.isnan(read_all(Co2SensorBank(np.full(n, SEED), np.arange(n), clock, dropping), truth))
    # 10 a day of 1-15 min: ~8 min x 10 / 1440 min, i.e. ~5 % of readings.
    assert 0.02 < nan.mean() < 0.09
    never = Co2SensorErrors(dropout_per_day=0.0)
    steady = read_all(Co2SensorBank(np.full(n, SEED), np.arange(n), clock, never), truth)
    assert not np.isnan(steady).any()


def test_rows_sharing_a_stream_err_identically() -> None:
    clock = make_clock(START, 2, 60, TZ)
    errors = Co2SensorErrors(stuck_per_day=2.0, dropout_per_day=5.0)
    seeds = np.array([SEED, SEED, SEED, SEED + 1])
    keys = np.array([7, 7, 8, 7])
    bank = Co2SensorBank(seeds, keys, clock, errors)
    base = 500 + 300 * np.sin(np.arange(clock.n_steps) / 100.0)
    truth = np.stack([base, base, base, base], axis=1)
    readings = read_all(bank, truth)
    np.testing.assert_array_equal(readings[:, 0], readings[:, 1])  # NaNs in the same places
    assert not np.array_equal(readings[:, 0], readings[:, 2], equal_nan=True)
    assert not np.array_equal(readings[:, 0], readings[:, 3], equal_nan=True)
    # Two lanes (controllers) with different truth: same dropouts, same error on the same truth.
    lanes = Co2SensorBank(np.array([SEED, SEED]), np.array([7, 7]), clock, errors)
    other = np.stack([base, base + 100.0], axis=1)
    lane_readings = read_all(lanes, other)
    np.testing.assert_array_equal(np.isnan(lane_readings[:, 0]), np.isnan(lane_readings[:, 1]))
    np.testing.assert_array_equal(lane_readings[:, 0], readings[:, 0])


def test_a_sensor_bank_must_be_read_in_step_order() -> None:
    clock = make_clock(START, 1, 300, TZ)
    bank = Co2SensorBank(np.array([1]), np.array([2]), clock)
    bank.read(3, np.array([500.0]))
    with pytest.raises(ValueError, match="order"):
        bank.read(3, np.array([500.0]))
    with pytest.raises(ValueError, match="step"):
        bank.read(clock.n_steps, np.array([500.0]))
    with pytest.raises(ValueError, match=r"\(1,\)"):
        bank.read(4, np.array([500.0, 600.0]))
    with pytest.raises(ValueError, match="zone_keys"):
        Co2SensorBank(np.array([1, 2]), np.array([2]), clock)


@settings(max_examples=30)
@given(
    truth=arrays(
        np.float64,
        (40, 3),
        elements=st.one_of(st.floats(0.0, 10_000.0), st.just(np.nan)),
    ),
    seed=st.integers(0, 2**32 - 1),
    keys=st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3),
)
def test_co2_readings_are_finite_or_nan_and_never_negative(
    truth: np.ndarray, seed: int, keys: list[int]
) -> None:
    clock = make_clock(START, 1, 60, TZ)
    errors = Co2SensorErrors(offset_sd_ppm=200.0, stuck_per_day=20.0, dropout_per_day=20.0)
    bank = Co2SensorBank(np.full(3, seed), np.array(keys), clock, errors)
    readings = read_all(bank, truth)
    assert not np.isinf(readings).any()
    assert (readings[~np.isnan(readings)] >= 0).all()


# --- thermometers ---------------------------------------------------------------------------


def test_an_error_free_thermometer_reads_the_truth_to_a_tenth() -> None:
    clock = make_clock(START, 1, 300, TZ)
    truth = np.random.default_rng(1).uniform(-5, 30, (clock.n_steps, 4))
    errors = ThermometerErrors(noise_k=0.0, offset_sd_k=0.0, dropout_per_day=0.0)
    bank = ThermometerBank(np.full(4, SEED), np.arange(4), clock, errors)
    np.testing.assert_allclose(read_all(bank, truth), np.round(truth * 10) / 10, atol=1e-9)


def test_thermometer_offsets_and_noise_match_their_sigma() -> None:
    clock = make_clock(START, 1, 60, TZ)
    n = 3000
    errors = ThermometerErrors(resolution_k=0.0, dropout_per_day=0.0)
    bank = ThermometerBank(np.full(n, SEED), np.arange(n), clock, errors)
    err = read_all(bank, np.full((60, n), 21.0)) - 21.0
    assert 0.19 < err.mean(axis=0).std() < 0.21  # per-sensor offset
    assert 0.048 < (err - err.mean(axis=0)).std() < 0.052  # noise around it
    default = ThermometerBank(np.full(100, SEED), np.arange(100), clock)
    readings = read_all(default, np.full((clock.n_steps, 100), 21.0))
    # 0.2 dropouts a day, 1-15 min each, over 100 sensors.
    assert 0 < np.isnan(readings).mean() < 0.01


def test_a_subset_of_a_bank_reads_as_a_bank_of_those_rows() -> None:
    clock = make_clock(START, 2, 60, TZ)
    errors = Co2SensorErrors(stuck_per_day=2.0, dropout_per_day=5.0)
    seeds = np.array([SEED, SEED, SEED + 1, SEED, SEED + 2])
    keys = np.array([7, 8, 7, 9, 7])
    rows = np.array([4, 1, 2])
    base = 500 + 300 * np.sin(np.arange(clock.n_steps) / 100.0)
    truth = np.stack([base + 10.0 * i for i in range(rows.size)], axis=1)
    sub = Co2SensorBank(seeds, keys, clock, errors).subset(rows)
    fresh_co2 = Co2SensorBank(seeds[rows], keys[rows], clock, errors)
    np.testing.assert_array_equal(read_all(sub, truth), read_all(fresh_co2, truth))
    sub_t = ThermometerBank(seeds, keys, clock).subset(rows)
    fresh_t = ThermometerBank(seeds[rows], keys[rows], clock)
    np.testing.assert_array_equal(read_all(sub_t, truth / 20.0), read_all(fresh_t, truth / 20.0))
