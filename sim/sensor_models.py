"""Simulated sensors that err as real ones do: people counters, CO2 sensors and thermometers."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Self

import numpy as np
import numpy.typing as npt
from numba import njit

from sensors.arrays import BoolArray, FloatArray, IntArray
from sim.clock import SimClock
from sim.occupants import Occupancy, stream_rng, stream_rngs

# Purpose ids of the random streams (sim.occupants uses 1).
_PURPOSE_COUNTER = 2
_PURPOSE_CO2_DAY = 3
_PURPOSE_CO2_STATIC = 4
_PURPOSE_CO2_DRIFT = 5
_PURPOSE_THERMO_DAY = 6
_PURPOSE_THERMO_STATIC = 7

_DAY_S = 86400.0
_HOUR_S = 3600.0
_DROPOUT_S = (60.0, 900.0)  # short dropouts of 1-15 min
# The drift random walk is tied down every _DRIFT_ANCHOR_DAYS days (see _SensorBank._drift_at).
_DRIFT_ANCHOR_DAYS = 64


@dataclass(frozen=True)
class CounterErrors:
    """Error rates of a door people counter.

    The modes are those of notes/domain.md section 4, "People-counter error modes": asymmetric
    IN/OUT misses, groups merged at peaks, double counts and a nightly reset.
    """

    # Missed passages: OUT is missed more often than IN, which leaves "ghost" persons at the end of
    # the day (5-7 ghosts in the raum-tracker field notes) [domain.md section 4, Dune005].
    p_miss_in: float = 0.03  # per person entering
    p_miss_out: float = 0.08  # per person leaving
    # More than this many people through the door within one step count as a group; each person
    # beyond it is missed with p_group_miss. A light barrier in the field notes undercounted peaks
    # by 1.5-3x [domain.md section 4, Dune005]; these defaults are a milder, better-placed device.
    group_threshold: int = 4
    p_group_miss: float = 0.35
    p_double: float = 0.005  # a person counted twice
    # The usual practice is a daily reset [domain.md section 4, Irisys/Fluke]: both registers
    # drop to 0 at this local time every night.
    reset_tod_s: float = 3 * _HOUR_S

    def __post_init__(self) -> None:
        for name in ("p_miss_in", "p_miss_out", "p_group_miss", "p_double"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.group_threshold < 0:
            raise ValueError(f"group_threshold must be >= 0, got {self.group_threshold}")
        if not 0.0 <= self.reset_tod_s < _DAY_S:
            raise ValueError(f"reset_tod_s must be in [0, 86400), got {self.reset_tod_s}")


def simulate_people_counter(
    occupancy: Occupancy,
    clock: SimClock,
    seed: int,
    zone_keys: Sequence[int],
    errors: CounterErrors = CounterErrors(),
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """The cumulative IN and OUT registers of one door counter per zone, as read over Modbus.

    Returns (raw_in, raw_out), each (n_steps, n_zones) int32: the registers at the end of each
    step. They count from 0 at the run's start and drop to 0 in the first step of each local day
    at or after `errors.reset_tod_s`; in between they never decrease. A zone's errors on a day
    come from the (seed, zone_key, day) stream, so they depend only on that day's true flows.
    """
    n_steps, n_zones = occupancy.ins.shape
    if n_steps != clock.n_steps:
        raise ValueError(f"occupancy has {n_steps} steps, the clock {clock.n_steps}")
    if len(zone_keys) != n_zones:
        raise ValueError(f"{len(zone_keys)} zone_keys for {n_zones} zones")
    # Zone-major, so that each (zone, day) is one contiguous run of steps.
    flow_in = np.ascontiguousarray(occupancy.ins.T, dtype=np.int64)
    flow_out = np.ascontiguousarray(occupancy.outs.T, dtype=np.int64)
    day_first = _day_starts(clock)
    ordinals = clock.local_day[day_first]
    per_day_in = np.add.reduceat(flow_in, day_first, axis=1)  # (n_zones, n_days)
    per_day_out = np.add.reduceat(flow_out, day_first, axis=1)
    draws_in: list[FloatArray] = []
    draws_out: list[FloatArray] = []
    for z, zone_key in enumerate(zone_keys):
        for d, ordinal in enumerate(ordinals.tolist()):
            n_in, n_out = int(per_day_in[z, d]), int(per_day_out[z, d])
            if n_in or n_out:
                rng = stream_rng(seed, int(zone_key), ordinal, _PURPOSE_COUNTER)
                draws_in.append(rng.random((n_in, 2)))
                draws_out.append(rng.random((n_out, 2)))
    seen_in = _count_passages(flow_in, draws_in, errors.p_miss_in, errors)
    seen_out = _count_passages(flow_out, draws_out, errors.p_miss_out, errors)
    segment_starts = _reset_steps(clock, errors.reset_tod_s)
    return _registers(seen_in, segment_starts), _registers(seen_out, segment_starts)


def _day_starts(clock: SimClock) -> IntArray:
    """Index of the first step of each local day of the run."""
    return np.flatnonzero(np.r_[True, np.diff(clock.local_day) != 0]).astype(np.int64)


def _ragged_arange(counts: IntArray) -> IntArray:
    """For groups of sizes `counts`, each member's index within its group."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def _count_passages(
    flow: IntArray, draws: list[FloatArray], p_miss: float, errors: CounterErrors
) -> IntArray:
    """Passages the counter sees: (n_zones, n_steps) from true passages (n_zones, n_steps).

    `draws` hold two uniforms per person in zone-major, step order: the first decides a miss, the
    second a double count.
    """
    flat = flow.ravel()
    steps = np.flatnonzero(flat)
    people = flat[steps]
    u = np.concatenate(draws) if draws else np.zeros((0, 2))
    # Beyond the group threshold people walk through side by side and the sensor merges them.
    in_group = _ragged_arange(people) >= errors.group_threshold
    p = np.where(in_group, 1.0 - (1.0 - p_miss) * (1.0 - errors.p_group_miss), p_miss)
    seen = (u[:, 0] >= p) * (1 + (u[:, 1] < errors.p_double))
    out = np.zeros(flat.size, dtype=np.int64)
    if steps.size:
        out[steps] = np.add.reduceat(seen, np.cumsum(people) - people)
    return out.reshape(flow.shape)


def _reset_steps(clock: SimClock, reset_tod_s: float) -> IntArray:
    """Steps where a register segment starts: the run's first step and each nightly reset.

    The reset falls in the first step of a local day at or after reset_tod_s; when daylight
    saving skips that hour it comes at the first step after it, and when the hour repeats it
    happens only once.
    """
    past = clock.local_tod_s >= reset_tod_s
    same_day = np.r_[False, clock.local_day[1:] == clock.local_day[:-1]]
    prev_past = np.r_[False, past[:-1]]
    start = past & ~(same_day & prev_past)
    start[0] = True
    return np.flatnonzero(start).astype(np.int64)


def _registers(seen: IntArray, segment_starts: IntArray) -> npt.NDArray[np.int32]:
    """Registers (n_steps, n_zones) summing passages (n_zones, n_steps) since each segment start."""
    starts = np.zeros(seen.shape[1], dtype=np.bool_)
    starts[segment_starts] = True
    return _running_sums(seen, starts)


@njit(cache=True)
def _running_sums(seen: IntArray, starts: BoolArray) -> npt.NDArray[np.int32]:
    # One pass instead of cumsums and gathers over (zones × steps) int64 temporaries: a year of
    # a building is tens of millions of entries.
    n_zones, n_steps = seen.shape
    out = np.empty((n_steps, n_zones), dtype=np.int32)
    for z in range(n_zones):
        total = 0
        for k in range(n_steps):
            if starts[k]:
                total = 0
            total += seen[z, k]
            out[k, z] = total
    return out


@dataclass(frozen=True)
class Co2SensorErrors:
    """Errors of an NDIR CO2 sensor such as the Sensirion SCD30.

    The SCD30 is specified ±(30 ppm + 3 %) with ±10 ppm repeatability; notes/domain.md section 3,
    "CO₂ sensor error model", says to model offset drift plus noise. With these defaults offset
    (2 sigma = 30 ppm) and gain (3 sigma = 3 %) stay mostly inside the accuracy band.
    """

    noise_ppm: float = 10.0  # repeatability, 1 sigma, per reading [domain.md section 3]
    gain_sd: float = 0.01  # per-sensor gain error, 1 sigma
    offset_sd_ppm: float = 15.0  # initial offset, 1 sigma
    # Offset random walk. Self-calibration (SCD30 ASC, MH-Z19 ABC) keeps it bounded in practice
    # [domain.md section 3]: see _SensorBank._drift_at.
    drift_sd_ppm_per_day: float = 0.3
    stuck_per_day: float = 1 / 90  # rate of stuck-value episodes (the sensor repeats its value)
    stuck_hours: tuple[float, float] = (2.0, 48.0)  # episode length, uniform
    dropout_per_day: float = 0.5  # rate of short dropouts (NaN) of 1-15 min
    resolution_ppm: float = 1.0  # readings are quantized to this


@dataclass(frozen=True)
class ThermometerErrors:
    """Errors of a zone temperature sensor: noise, a fixed offset, dropouts, resolution.

    Typical of a wall sensor with a digital output, ±0.2-0.5 K after installation [U].
    """

    noise_k: float = 0.05  # 1 sigma, per reading
    offset_sd_k: float = 0.2  # per-sensor offset, 1 sigma
    dropout_per_day: float = 0.2  # rate of short dropouts (NaN) of 1-15 min
    resolution_k: float = 0.1  # readings are quantized to this


@dataclass(frozen=True)
class _Spec:
    """The error model a bank applies, in the unit of the measured quantity."""

    noise_sd: float
    gain_sd: float
    offset_sd: float
    drift_sd_per_day: float
    stuck_per_day: float
    stuck_s: tuple[float, float]
    dropout_per_day: float
    resolution: float
    floor: float  # readings never go below this (-inf: no floor)
    purpose_day: int
    purpose_static: int
    purpose_drift: int


class SensorPlan(NamedTuple):
    """One day of a bank's exogenous errors, and its per-row state (mutated by read_step)."""

    noise: npt.NDArray[np.float32]  # (n_streams, steps of the day) standard normal draws
    stream: IntArray  # (n_rows,) stream of each row
    gain: FloatArray  # (n_rows,)
    offset: FloatArray  # (n_rows,) static offset + drift at the start of the day
    drift_rate: FloatArray  # (n_rows,) drift per second through the day
    day_start_s: float  # epoch of the day's first step
    noise_sd: float
    resolution: float
    floor: float
    drop_start: IntArray  # dropout events: step of the day they start, sorted
    drop_rows: IntArray
    drop_until: FloatArray  # epoch they end
    stuck_start: IntArray  # stuck episodes, likewise
    stuck_rows: IntArray
    stuck_end: FloatArray
    dropout_until: FloatArray  # (n_rows,) state: epoch each row's dropout ends
    stuck_until: FloatArray  # (n_rows,) state: epoch each row's stuck episode ends
    stuck_value: FloatArray  # (n_rows,) state: the value a stuck row repeats


@njit(cache=True)
def read_step(  # noqa: PLR0917  (positional: numba binds no keyword-only arguments)
    plan: SensorPlan, i: int, prev_i: int, now: float, true: FloatArray, out: FloatArray
) -> None:
    """Readings of every row at step i of the plan's day into `out`; events that started after
    step prev_i (skipped steps included) take effect."""
    since = now - plan.day_start_s
    res = plan.resolution
    for r in range(true.shape[0]):
        value = (
            true[r] * plan.gain[r]
            + plan.offset[r]
            + plan.drift_rate[r] * since
            + plan.noise_sd * plan.noise[plan.stream[r], i]
        )
        if res > 0:
            value = np.rint(value / res) * res
        out[r] = max(value, plan.floor)
    lo = np.searchsorted(plan.drop_start, prev_i, side="right")
    hi = np.searchsorted(plan.drop_start, i, side="right")
    for e in range(lo, hi):
        r = plan.drop_rows[e]
        plan.dropout_until[r] = max(plan.dropout_until[r], plan.drop_until[e])
    lo = np.searchsorted(plan.stuck_start, prev_i, side="right")
    hi = np.searchsorted(plan.stuck_start, i, side="right")
    for e in range(lo, hi):
        r = plan.stuck_rows[e]
        if plan.stuck_until[r] <= now:
            plan.stuck_value[r] = out[r]  # the sensor freezes on the value it reads as it starts
        plan.stuck_until[r] = max(plan.stuck_until[r], plan.stuck_end[e])
    for r in range(true.shape[0]):
        if now < plan.stuck_until[r]:
            out[r] = plan.stuck_value[r]
        if now < plan.dropout_until[r]:
            out[r] = np.nan


class _SensorBank:
    """Sensors, one per row, whose exogenous errors come from per-(seed, zone_key) streams.

    Rows that share a stream share every exogenous error (gain, offset, drift, noise, dropout and
    stuck timing); what a stuck sensor holds is per row, as it depends on the row's true value.
    Random numbers are drawn for a whole local day when a step enters it; `read` only indexes.
    """

    def __init__(self, seeds: IntArray, zone_keys: IntArray, clock: SimClock, spec: _Spec) -> None:
        seeds = np.asarray(seeds, dtype=np.int64)
        zone_keys = np.asarray(zone_keys, dtype=np.int64)
        if seeds.ndim != 1 or seeds.shape != zone_keys.shape:
            raise ValueError(
                f"seeds {seeds.shape} and zone_keys {zone_keys.shape} must be (n_rows,)"
            )
        if (seeds < 0).any() or (zone_keys < 0).any():
            raise ValueError("seeds and zone_keys must be >= 0")
        self._clock = clock
        self._spec = spec
        streams, inverse = np.unique(
            np.stack([seeds, zone_keys], axis=1), axis=0, return_inverse=True
        )
        stream_list = [(int(s), int(k)) for s, k in streams]
        static = np.array(
            [g.standard_normal(2) for g in stream_rngs(stream_list, 0, spec.purpose_static)]
        ).reshape(-1, 2)
        inv = inverse.ravel().astype(np.int64)
        gain = (1.0 + spec.gain_sd * static[:, 0])[inv]
        offset = (spec.offset_sd * static[:, 1])[inv]
        self._day_first = _day_starts(clock)
        self._day_of_step = np.cumsum(np.isin(np.arange(clock.n_steps), self._day_first)) - 1
        self._set_rows(stream_list, inv, gain, offset)

    def subset(self, rows: IntArray) -> Self:
        """A bank of the same sensors for some of the rows, in that order, with fresh state.

        The static errors (gain, offset) are taken from this bank rather than drawn again: a
        part of the fused loop gets its sensors without a random stream per sensor.
        """
        rows = np.asarray(rows, dtype=np.int64)
        used, inverse = np.unique(self._inv[rows], return_inverse=True)
        new = copy.copy(self)
        new._set_rows(
            [self._streams[int(s)] for s in used],
            inverse.ravel().astype(np.int64),
            self._gain[rows],
            self._offset[rows],
        )
        return new

    def _set_rows(
        self, streams: list[tuple[int, int]], inv: IntArray, gain: FloatArray, offset: FloatArray
    ) -> None:
        """The bank's rows (streams sorted, as numpy.unique gives them) and a fresh state."""
        self._n_rows = inv.size
        self._streams = streams
        self._inv = inv  # (n_rows,) stream of each row
        # Rows grouped by stream, to fan a stream's events out to its rows.
        self._rows_by_stream = np.argsort(self._inv, kind="stable")
        self._row_ptr = np.r_[0, np.cumsum(np.bincount(self._inv, minlength=len(self._streams)))]
        self._gain = gain
        self._offset = offset
        self._day = -1
        self._last_step = -1
        self._drift_key = -1
        self._drift = np.zeros((len(self._streams), _DRIFT_ANCHOR_DAYS + 1))

        self._stuck_until = np.full(self._n_rows, -np.inf)
        self._stuck_value = np.full(self._n_rows, np.nan)
        self._dropout_until = np.full(self._n_rows, -np.inf)
        # Filled by _enter_day.
        self._first = 0
        self._noise = np.zeros((len(self._streams), 0), dtype=np.float32)
        self._day_offset = np.zeros(self._n_rows)
        self._drift_rate = np.zeros(self._n_rows)  # per s since the day's first step
        self._drop_start: list[int] = []
        self._drop_start_arr = np.zeros(0, dtype=np.int64)
        self._stuck_start_arr = np.zeros(0, dtype=np.int64)
        self._drop_rows = np.zeros(0, dtype=np.int64)
        self._drop_until = np.zeros(0)
        self._stuck_start: list[int] = []
        self._stuck_rows = np.zeros(0, dtype=np.int64)
        self._stuck_end = np.zeros(0)

    def _read(self, step: int, true: FloatArray) -> FloatArray:
        if not 0 <= step < self._clock.n_steps:
            raise ValueError(f"step {step} outside the clock's 0..{self._clock.n_steps - 1}")
        if step <= self._last_step:
            raise ValueError(f"steps must be read in order: {step} after {self._last_step}")
        true = np.asarray(true, dtype=np.float64)
        if true.shape != (self._n_rows,):
            raise ValueError(f"expected ({self._n_rows},) true values, got {true.shape}")
        day = int(self._day_of_step[step])
        prev_i = self._last_step - self._first if day == self._day else -1
        if day != self._day:
            self._enter_day(day)
        out = np.empty(self._n_rows)
        read_step(
            self.plan, step - self._first, prev_i, float(self._clock.epoch_s[step]), true, out
        )
        self._last_step = step
        return out

    def day_of(self, step: int) -> int:
        """The bank's day index of a step (days change at local midnight)."""
        return int(self._day_of_step[step])

    def enter(self, step: int) -> SensorPlan:
        """The plan of the day that `step` belongs to, drawn if it is a new day; the fused loop
        then calls read_step itself for that day's steps (marking them read)."""
        day = self.day_of(step)
        if day != self._day:
            self._enter_day(day)
        return self.plan

    def mark_read(self, step: int) -> None:
        self._last_step = step

    @property
    def first_step_of_day(self) -> int:
        return self._first

    def _enter_day(self, day: int) -> None:
        """Draw the day's noise, dropouts and stuck episodes per stream; set the day's drift."""
        clock, spec = self._clock, self._spec
        first = int(self._day_first[day])
        last = int(self._day_first[day + 1]) if day + 1 < self._day_first.size else clock.n_steps
        n = last - first
        ordinal = int(clock.local_day[first])
        # A stream's draws go straight into its own contiguous row: no temporary, no strided copy
        # holding the GIL while the other parts' threads wait for it (numpy fills without it).
        noise = np.empty((len(self._streams), n), dtype=np.float32)
        drops: list[tuple[int, int, float]] = []  # (start step in day, stream, duration s)
        stucks: list[tuple[int, int, float]] = []
        drop_rate, stuck_rate = spec.dropout_per_day, spec.stuck_per_day
        for s, rng in enumerate(stream_rngs(self._streams, ordinal, spec.purpose_day)):
            rng.standard_normal(n, dtype=np.float32, out=noise[s])
            # Two scalar draws are the same numbers as poisson([drop, stuck]), at a tenth of the
            # cost (no array in or out); this loop runs once per sensor and day.
            n_drop = int(rng.poisson(drop_rate))
            n_stuck = int(rng.poisson(stuck_rate))
            if n_drop or n_stuck:
                u = rng.random((n_drop + n_stuck, 2))
                start = (u[:, 0] * n).astype(np.int64).tolist()
                drops += [
                    (start[e], s, _DROPOUT_S[0] + (_DROPOUT_S[1] - _DROPOUT_S[0]) * u[e, 1])
                    for e in range(n_drop)
                ]
                lo_s, hi_s = spec.stuck_s
                stucks += [
                    (start[e], s, lo_s + (hi_s - lo_s) * u[e, 1])
                    for e in range(n_drop, n_drop + n_stuck)
                ]
        epoch = clock.epoch_s[first:last]
        self._drop_start, self._drop_rows, self._drop_until = self._fan_out(drops, epoch)
        self._stuck_start, self._stuck_rows, self._stuck_end = self._fan_out(stucks, epoch)
        self._drop_start_arr = np.asarray(self._drop_start, dtype=np.int64)
        self._stuck_start_arr = np.asarray(self._stuck_start, dtype=np.int64)
        self._noise = noise
        self._first = first
        self._day = day
        # Drift: linear through the day from the value at this date to the value at the next.
        d0, d1 = self._drift_at(ordinal), self._drift_at(ordinal + 1)
        day_s = float(epoch[-1] - epoch[0]) + clock.dt_s
        self._day_offset = d0[self._inv]
        self._drift_rate = ((d1 - d0) / day_s)[self._inv]
        self._plan = self._make_plan()

    @property
    def plan(self) -> SensorPlan:
        """The current day's plan (built when the day was entered)."""
        return self._plan

    def _make_plan(self) -> SensorPlan:
        spec = self._spec
        return SensorPlan(
            noise=self._noise,
            stream=self._inv,
            gain=self._gain,
            offset=self._offset + self._day_offset,
            drift_rate=self._drift_rate,
            day_start_s=float(self._clock.epoch_s[self._first]),
            noise_sd=spec.noise_sd,
            resolution=spec.resolution,
            floor=spec.floor,
            drop_start=self._drop_start_arr,
            drop_rows=self._drop_rows,
            drop_until=self._drop_until,
            stuck_start=self._stuck_start_arr,
            stuck_rows=self._stuck_rows,
            stuck_end=self._stuck_end,
            dropout_until=self._dropout_until,
            stuck_until=self._stuck_until,
            stuck_value=self._stuck_value,
        )

    def _fan_out(
        self, events: list[tuple[int, int, float]], epoch: FloatArray
    ) -> tuple[list[int], IntArray, FloatArray]:
        """Per-stream events to per-row events sorted by start step: (starts, rows, end epochs)."""
        events.sort()
        start = np.array([e[0] for e in events], dtype=np.int64)
        stream = np.array([e[1] for e in events], dtype=np.int64)
        end = epoch[start] + np.array([e[2] for e in events], dtype=np.float64)
        counts = self._row_ptr[stream + 1] - self._row_ptr[stream]
        ev = np.repeat(np.arange(start.size), counts)
        rows = self._rows_by_stream[
            np.repeat(self._row_ptr[stream], counts) + _ragged_arange(counts)
        ]
        return start[ev].tolist(), rows, end[ev]

    def _drift_at(self, ordinal: int) -> FloatArray:
        """Offset drift per stream (n_streams,) at the start of a local date.

        A random walk with daily steps of drift_sd, tied down at anchor dates every
        _DRIFT_ANCHOR_DAYS days: between anchors it is a Brownian bridge, and the anchors are
        independent with sd drift_sd * sqrt(P / 2), so that the change over P days has the
        random walk's sd drift_sd * sqrt(P) and the drift's sd is that at every date. The drift
        is thus a deterministic function of (seed, zone_key, date), whatever the run's start: a
        walk that self-calibration keeps bounded (sd ~1.7 ppm with the defaults).
        """
        spec = self._spec
        if spec.drift_sd_per_day == 0:
            return np.zeros(len(self._streams))
        segment, j = divmod(ordinal, _DRIFT_ANCHOR_DAYS)
        if segment != self._drift_key:
            self._drift = self._drift_segments(segment)
            self._drift_key = segment
        return np.asarray(self._drift[:, j])

    def _drift_segments(self, segment: int) -> FloatArray:
        """The drift of every stream at the P + 1 dates from anchor `segment` to the next,
        (n_streams, P + 1). Row by row the same arithmetic as one stream at a time, done on the
        whole array: only the draws stay per stream."""
        p = _DRIFT_ANCHOR_DAYS
        sd = self._spec.drift_sd_per_day
        purpose = self._spec.purpose_drift
        n = len(self._streams)
        here = np.empty((n, 1 + p))
        there = np.empty(n)
        for s, (g0, g1) in enumerate(
            zip(
                stream_rngs(self._streams, segment * p, purpose),
                stream_rngs(self._streams, (segment + 1) * p, purpose),
                strict=True,
            )
        ):
            here[s] = g0.standard_normal(1 + p)
            there[s] = g1.standard_normal()
        anchor0 = (sd * np.sqrt(p / 2) * here[:, 0])[:, None]
        anchor1 = (sd * np.sqrt(p / 2) * there)[:, None]
        walk = np.zeros((n, p + 1))
        np.cumsum(sd * here[:, 1:], axis=1, out=walk[:, 1:])  # sequential per row, as in 1-D
        x = np.arange(p + 1) / p
        return np.asarray(anchor0 + (anchor1 - anchor0) * x + walk - x * walk[:, -1:])


class Co2SensorBank(_SensorBank):
    """CO2 sensors, one per row (a zone in one simulated lane).

    Rows with the same (seed, zone_key) are one physical sensor seen by several lanes: they err
    identically for identical truth. Gain and offset are fixed per sensor (drawn with day 0); the
    drift follows the date (see _SensorBank._drift_at); noise, dropouts and stuck episodes are
    drawn per local day.
    """

    def __init__(
        self,
        seeds: IntArray,
        zone_keys: IntArray,
        clock: SimClock,
        errors: Co2SensorErrors = Co2SensorErrors(),
    ) -> None:
        """seeds, zone_keys: (n_rows,) non-negative ints naming each row's stream."""
        spec = _Spec(
            noise_sd=errors.noise_ppm,
            gain_sd=errors.gain_sd,
            offset_sd=errors.offset_sd_ppm,
            drift_sd_per_day=errors.drift_sd_ppm_per_day,
            stuck_per_day=errors.stuck_per_day,
            stuck_s=(errors.stuck_hours[0] * _HOUR_S, errors.stuck_hours[1] * _HOUR_S),
            dropout_per_day=errors.dropout_per_day,
            resolution=errors.resolution_ppm,
            floor=0.0,  # an NDIR sensor reports no negative concentration
            purpose_day=_PURPOSE_CO2_DAY,
            purpose_static=_PURPOSE_CO2_STATIC,
            purpose_drift=_PURPOSE_CO2_DRIFT,
        )
        super().__init__(seeds, zone_keys, clock, spec)

    def read(self, step: int, true_ppm: FloatArray) -> FloatArray:
        """Measured CO2, ppm (n_rows,); NaN on dropout. Call once per step, in step order.

        true_ppm: (n_rows,) true concentration at the sensor, ppm.
        """
        return self._read(step, true_ppm)


class ThermometerBank(_SensorBank):
    """Zone temperature sensors, one per row; same stream rules as Co2SensorBank."""

    def __init__(
        self,
        seeds: IntArray,
        zone_keys: IntArray,
        clock: SimClock,
        errors: ThermometerErrors = ThermometerErrors(),
    ) -> None:
        """seeds, zone_keys: (n_rows,) non-negative ints naming each row's stream."""
        spec = _Spec(
            noise_sd=errors.noise_k,
            gain_sd=0.0,
            offset_sd=errors.offset_sd_k,
            drift_sd_per_day=0.0,
            stuck_per_day=0.0,
            stuck_s=(0.0, 0.0),
            dropout_per_day=errors.dropout_per_day,
            resolution=errors.resolution_k,
            floor=-np.inf,
            purpose_day=_PURPOSE_THERMO_DAY,
            purpose_static=_PURPOSE_THERMO_STATIC,
            purpose_drift=0,  # unused: no drift
        )
        super().__init__(seeds, zone_keys, clock, spec)

    def read(self, step: int, true_c: FloatArray) -> FloatArray:
        """Measured temperature, °C (n_rows,); NaN on dropout. Call once per step, in step order.

        true_c: (n_rows,) true air temperature at the sensor, °C.
        """
        return self._read(step, true_c)
