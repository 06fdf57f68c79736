"""Seeded stochastic occupancy: who enters and leaves each zone, reproducible per zone and day."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from sensors.arrays import BoolArray, FloatArray, IntArray
from sim.clock import SimClock

ZONE_KINDS = (
    "office",
    "open_office",
    "meeting_room",
    "classroom",
    "lecture_hall",
    "cafeteria",
    "corridor",
    "lobby",
)

# Purpose ids of the random streams, one per use, so that two uses never share draws.
# sim.sensor_models takes 2 and up.
PURPOSE_OCCUPANTS = 1

_DAY_S = 86400.0
_MIN_S = 60.0
_HOUR_S = 3600.0
# Every modelled zone is empty between midnight and 04:00: people and counters can then treat each
# local day on its own (nobody is left overnight, the 03:00 counter reset sees an empty room).
_EARLIEST_S = 4 * _HOUR_S
_LATEST_S = 23.75 * _HOUR_S

# Numbers without a cited source are modelling assumptions, marked [U] as in notes/domain.md
# (from experience, not checked against a study).

# Private offices and open-plan desks, per seat.
_OFFICE_P_PRESENT = 0.75  # remote work, sickness, leave [U]
_OPEN_OFFICE_P_PRESENT = 0.6  # hybrid work leaves open-plan desks well below design [U]
# Hybrid workers come in mid-week (Mon..Fri factors, mean 1) [U].
_OPEN_OFFICE_WEEKDAY_FACTOR = (0.95, 1.1, 1.1, 1.0, 0.85)
_ARRIVAL_AFTER_OPEN_S = 1 * _HOUR_S  # open 07:00 -> arrival around 08:00 [U]
_ARRIVAL_SD_S = 45 * _MIN_S
_DEPARTURE_BEFORE_CLOSE_S = 1.5 * _HOUR_S  # close 18:00 -> departure around 16:30 [U]
_DEPARTURE_SD_S = 60 * _MIN_S
_MIN_WORKDAY_S = 4 * _HOUR_S
_P_LUNCH_OUT = 0.85  # the rest eat at their desk [U]
_LUNCH_WINDOW_S = (11 * _HOUR_S, 12.5 * _HOUR_S)
_LUNCH_DURATION_S = (30 * _MIN_S, 45 * _MIN_S)
_ABSENCE_COUNT_CDF = (0.35, 0.70, 0.90)  # P(<=0), P(<=1), P(<=2) short absences; max 3 [U]
_ABSENCE_DURATION_S = (20 * _MIN_S, 90 * _MIN_S)  # meetings elsewhere, skewed short
_ABSENCE_MARGIN_S = 15 * _MIN_S  # absences and lunch fall inside the working day
_P_WEEKEND_VISIT = 0.02  # a worker comes in on a weekend or holiday [U]
_WEEKEND_ARRIVAL_S = (9 * _HOUR_S, 14 * _HOUR_S)
_WEEKEND_STAY_S = (1.5 * _HOUR_S, 5 * _HOUR_S)

# Meeting rooms: bookings on the half hour inside the room's bookable hours [U].
_SLOT_S = 1800.0
_MEETING_DURATION_CDF = (0.35, 0.75, 0.85)  # 30, 60, 90, (else) 120 min
_MEETING_MEAN_SLOTS = 0.35 * 1 + 0.40 * 2 + 0.10 * 3 + 0.15 * 4
_BOOKED_FRACTION = (0.4, 0.7)  # share of the bookable day, drawn per room and day
_P_NO_SHOW = 0.10  # booked, nobody comes
_P_FULL_HOUSE = 0.05  # otherwise attendees are 2 + Beta(1, 2.5) x (seats - 2), mean ~30 %
_ATTENDEE_BETA_B = 2.5
_GROUP_ARRIVAL_S = (-2 * _MIN_S, 3 * _MIN_S)  # the group comes in together, around the start
_P_LATECOMER = 0.12
_LATECOMER_S = (3 * _MIN_S, 10 * _MIN_S)
_GROUP_DEPARTURE_S = (0.0, 2 * _MIN_S)
_PERSON_JITTER_S = 60.0  # one person after another through the door

# Classrooms: Finnish basic-education day, lessons of 45 min at quarter past [U].
_LESSON_STARTS_S = tuple(h * _HOUR_S + 15 * _MIN_S for h in (8, 9, 10, 12, 13, 14))
_LESSON_S = 45 * _MIN_S
_DOUBLE_LESSON_S = 90 * _MIN_S  # 08:15-09:45 or 12:15-13:45, no break in between
_DOUBLE_FIRST_SLOTS = (0, 3)  # slots that may absorb the following one
_P_DOUBLE = 0.35
_P_LESSON_HERE = (
    0.8,
    0.8,
    0.8,
    0.8,
    0.8,
    0.6,
)  # others take place elsewhere; the young leave early
_CLASS_SIZE_FRACTION = (0.8, 1.0)
_CLASS_ARRIVAL_S = (-2.5 * _MIN_S, 0.5 * _MIN_S)  # the class fills within ~3 min
_CLASS_DEPARTURE_S = 3 * _MIN_S

# Lecture halls: Finnish university slots, 2 x 45 min with the quarter-hour break [U].
_LECTURE_STARTS_S = tuple(h * _HOUR_S + 15 * _MIN_S for h in (8, 10, 12, 14, 16))
_LECTURE_S = 105 * _MIN_S
_P_LECTURE = 0.6
# Attendance 0.2 + 0.8 x Kumaraswamy(1.5, 2): skewed, mean ~56 % of capacity [U].
_ATTENDANCE_MIN = 0.2
_ATTENDANCE_KUMARASWAMY = (1.5, 2.0)
_LECTURE_ARRIVAL_S = 10 * _MIN_S  # students arrive over the 10 minutes before the start
_P_LECTURE_LATE = 0.08
_LECTURE_LATE_S = 5 * _MIN_S
_LECTURE_DEPARTURE_S = 5 * _MIN_S

# Cafeterias: non-homogeneous Poisson arrivals, each visit a stay [U].
_LUNCH_ARRIVALS_S = (10.75 * _HOUR_S, 13 * _HOUR_S)  # bell-shaped (mean of 3 uniforms)
_LUNCH_STAY_S = (20 * _MIN_S, 35 * _MIN_S)
_COFFEE_ARRIVALS_S = (13.5 * _HOUR_S, 14.5 * _HOUR_S)
_COFFEE_STAY_S = (10 * _MIN_S, 20 * _MIN_S)
_BACKGROUND_STAY_S = (5 * _MIN_S, 20 * _MIN_S)
_PEAK_FRACTION = (0.5, 0.9)  # lunch peak occupancy / design, drawn per day
# Occupancy at the lunch peak per lunch visitor: mean stay x peak density of the arrivals.
_LUNCH_PEAK_SHARE = (
    0.5
    * (_LUNCH_STAY_S[0] + _LUNCH_STAY_S[1])
    * 2.25  # peak density of the mean of 3 uniforms on [0, 1]
    / (_LUNCH_ARRIVALS_S[1] - _LUNCH_ARRIVALS_S[0])
)
_COFFEE_VISITS_PER_SEAT = (0.1, 0.3)
_BACKGROUND_OCCUPANCY = 0.02  # share of seats used between the peaks

# Corridors and lobbies: people passing through [U].
_TRANSIT_OCCUPANCY_SHARE = 0.03
_TRANSIT_WEEKEND_FACTOR = 0.03
_TRANSIT_MIX_CDF = (0.5, 0.7, 0.85)  # uniform, morning, lunch, (else) afternoon
_TRANSIT_BUMP_HALF_WIDTH_S = 1 * _HOUR_S


@dataclass(frozen=True)
class _TransitKind:
    mean_occupancy: tuple[float, float]  # clip of share x design, people
    stay_s: tuple[float, float]


_TRANSIT = {
    "corridor": _TransitKind(mean_occupancy=(0.1, 1.0), stay_s=(20.0, 90.0)),
    "lobby": _TransitKind(mean_occupancy=(0.2, 1.5), stay_s=(1 * _MIN_S, 5 * _MIN_S)),
}


@dataclass(frozen=True)
class OccupantProfile:
    """Who uses a zone: its kind, its capacity and the hours it is scheduled to be occupied."""

    kind: str  # one of ZONE_KINDS
    design_occupancy: int  # seats / desks / capacity, people (>= 0)
    open_s: float  # scheduled occupied hours start, seconds after local midnight
    close_s: float  # scheduled occupied hours end, seconds after local midnight
    zone_key: int  # stable per zone, >= 0 (callers use zlib.crc32(zone_name.encode()))

    def __post_init__(self) -> None:
        if self.kind not in ZONE_KINDS:
            raise ValueError(f"kind must be one of {ZONE_KINDS}, got {self.kind!r}")
        if self.design_occupancy < 0:
            raise ValueError(f"design_occupancy must be >= 0, got {self.design_occupancy}")
        if not 0.0 <= self.open_s < self.close_s <= _DAY_S:
            raise ValueError(
                f"need 0 <= open_s < close_s <= 86400, got open_s={self.open_s}, "
                f"close_s={self.close_s}"
            )
        if self.zone_key < 0:
            raise ValueError(f"zone_key must be >= 0, got {self.zone_key}")


@dataclass(frozen=True)
class Occupancy:
    """People flows and counts per step and zone; count[k] = sum(ins[:k+1] - outs[:k+1])."""

    ins: npt.NDArray[np.int16]  # (n_steps, n_zones) people who entered during the step
    outs: npt.NDArray[np.int16]  # (n_steps, n_zones) people who left during the step
    count: npt.NDArray[np.int16]  # (n_steps, n_zones) true occupancy at the END of each step


def stream_rng(seed: int, zone_key: int, day: int, purpose: int) -> np.random.Generator:
    """The generator of one reproducible stream: a zone's draws for one local day and one use.

    `day` is the proleptic Gregorian ordinal of the local date (0 for draws that do not depend
    on the date). Keying by zone and day, never by position in a run, gives common random
    numbers: the same people and sensor faults whatever the run's start, zones or controller.
    """
    if seed < 0 or zone_key < 0 or day < 0:
        raise ValueError(f"seed, zone_key and day must be >= 0, got {seed}, {zone_key}, {day}")
    return np.random.default_rng([seed, zone_key, day, purpose])


# numpy's SeedSequence (numpy/random/bit_generator.pyx), for entropy of four 32-bit words and no
# spawn key: its hash constants evolve the same whatever the entropy, so many sequences hash at
# once as uint32 arrays. numpy documents SeedSequence as stable; a test compares with numpy.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_MASK32 = 0xFFFFFFFF


_U32 = npt.NDArray[np.uint32]


def _hashmix(value: _U32, hash_const: int) -> tuple[_U32, int]:
    value = value ^ np.uint32(hash_const)
    hash_const = (hash_const * _MULT_A) & _MASK32
    value = value * np.uint32(hash_const)
    return cast(_U32, value ^ (value >> 16)), hash_const  # uint32 throughout: wraps like C


def _mix(x: _U32, y: _U32) -> _U32:
    result = np.uint32(_MIX_MULT_L) * x - np.uint32(_MIX_MULT_R) * y
    return cast(_U32, result ^ (result >> 16))


def _pcg64_states(entropy: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
    """SeedSequence(row).generate_state(4, np.uint64) of each row of (n, 4) entropy words."""
    pool = [np.empty(0, dtype=np.uint32)] * 4
    hash_const = _INIT_A
    for i in range(4):
        pool[i], hash_const = _hashmix(entropy[:, i], hash_const)
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                h, hash_const = _hashmix(pool[i_src], hash_const)
                pool[i_dst] = _mix(pool[i_dst], h)
    words = np.empty((entropy.shape[0], 8), dtype=np.uint32)
    hash_const = _INIT_B
    for i in range(8):
        data = pool[i % 4] ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_B) & _MASK32
        data = data * np.uint32(hash_const)
        words[:, i] = data ^ (data >> 16)
    # Little-endian pairs of words, as SeedSequence assembles uint64 output.
    return words.astype("<u4").view("<u8").astype(np.uint64)


class _SeedState(np.random.bit_generator.ISeedSequence):
    """A seed sequence whose one output, the state PCG64 asks for, is already computed."""

    def __init__(self, state: npt.NDArray[np.uint64]) -> None:
        self._state = state

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> npt.NDArray[np.uint64]:  # noqa: ANN401  (numpy's own signature: any dtype-like)
        if n_words != 4 or np.dtype(dtype) != np.dtype(np.uint64):
            raise ValueError("only PCG64's seeding (4 uint64 words) is precomputed")
        return self._state


def stream_rngs(
    streams: Sequence[tuple[int, int]], day: int, purpose: int
) -> list[np.random.Generator]:
    """stream_rng(seed, zone_key, day, purpose) for many (seed, zone_key) at once: the very same
    generators, their seeds hashed together (a sensor bank draws one stream per sensor and day,
    and numpy's SeedSequence costs microseconds each)."""
    keys = np.array([(seed, key, day, purpose) for seed, key in streams], dtype=np.int64)
    keys = keys.reshape(-1, 4)
    if (keys < 0).any():
        raise ValueError("seed, zone_key and day must be >= 0")
    if (keys > _MASK32).any():  # more than one word per value: numpy's general path
        return [stream_rng(seed, key, day, purpose) for seed, key in streams]
    states = _pcg64_states(keys.astype(np.uint32))
    # PCG64 takes any ISeedSequence (numpy's stubs name only SeedSequence).
    return [np.random.Generator(np.random.PCG64(_SeedState(st))) for st in states]  # type: ignore[arg-type]


def generate_occupancy(
    profiles: Sequence[OccupantProfile],
    clock: SimClock,
    seed: int,
    holidays: frozenset[date] = frozenset(),
) -> Occupancy:
    """People entering and leaving each zone at every step of the clock.

    profiles: one per zone (column). Weekends and `holidays` are days off: offices see the odd
    weekend worker, schools, meeting rooms and cafeterias stay empty, corridors nearly so. School
    breaks (summer, Christmas) are holidays for the caller to pass. A zone's flows on a date
    depend only on (seed, zone_key, date), never on the run's start or the other zones. Event
    times are wall-clock times, binned into the step that contains them; a run that starts after
    midnight sees the people already inside enter during its first step.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    n_zones = len(profiles)
    day0 = int(clock.local_day[0])
    ordinals = list(range(day0, int(clock.local_day[-1]) + 1))
    workday = [
        date.fromordinal(d).weekday() < 5 and date.fromordinal(d) not in holidays for d in ordinals
    ]
    days = _Days(ordinals=ordinals, workday=workday)
    ins = np.zeros(clock.n_steps * n_zones, dtype=np.int16)
    outs = np.zeros(clock.n_steps * n_zones, dtype=np.int16)
    binner = _Binner(clock, day0, n_zones)
    for kind, generate in _GENERATORS.items():
        cols = [i for i, p in enumerate(profiles) if p.kind == kind and p.design_occupancy > 0]
        if not cols:
            continue
        zones = _Zones(cols=np.asarray(cols, dtype=np.int64), profiles=[profiles[i] for i in cols])
        events = generate(zones, days, seed, kind)
        binner.add(ins, events.in_col, events.in_day, events.in_t)
        binner.add(outs, events.out_col, events.out_day, events.out_t)
    ins2 = ins.reshape(clock.n_steps, n_zones)
    outs2 = outs.reshape(clock.n_steps, n_zones)
    count = np.cumsum(ins2 - outs2, axis=0, dtype=np.int16)
    return Occupancy(ins=ins2, outs=outs2, count=count)


# --- plumbing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Days:
    ordinals: list[int]  # local dates of the run, as ordinals
    workday: list[bool]


@dataclass(frozen=True)
class _Zones:
    """The zones of one kind: their columns in the output and their profiles."""

    cols: IntArray
    profiles: list[OccupantProfile]

    def attr(self, name: str) -> FloatArray:
        return np.array([float(getattr(p, name)) for p in self.profiles])


@dataclass(frozen=True)
class _Events:
    """Entries and exits: output column, index of the run's day, local time in s after midnight."""

    in_col: IntArray
    in_day: IntArray
    in_t: FloatArray
    out_col: IntArray
    out_day: IntArray
    out_t: FloatArray

    @staticmethod
    def of_visits(col: IntArray, day: IntArray, t_in: FloatArray, t_out: FloatArray) -> _Events:
        """Each visit is one person inside from t_in to t_out (t_out >= t_in)."""
        return _Events(col, day, t_in, col, day, t_out)


class _Binner:
    """Bins (day, wall-clock time) events into the clock's steps."""

    def __init__(self, clock: SimClock, day0: int, n_zones: int) -> None:
        # A running max makes the keys monotone: the hour repeated when daylight saving ends folds
        # into its first pass, and a time skipped when it starts falls into the step before.
        self._keys = np.maximum.accumulate((clock.local_day - day0) * _DAY_S + clock.local_tod_s)
        self._end_key = float(self._keys[-1]) + clock.dt_s
        self._n_zones = n_zones

    def add(self, flat: npt.NDArray[np.int16], col: IntArray, day: IntArray, t: FloatArray) -> None:
        key = day * _DAY_S + t
        keep = key < self._end_key
        step = np.searchsorted(self._keys, key[keep], side="right") - 1
        # Before the run's first step: the person is already inside when the run starts.
        np.maximum(step, 0, out=step)
        np.add.at(flat, step * self._n_zones + col[keep], 1)


def _draw_per_zone_day(
    zones: _Zones,
    days: _Days,
    seed: int,
    on_workdays: bool,
    draw: Callable[[np.random.Generator, OccupantProfile], FloatArray],
) -> tuple[list[FloatArray], IntArray, IntArray]:
    """Per (zone, day) of the wanted day type, the block `draw` takes from the zone-day stream.

    Returns the blocks and, per block, the index of its zone in `zones` and of its day.
    """
    blocks: list[FloatArray] = []
    zi: list[int] = []
    di: list[int] = []
    for z, prof in enumerate(zones.profiles):
        for d, ordinal in enumerate(days.ordinals):
            if days.workday[d] == on_workdays:
                blocks.append(
                    draw(stream_rng(seed, prof.zone_key, ordinal, PURPOSE_OCCUPANTS), prof)
                )
                zi.append(z)
                di.append(d)
    return blocks, np.asarray(zi, dtype=np.int64), np.asarray(di, dtype=np.int64)


def _ragged_arange(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For groups of sizes `counts`: each member's group index and index within its group."""
    group = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return group, np.arange(group.size) - starts[group]


def _uniform(u: FloatArray, lo_hi: tuple[float, float]) -> FloatArray:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


def _kumaraswamy(u: FloatArray, a: float, b: float) -> FloatArray:
    """Inverse CDF of the Kumaraswamy distribution: a Beta look-alike on [0, 1] from a uniform."""
    return np.asarray((1.0 - (1.0 - u) ** (1.0 / b)) ** (1.0 / a))


def _box_muller(u1: FloatArray, u2: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Two independent standard normals from two uniforms on [0, 1)."""
    r = np.sqrt(-2.0 * np.log1p(-u1))
    return r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)


def _capacity_filter(zd: IntArray, t_in: FloatArray, t_out: FloatArray, cap: IntArray) -> BoolArray:
    """Which visits get in when a zone turns people away at `cap` (per visit, of its zone-day).

    A visitor who finds `cap` people inside (in the unfiltered arrivals) goes elsewhere. Keeping
    only those visits bounds the kept count: the last arrival of any group of kept people found
    at least the others of the group inside, so a group larger than `cap` cannot exist.
    """
    span = 2 * _DAY_S
    key_in = zd * span + t_in
    key_out = zd * span + t_out
    order = np.argsort(key_in, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    sorted_in = key_in[order]
    sorted_out = np.sort(key_out)
    zd_start = zd * span
    arrived_before = rank - np.searchsorted(sorted_in, zd_start, side="left")
    left_before = np.searchsorted(sorted_out, key_in, side="right") - np.searchsorted(
        sorted_out, zd_start, side="left"
    )
    return np.asarray(arrived_before - left_before < cap)


# --- offices --------------------------------------------------------------------------------


def _desk_workers(zones: _Zones, days: _Days, seed: int, kind: str) -> _Events:
    """Offices and open-plan desks: one potential worker per seat, present or not each day."""
    n_cols = 13  # column 0: present today; 1..12: the day's shape (see _workday)

    def workday_block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        return rng.random((prof.design_occupancy, n_cols))

    def weekend_block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        return rng.random((prof.design_occupancy, 3))

    design = np.array([p.design_occupancy for p in zones.profiles], dtype=np.int64)
    blocks, zi, di = _draw_per_zone_day(zones, days, seed, True, workday_block)
    in_parts: list[tuple[IntArray, IntArray, FloatArray]] = []
    out_parts: list[tuple[IntArray, IntArray, FloatArray]] = []
    if blocks:
        u = np.concatenate(blocks)
        z = np.repeat(zi, design[zi])
        d = np.repeat(di, design[zi])
        weekday = np.array([date.fromordinal(o).weekday() for o in days.ordinals])[d]
        if kind == "open_office":
            p_present = _OPEN_OFFICE_P_PRESENT * np.asarray(_OPEN_OFFICE_WEEKDAY_FACTOR)[weekday]
        else:
            p_present = np.full(u.shape[0], _OFFICE_P_PRESENT)
        present = u[:, 0] < p_present
        u, z, d = u[present], z[present], d[present]
        col = zones.cols[z]
        arrive, depart, away_start, away_end = _workday(
            u, zones.attr("open_s")[z], zones.attr("close_s")[z]
        )
        # Merge overlapping absences: sorted by start, a new group starts past every earlier end.
        order = np.argsort(away_start, axis=1)
        s = np.take_along_axis(away_start, order, axis=1)
        e = np.take_along_axis(away_end, order, axis=1)
        run_end = np.maximum.accumulate(e, axis=1)
        prev_end = np.concatenate([np.full((s.shape[0], 1), -np.inf), run_end[:, :-1]], axis=1)
        next_start = np.concatenate([s[:, 1:], np.full((s.shape[0], 1), np.inf)], axis=1)
        valid = np.isfinite(s)
        leaves = valid & (s > prev_end)
        returns = valid & (next_start > run_end)
        rows_l, _ = np.nonzero(leaves)
        rows_r, _ = np.nonzero(returns)
        in_parts += [(col, d, arrive), (col[rows_r], d[rows_r], run_end[returns])]
        out_parts += [(col, d, depart), (col[rows_l], d[rows_l], s[leaves])]
    blocks, zi, di = _draw_per_zone_day(zones, days, seed, False, weekend_block)
    if blocks:
        w = np.concatenate(blocks)
        z = np.repeat(zi, design[zi])
        d = np.repeat(di, design[zi])
        comes = w[:, 0] < _P_WEEKEND_VISIT
        arrive = _uniform(w[comes, 1], _WEEKEND_ARRIVAL_S)
        depart = arrive + _uniform(w[comes, 2], _WEEKEND_STAY_S)
        in_parts.append((zones.cols[z[comes]], d[comes], arrive))
        out_parts.append((zones.cols[z[comes]], d[comes], depart))
    return _join(in_parts, out_parts)


def _workday(
    u: FloatArray, open_s: FloatArray, close_s: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """A present worker's day from their uniform draws u (n, 13), columns 1..12.

    Returns arrival and departure (n,) and up to four absences, lunch included, (n, 4) starts and
    ends in s after midnight; unused absences have start +inf and end -inf.
    """
    z_arrive, z_depart = _box_muller(u[:, 1], u[:, 2])
    # Clipped at 3 sigma: a normal tail must not put anyone in before dawn or past midnight.
    arrive = open_s + _ARRIVAL_AFTER_OPEN_S + _ARRIVAL_SD_S * np.clip(z_arrive, -3, 3)
    arrive = np.clip(arrive, _EARLIEST_S, _LATEST_S - _MIN_WORKDAY_S)
    depart = close_s - _DEPARTURE_BEFORE_CLOSE_S + _DEPARTURE_SD_S * np.clip(z_depart, -3, 3)
    depart = np.minimum(np.maximum(depart, arrive + _MIN_WORKDAY_S), _LATEST_S)
    earliest_out = arrive + _ABSENCE_MARGIN_S
    latest_back = depart - _ABSENCE_MARGIN_S

    lunch_dur = _uniform(u[:, 4], _LUNCH_DURATION_S)
    lunch_start = _LUNCH_WINDOW_S[0] + u[:, 3] * (
        _LUNCH_WINDOW_S[1] - _LUNCH_WINDOW_S[0] - lunch_dur
    )
    lunch_end = lunch_start + lunch_dur
    # Column 5 is a fresh uniform for "goes out for lunch" (column 3 placed it).
    lunch_ok = (u[:, 5] < _P_LUNCH_OUT) & (lunch_start >= earliest_out) & (lunch_end <= latest_back)

    n_absences = (u[:, 6:7] >= np.asarray(_ABSENCE_COUNT_CDF)).sum(axis=1)
    dur = (
        _ABSENCE_DURATION_S[0] + (_ABSENCE_DURATION_S[1] - _ABSENCE_DURATION_S[0]) * u[:, 7:10] ** 2
    )
    room = (latest_back - earliest_out)[:, None] - dur
    start = earliest_out[:, None] + u[:, 10:13] * np.maximum(room, 0.0)
    ok = (np.arange(3)[None, :] < n_absences[:, None]) & (room >= 0)

    starts = np.concatenate([lunch_start[:, None], start], axis=1)
    ends = np.concatenate([lunch_end[:, None], start + dur], axis=1)
    valid = np.concatenate([lunch_ok[:, None], ok], axis=1)
    return arrive, depart, np.where(valid, starts, np.inf), np.where(valid, ends, -np.inf)


def _join(
    in_parts: list[tuple[IntArray, IntArray, FloatArray]],
    out_parts: list[tuple[IntArray, IntArray, FloatArray]],
) -> _Events:
    def cat(parts: list[tuple[IntArray, IntArray, FloatArray]], i: int) -> npt.NDArray[np.generic]:
        if not parts:
            return np.zeros(0, dtype=np.float64 if i == 2 else np.int64)
        return np.concatenate([p[i] for p in parts])

    return _Events(
        in_col=cat(in_parts, 0).astype(np.int64),
        in_day=cat(in_parts, 1).astype(np.int64),
        in_t=cat(in_parts, 2).astype(np.float64),
        out_col=cat(out_parts, 0).astype(np.int64),
        out_day=cat(out_parts, 1).astype(np.int64),
        out_t=cat(out_parts, 2).astype(np.float64),
    )


_NO_EVENTS = _Events(
    *(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)),
    *(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)),
)


# --- sessions: meetings, lessons, lectures --------------------------------------------------


@dataclass(frozen=True)
class _Sessions:
    """Sessions (one group of people in a zone) and the per-person draws behind them.

    Arrays are (n_sessions,); `draw_base` is the offset of the session's person draws (two per
    seat: arrival, departure) in `person_u`.
    """

    zd: IntArray  # zone-day block index
    start_s: FloatArray
    end_s: FloatArray
    n_people: IntArray
    draw_base: IntArray
    person_u: FloatArray


def _attendees(sess: _Sessions) -> tuple[IntArray, FloatArray, FloatArray]:
    """Each attendee's session index and its arrival and departure uniforms."""
    s, j = _ragged_arange(sess.n_people)
    at = sess.draw_base[s] + 2 * j
    return s, sess.person_u[at], sess.person_u[at + 1]


def _meeting_slots(prof: OccupantProfile) -> tuple[float, int]:
    """The bookable half hours: start of the first, s after midnight, and how many there are."""
    # Early birds come in before the start: keep them inside the day's activity window.
    first = math.ceil(max(prof.open_s, _EARLIEST_S + 15 * _MIN_S) / _SLOT_S) * _SLOT_S
    # Room for the last group to leave before the day's activity window closes.
    last_end = min(prof.close_s, _LATEST_S - _GROUP_DEPARTURE_S[1] - _PERSON_JITTER_S)
    return first, max(int((last_end - first) // _SLOT_S), 0)


def _meeting_rooms(zones: _Zones, days: _Days, seed: int, kind: str) -> _Events:
    """Bookings on the half hour; a group comes in around the start and leaves after the end."""
    del kind
    design = np.array([p.design_occupancy for p in zones.profiles], dtype=np.int64)
    grid = [_meeting_slots(p) for p in zones.profiles]
    first_slot_s = np.array([g[0] for g in grid])
    n_slots = np.array([g[1] for g in grid], dtype=np.int64)
    n_cols = 8

    def block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        k = _meeting_slots(prof)[1]
        meetings = rng.random((k, n_cols)).ravel()
        people = rng.random(k * prof.design_occupancy * 2)
        return np.concatenate([meetings, people])

    blocks, zi, di = _draw_per_zone_day(zones, days, seed, True, block)
    if not blocks:
        return _NO_EVENTS
    k_max = int(n_slots.max())
    if k_max == 0:
        return _NO_EVENTS
    n_zd = len(blocks)
    flat = np.concatenate(blocks)
    block_base = np.cumsum([b.size for b in blocks]) - np.array([b.size for b in blocks])
    k_zd = n_slots[zi]
    # Meeting draws into an (n_zd, k_max, n_cols) array; padding is never a valid meeting.
    m = np.zeros((n_zd, k_max, n_cols))
    rows, ks = _ragged_arange(k_zd)
    src = block_base[rows][:, None] + ks[:, None] * n_cols + np.arange(n_cols)[None, :]
    m[rows, ks] = flat[src]
    kk = np.arange(k_max)[None, :]

    dur = 1 + (m[:, :, 0:1] >= np.asarray(_MEETING_DURATION_CDF)).sum(axis=2)
    booked = _uniform(m[:, 0, 7], _BOOKED_FRACTION)
    # Gaps between bookings are geometric, their mean giving the day's booked fraction.
    mean_gap = _MEETING_MEAN_SLOTS * (1 - booked) / booked
    p_gap = 1.0 / (1.0 + mean_gap)
    gap = np.floor(np.log1p(-m[:, :, 1]) / np.log1p(-p_gap)[:, None]).astype(np.int64)
    start_slot = np.cumsum(gap + dur, axis=1) - dur
    valid = (kk < k_zd[:, None]) & (start_slot + dur <= k_zd[:, None])
    z_design = design[zi][:, None]
    size = 2 + np.floor(_kumaraswamy(m[:, :, 3], 1.0, _ATTENDEE_BETA_B) * (z_design - 2))
    size = np.where(m[:, :, 4] < _P_FULL_HOUSE, z_design, size)
    size = np.minimum(size, z_design)  # rooms with one seat
    n_people = np.where(valid & (m[:, :, 2] >= _P_NO_SHOW), size, 0).astype(np.int64)

    start = first_slot_s[zi][:, None] + start_slot * _SLOT_S
    end = start + dur * _SLOT_S
    group_in = start + _uniform(m[:, :, 5], _GROUP_ARRIVAL_S)
    group_out = end + _uniform(m[:, :, 6], _GROUP_DEPARTURE_S)
    # Back to back: the next group waits at the door until the previous one has left, which
    # keeps the room within its seats.
    prev_out = np.concatenate([np.full((n_zd, 1), -np.inf), group_out[:, :-1]], axis=1)
    prev_people = np.concatenate([np.zeros((n_zd, 1), np.int64), n_people[:, :-1]], axis=1)
    waits = (gap == 0) & (prev_people > 0)
    group_in = np.where(waits, np.maximum(group_in, prev_out + _PERSON_JITTER_S), group_in)

    zd_s, k_s = np.nonzero(n_people)
    people_base = block_base[zd_s] + k_zd[zd_s] * n_cols
    sess = _Sessions(
        zd=zd_s,
        start_s=start[zd_s, k_s],
        end_s=end[zd_s, k_s],
        n_people=n_people[zd_s, k_s],
        draw_base=people_base + k_s * design[zi[zd_s]] * 2,
        person_u=flat,
    )
    s, u_in, u_out = _attendees(sess)
    late = u_in < _P_LATECOMER
    t_late = sess.start_s[s] + _uniform(u_in / _P_LATECOMER, _LATECOMER_S)
    t_group = group_in[zd_s, k_s][s] + _PERSON_JITTER_S * (u_in - _P_LATECOMER) / (1 - _P_LATECOMER)
    t_in = np.where(late, t_late, t_group)
    t_out = group_out[zd_s, k_s][s] + _PERSON_JITTER_S * u_out
    zd = sess.zd[s]
    return _Events.of_visits(zones.cols[zi[zd]], di[zd], t_in, t_out)


def _timetable_draws(
    zones: _Zones, days: _Days, seed: int, n_slots: int, n_cols: int
) -> tuple[FloatArray, IntArray, FloatArray, IntArray, IntArray, IntArray] | None:
    """Draws for a fixed grid of slots on workdays.

    Returns slot draws (n_zd, n_slots, n_cols), the offset of each slot's person draws in the flat
    draws (n_zd, n_slots), the flat draws, and per zone-day block its zone and day index, and the
    seats per zone.
    """

    def block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        slots = rng.random((n_slots, n_cols)).ravel()
        people = rng.random(n_slots * prof.design_occupancy * 2)
        return np.concatenate([slots, people])

    blocks, zi, di = _draw_per_zone_day(zones, days, seed, True, block)
    if not blocks:
        return None
    sizes = np.array([b.size for b in blocks])
    base = np.cumsum(sizes) - sizes
    flat = np.concatenate(blocks)
    slot_u = flat[base[:, None] + np.arange(n_slots * n_cols)[None, :]]
    design = np.array([p.design_occupancy for p in zones.profiles], dtype=np.int64)
    seat_draws = 2 * design[zi][:, None]  # arrival and departure per seat and slot
    person_base = (base + n_slots * n_cols)[:, None] + np.arange(n_slots)[None, :] * seat_draws
    return slot_u.reshape(len(blocks), n_slots, n_cols), person_base, flat, zi, di, design


def _slot_sessions(
    n_people: IntArray, start: FloatArray, end: FloatArray, person_base: IntArray, flat: FloatArray
) -> _Sessions:
    """The sessions of a (n_zd, n_slots) grid that have people."""
    zd_s, k_s = np.nonzero(n_people)
    return _Sessions(
        zd=zd_s,
        start_s=start[zd_s, k_s],
        end_s=end[zd_s, k_s],
        n_people=n_people[zd_s, k_s],
        draw_base=person_base[zd_s, k_s],
        person_u=flat,
    )


def _classrooms(zones: _Zones, days: _Days, seed: int, kind: str) -> _Events:
    """Finnish school day: 45-min lessons (some doubled), a class of 80-100 % of the seats."""
    del kind
    drawn = _timetable_draws(zones, days, seed, len(_LESSON_STARTS_S), 3)
    if drawn is None:
        return _NO_EVENTS
    u, person_base, flat, zi, di, design = drawn
    start = np.broadcast_to(np.asarray(_LESSON_STARTS_S), u.shape[:2])
    used = u[:, :, 0] < np.asarray(_P_LESSON_HERE)
    double = np.zeros(u.shape[:2], dtype=bool)
    for k in _DOUBLE_FIRST_SLOTS:
        double[:, k] = used[:, k] & (u[:, k, 1] < _P_DOUBLE)
        used[:, k + 1] &= ~double[:, k]  # the double lesson takes the next slot too
    end = start + np.where(double, _DOUBLE_LESSON_S, _LESSON_S)
    used &= _within_hours(zones, zi, start, end)
    size = np.rint(design[zi][:, None] * _uniform(u[:, :, 2], _CLASS_SIZE_FRACTION))
    n_people = np.where(used, size, 0).astype(np.int64)
    sess = _slot_sessions(n_people, start, end, person_base, flat)
    s, u_in, u_out = _attendees(sess)
    t_in = sess.start_s[s] + _uniform(u_in, _CLASS_ARRIVAL_S)
    t_out = sess.end_s[s] + _CLASS_DEPARTURE_S * u_out**2
    zd = sess.zd[s]
    return _Events.of_visits(zones.cols[zi[zd]], di[zd], t_in, t_out)


def _within_hours(zones: _Zones, zi: IntArray, start: FloatArray, end: FloatArray) -> BoolArray:
    """Slots of a fixed timetable that fall inside the zone's hours (15 min of slack)."""
    open_s = zones.attr("open_s")[zi][:, None]
    close_s = zones.attr("close_s")[zi][:, None]
    return np.asarray((start >= open_s - 15 * _MIN_S) & (end <= close_s + 15 * _MIN_S))


def _lecture_halls(zones: _Zones, days: _Days, seed: int, kind: str) -> _Events:
    """University lectures in 2 x 45 min slots; students trickle in over the 10 min before."""
    del kind
    drawn = _timetable_draws(zones, days, seed, len(_LECTURE_STARTS_S), 2)
    if drawn is None:
        return _NO_EVENTS
    u, person_base, flat, zi, di, design = drawn
    start = np.broadcast_to(np.asarray(_LECTURE_STARTS_S), u.shape[:2])
    end = start + _LECTURE_S
    used = (u[:, :, 0] < _P_LECTURE) & _within_hours(zones, zi, start, end)
    share = _ATTENDANCE_MIN + (1 - _ATTENDANCE_MIN) * _kumaraswamy(
        u[:, :, 1], *_ATTENDANCE_KUMARASWAMY
    )
    n_people = np.where(used, np.rint(design[zi][:, None] * share), 0).astype(np.int64)
    sess = _slot_sessions(n_people, start, end, person_base, flat)
    s, u_in, u_out = _attendees(sess)
    late = u_in < _P_LECTURE_LATE
    # sqrt of a uniform has density 2x: most arrive just before the start.
    early = np.sqrt(np.maximum(u_in - _P_LECTURE_LATE, 0.0) / (1 - _P_LECTURE_LATE))
    t_in = np.where(
        late,
        sess.start_s[s] + _LECTURE_LATE_S * u_in / _P_LECTURE_LATE,
        sess.start_s[s] - _LECTURE_ARRIVAL_S * (1 - early),
    )
    t_out = sess.end_s[s] + _LECTURE_DEPARTURE_S * u_out**2
    zd = sess.zd[s]
    return _Events.of_visits(zones.cols[zi[zd]], di[zd], t_in, t_out)


# --- Poisson visitors: cafeterias, corridors, lobbies -----------------------------------------


def _bell(u: FloatArray, lo_hi: tuple[float, float]) -> FloatArray:
    """A bell-shaped time on [lo, hi] from (n, 3) uniforms: their mean (Irwin-Hall)."""
    return _uniform(u.mean(axis=1), lo_hi)


def _cafeterias(zones: _Zones, days: _Days, seed: int, kind: str) -> _Events:
    """A lunch peak 10:45-13:00, a coffee peak at 14:00 and a trickle between; stays of minutes."""
    del kind

    def block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        c = rng.random(2)
        seats = prof.design_occupancy
        lam = np.array(
            [
                _uniform(c[0], _PEAK_FRACTION) * seats / _LUNCH_PEAK_SHARE,
                _uniform(c[1], _COFFEE_VISITS_PER_SEAT) * seats,
                _BACKGROUND_OCCUPANCY
                * seats
                * (prof.close_s - prof.open_s)
                / (0.5 * (_BACKGROUND_STAY_S[0] + _BACKGROUND_STAY_S[1])),
            ]
        )
        n = rng.poisson(lam)
        tag = np.repeat(np.arange(3.0), n)[:, None]
        return np.concatenate([tag, rng.random((int(n.sum()), 4))], axis=1)

    blocks, zi, di = _draw_per_zone_day(zones, days, seed, True, block)
    if not blocks:
        return _NO_EVENTS
    n = np.array([b.shape[0] for b in blocks])
    v = np.concatenate(blocks)
    z, d = np.repeat(zi, n), np.repeat(di, n)
    open_s, close_s = zones.attr("open_s")[z], zones.attr("close_s")[z]
    tag = v[:, 0]
    t_in = np.select(
        [tag == 0, tag == 1],
        [_bell(v[:, 1:4], _LUNCH_ARRIVALS_S), _bell(v[:, 1:4], _COFFEE_ARRIVALS_S)],
        default=open_s + (close_s - open_s) * v[:, 1],
    )
    stay = np.select(
        [tag == 0, tag == 1],
        [_uniform(v[:, 4], _LUNCH_STAY_S), _uniform(v[:, 4], _COFFEE_STAY_S)],
        default=_uniform(v[:, 4], _BACKGROUND_STAY_S),
    )
    cap = np.array([p.design_occupancy for p in zones.profiles], dtype=np.int64)[z]
    return _poisson_visits(zones.cols[z], d, t_in, stay, open_s=open_s, close_s=close_s, cap=cap)


def _poisson_visits(
    col: IntArray,
    day: IntArray,
    t_in: FloatArray,
    stay: FloatArray,
    *,
    open_s: FloatArray,
    close_s: FloatArray,
    cap: IntArray,
) -> _Events:
    """Visits (arrays per visit) kept inside the open hours and turned away at capacity."""
    lo = np.maximum(open_s, _EARLIEST_S)
    hi = np.minimum(close_s, _LATEST_S)
    inside = (t_in >= lo) & (t_in < hi)
    col, day, t_in, stay, hi, cap = (
        col[inside],
        day[inside],
        t_in[inside],
        stay[inside],
        hi[inside],
        cap[inside],
    )
    t_out = np.minimum(t_in + stay, hi)
    group = col * (int(day.max(initial=0)) + 1) + day
    ok = _capacity_filter(group, t_in, t_out, cap)
    return _Events.of_visits(col[ok], day[ok], t_in[ok], t_out[ok])


def _transit(zones: _Zones, days: _Days, seed: int, kind: str) -> _Events:
    """Corridors and lobbies: people passing through, busier at arrival, lunch and leaving times."""
    spec = _TRANSIT[kind]
    mean_stay = 0.5 * (spec.stay_s[0] + spec.stay_s[1])

    def rate(prof: OccupantProfile) -> float:
        lo, hi = spec.mean_occupancy
        occupancy = min(max(_TRANSIT_OCCUPANCY_SHARE * prof.design_occupancy, lo), hi)
        return occupancy * (prof.close_s - prof.open_s) / mean_stay

    def workday_block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        return rng.random((int(rng.poisson(rate(prof))), 4))

    def weekend_block(rng: np.random.Generator, prof: OccupantProfile) -> FloatArray:
        return rng.random((int(rng.poisson(rate(prof) * _TRANSIT_WEEKEND_FACTOR)), 4))

    parts: list[tuple[FloatArray, IntArray, IntArray]] = []
    for on_workdays, block in ((True, workday_block), (False, weekend_block)):
        blocks, zi, di = _draw_per_zone_day(zones, days, seed, on_workdays, block)
        if blocks:
            n = np.array([b.shape[0] for b in blocks])
            parts.append((np.concatenate(blocks), np.repeat(zi, n), np.repeat(di, n)))
    if not parts:
        return _NO_EVENTS
    v = np.concatenate([p[0] for p in parts])
    z = np.concatenate([p[1] for p in parts])
    d = np.concatenate([p[2] for p in parts])
    open_s, close_s = zones.attr("open_s")[z], zones.attr("close_s")[z]
    mix = (v[:, 0:1] >= np.asarray(_TRANSIT_MIX_CDF)).sum(axis=1)
    centre = np.select(
        [mix == 1, mix == 2],
        [open_s + _ARRIVAL_AFTER_OPEN_S, np.full_like(open_s, 12 * _HOUR_S)],
        default=close_s - _DEPARTURE_BEFORE_CLOSE_S,
    )
    # Triangular bumps (sum of two uniforms) around the busy times, on top of a uniform floor.
    bump = centre + _TRANSIT_BUMP_HALF_WIDTH_S * (v[:, 1] + v[:, 2] - 1.0)
    t_in = np.where(mix == 0, open_s + (close_s - open_s) * v[:, 1], bump)
    stay = _uniform(v[:, 3], spec.stay_s)
    design = np.array([p.design_occupancy for p in zones.profiles], dtype=np.int64)
    # "0-3 people": a corridor or lobby holds a handful at most, a tenth of a big one.
    cap = np.minimum(design, np.maximum(3, np.ceil(0.1 * design))).astype(np.int64)
    return _poisson_visits(zones.cols[z], d, t_in, stay, open_s=open_s, close_s=close_s, cap=cap[z])


_GENERATORS: dict[str, Callable[[_Zones, _Days, int, str], _Events]] = {
    "office": _desk_workers,
    "open_office": _desk_workers,
    "meeting_room": _meeting_rooms,
    "classroom": _classrooms,
    "lecture_hall": _lecture_halls,
    "cafeteria": _cafeterias,
    "corridor": _transit,
    "lobby": _transit,
}
