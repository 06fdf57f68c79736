"""The closed loop: people, erring sensors, validation, estimation, control and plant, in lanes.

A lane is one controller on one seed. All lanes of a run advance together as rows of the same
arrays (lane-major: rows [k·n_zones, (k+1)·n_zones) belong to lane k), so a small building with
four controllers costs one set of numpy calls per step, not four. Lanes with the same seed see the
same weather, the same people and the same sensor faults (common random numbers): differences
between controllers are the controllers', not luck.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.law import Inputs, comfort_band, initial_state
from controller.law import step as control_step
from controller.params import Params, Strategy, compile_params, stack_params
from controller.schedule import WeekTable, day_hours, scheduled_now, stack_tables, week_table
from controller.site import Site
from sensors.arrays import BoolArray, FloatArray, IntArray, concat_rows
from sensors.occupancy import (
    EstimatorParams,
    Observation,
    estimate,
    initial_estimator_state,
)
from sensors.validation import CheckParams, check, initial_check_state
from sim.building import build_plant, zone_key
from sim.clock import SimClock, make_clock
from sim.kernel import Carry, Exogenous, Fixed, Samples, Totals
from sim.kpi import KpiAccumulator, Kpis, lane_kpis
from sim.occupants import OccupantProfile, generate_occupancy
from sim.plant import AhuPlant, Drive, ZonePlant, initial_plant_state, operative_c
from sim.plant import step as plant_step
from sim.sensor_models import (
    Co2SensorBank,
    Co2SensorErrors,
    CounterErrors,
    ThermometerBank,
    ThermometerErrors,
    simulate_people_counter,
)
from sim.weather import Weather, WeatherSeries, sample, synthetic_helsinki

# Outdoor CO2 at the site swings a little over the day (traffic, boundary layer); the controller
# only knows the configured mean. Amplitude in ppm, peak in the early morning.
OUTDOOR_CO2_DAILY_AMPLITUDE_PPM = 15.0
EQUIPMENT_STANDBY_FRACTION = 0.1  # lights and plug loads left on in an empty zone
INITIAL_TEMPERATURE_C = 21.0

ProgressFn = Callable[[int, int], None]
log = logging.getLogger(__name__)

PERFECT_COUNTER = CounterErrors(p_miss_in=0.0, p_miss_out=0.0, p_group_miss=0.0, p_double=0.0)
PERFECT_CO2 = Co2SensorErrors(
    noise_ppm=0.0, gain_sd=0.0, offset_sd_ppm=0.0, drift_sd_ppm_per_day=0.0,
    stuck_per_day=0.0, dropout_per_day=0.0, resolution_ppm=1.0,
)  # fmt: skip
PERFECT_THERMOMETER = ThermometerErrors(
    noise_k=0.0, offset_sd_k=0.0, dropout_per_day=0.0, resolution_k=0.01
)


@dataclass(frozen=True)
class Scenario:
    """What to simulate."""

    site: Site
    start: date  # first local day whose results count
    days: int
    controllers: tuple[Strategy, ...]
    seeds: tuple[int, ...] = (1,)
    dt_s: int = 60
    warmup_days: int = 3  # simulated before `start` and not counted: mass and learning settle
    weather: Weather | None = None  # default: the synthetic Helsinki year of weather_seed
    weather_seed: int = 1  # weather is not varied with `seeds`: those vary people and sensors
    record_zones: tuple[str, ...] = ()  # zones whose time series are kept
    record_every_s: int = 900
    sensor_faults: bool = True  # False: perfect counters, CO2 sensors and thermometers
    mismatch: bool = True  # False: the plant is exactly the nominal building
    # True: the core's stages compiled into one fused loop (sim.fused); False: plain numpy, as
    # on a gateway. Both give the same results.
    accelerate: bool = True
    workers: int | None = None  # threads for the fused loop (default: one per core)


@dataclass(frozen=True)
class Lane:
    controller: Strategy
    seed: int


@dataclass
class Series:
    """Recorded samples after warm-up. Zone arrays (n_samples, n_lanes, n_recorded_zones)."""

    zones: tuple[str, ...]
    epoch_s: list[float] = field(default_factory=list)
    people: list[FloatArray] = field(default_factory=list)
    estimate: list[FloatArray] = field(default_factory=list)
    co2_ppm: list[FloatArray] = field(default_factory=list)
    co2_limit_ppm: list[FloatArray] = field(default_factory=list)
    t_op_c: list[FloatArray] = field(default_factory=list)
    band_low_c: list[FloatArray] = field(default_factory=list)
    band_high_c: list[FloatArray] = field(default_factory=list)
    airflow_m3s: list[FloatArray] = field(default_factory=list)
    mode: list[FloatArray] = field(default_factory=list)
    # cumulative purchased energy per lane since the start, kWh/m² (n_samples, n_lanes)
    fan_kwh_m2: list[FloatArray] = field(default_factory=list)
    heating_kwh_m2: list[FloatArray] = field(default_factory=list)
    cooling_kwh_m2: list[FloatArray] = field(default_factory=list)

    def array(self, name: str) -> FloatArray:
        return np.asarray(getattr(self, name), dtype=np.float64)


@dataclass(frozen=True)
class RunResult:
    scenario: Scenario
    lanes: tuple[Lane, ...]
    kpis: tuple[Kpis, ...]
    series: Series
    steps: int  # simulated steps, warm-up included
    zone_steps: int  # steps × rows
    totals: KpiAccumulator  # per-row integrals: per-zone KPIs of every lane
    setup_s: float  # wall time to prepare weather, people, sensors and parameters
    loop_s: float  # wall time of the closed loop itself

    def summary(self) -> dict[str, dict[str, float]]:
        """Per controller, each KPI averaged over seeds (the content of summary.json)."""
        out: dict[str, dict[str, float]] = {}
        for c in self.scenario.controllers:
            ks = [
                k.as_dict()
                for k, lane in zip(self.kpis, self.lanes, strict=True)
                if lane.controller == c
            ]
            out[c.value] = {key: float(np.mean([k[key] for k in ks])) for key in ks[0]}
        return out


def occupant_profiles(site: Site) -> list[OccupantProfile]:
    """The people model's view of each zone: kind, capacity and workday opening hours."""
    profiles = []
    for r in site.resolved:
        weekday_hours = [h for h in r.occupied_hours if h.days & {0, 1, 2, 3, 4}] or list(
            r.occupied_hours
        )
        profiles.append(
            OccupantProfile(
                kind=r.zone.kind.value,
                design_occupancy=r.design_occupancy,
                open_s=float(min(h.start_s for h in weekday_hours)),
                close_s=float(max(h.end_s for h in weekday_hours)),
                zone_key=zone_key(r.zone.name),
            )
        )
    return profiles


def _check_params(n: int, lo: float, hi: float, stuck_s: float, rate: float) -> CheckParams:
    return CheckParams(
        lo=np.full(n, lo),
        hi=np.full(n, hi),
        stuck_after_s=np.full(n, stuck_s),
        max_rate_per_s=np.full(n, rate),
        stale_after_s=np.full(n, 600.0),
    )


@dataclass(frozen=True)
class _Exogenous:
    """Everything that does not depend on the controllers, per seed."""

    people: npt.NDArray[np.int16]  # (n_seeds, n_steps, n_zones) true occupancy at step end
    counter_in: npt.NDArray[np.int32]  # (n_seeds, n_steps, n_zones) IN register at step end
    counter_out: npt.NDArray[np.int32]


def _exogenous(sc: Scenario, clock: SimClock, closed: frozenset[date]) -> _Exogenous:
    profiles = occupant_profiles(sc.site)
    keys = [p.zone_key for p in profiles]
    errors = CounterErrors() if sc.sensor_faults else PERFECT_COUNTER
    people, c_in, c_out = [], [], []
    for seed in sc.seeds:
        occ = generate_occupancy(profiles, clock, seed, closed)
        raw_in, raw_out = simulate_people_counter(occ, clock, seed, keys, errors)
        people.append(occ.count)
        c_in.append(raw_in)
        c_out.append(raw_out)
    return _Exogenous(np.stack(people), np.stack(c_in), np.stack(c_out))


@dataclass
class _Run:
    """Everything a loop needs, prepared once from the scenario."""

    sc: Scenario
    lanes: tuple[Lane, ...]
    clock: SimClock
    k_count: int  # first counted step (after warm-up)
    closed: frozenset[date]
    ws: WeatherSeries
    ex: _Exogenous
    seed_of_lane: IntArray
    params: Params
    zp: ZonePlant
    ap: AhuPlant
    oracle: BoolArray
    co2_bank: Co2SensorBank
    thermo: ThermometerBank
    limits: CheckParams
    est_params: EstimatorParams
    table: WeekTable
    rec_rows: IntArray
    rec_every: int
    co2_out_actual: FloatArray  # (n_steps,) the site's true outdoor CO2

    @property
    def n(self) -> int:
        return self.params.zones.n

    @property
    def n_zones(self) -> int:
        return len(self.sc.site.zone)


def simulate(sc: Scenario, progress: ProgressFn | None = None) -> RunResult:
    """Run every lane of the scenario through the same closed loop."""
    t_setup = time.perf_counter()
    run = _prepare(sc)
    t_loop = time.perf_counter()
    loop = _loop_fused if sc.accelerate else _loop_numpy
    acc, series = loop(run, progress)
    loop_s = time.perf_counter() - t_loop
    site = sc.site
    nz, n_ahu, nl = run.n_zones, len(site.ahu), len(run.lanes)
    kpis = tuple(
        lane_kpis(
            acc,
            rows=slice(i * nz, (i + 1) * nz),
            ahu_rows=slice(i * n_ahu, (i + 1) * n_ahu),
            area_m2=run.params.zones.area_m2,
            heating_efficiency=site.energy.heating_efficiency,
            cooling_cop=site.energy.cooling_cop,
        )
        for i in range(nl)
    )
    steps = run.clock.n_steps
    return RunResult(
        sc, run.lanes, kpis, series, steps, steps * run.n, acc, t_loop - t_setup, loop_s
    )


def _prepare(sc: Scenario) -> _Run:
    site = sc.site
    nz = len(site.zone)
    lanes = tuple(Lane(c, s) for s in sc.seeds for c in sc.controllers)
    nl = len(lanes)
    n = nl * nz
    first = sc.start - timedelta(days=sc.warmup_days)
    clock = make_clock(first, sc.days + sc.warmup_days, sc.dt_s, site.tz)
    years = sorted({d.year for d in clock.days} | {clock.days[-1].year + 1})
    closed = site.site.closed_days(years)
    weather = sc.weather or synthetic_helsinki(sc.weather_seed)
    params = stack_params([compile_params(site, lane.controller) for lane in lanes])
    z = params.zones
    plants = {seed: build_plant(site, seed, mismatch=sc.mismatch) for seed in sc.seeds}
    n_ahu = len(site.ahu)
    row_seeds = np.repeat(np.array([lane.seed for lane in lanes], dtype=np.int64), nz)
    row_keys = np.tile(np.array([zone_key(zc.name) for zc in site.zone], dtype=np.int64), nl)
    nominal_infiltration = np.array(
        [
            zc.infiltration_ach * r.volume_m3 / 3600.0
            for zc, r in zip(site.zone, site.resolved, strict=True)
        ]
    )
    rec_idx = np.array([[site.zone_index[name] for name in sc.record_zones]] * nl, dtype=np.int64)
    tod = clock.local_tod_s
    return _Run(
        sc=sc,
        lanes=lanes,
        clock=clock,
        k_count=int(np.searchsorted(clock.local_day, sc.start.toordinal())),
        closed=closed,
        ws=sample(weather, clock.epoch_s),
        ex=_exogenous(sc, clock, closed),
        seed_of_lane=np.array([sc.seeds.index(lane.seed) for lane in lanes]),
        params=params,
        zp=concat_rows(
            [plants[lane.seed][0] for lane in lanes], shift={"ahu": [i * n_ahu for i in range(nl)]}
        ),
        ap=concat_rows([plants[lane.seed][1] for lane in lanes]),
        oracle=np.repeat([lane.controller is Strategy.ORACLE for lane in lanes], nz),
        co2_bank=Co2SensorBank(
            row_seeds, row_keys, clock, Co2SensorErrors() if sc.sensor_faults else PERFECT_CO2
        ),
        thermo=ThermometerBank(
            row_seeds,
            row_keys,
            clock,
            ThermometerErrors() if sc.sensor_faults else PERFECT_THERMOMETER,
        ),
        # Validation limits: CO2 never reads below ~250 ppm outdoors nor changes 20 ppm/s in a
        # room; NDIR noise makes 30 min of identical readings a stuck sensor. Room temperatures
        # move slowly. CO2 rows then temperature rows: one validation call per step for both.
        limits=concat_rows(
            [
                _check_params(n, 250.0, 5000.0, 1800.0, 20.0),
                _check_params(n, -10.0, 50.0, 12 * 3600.0, 0.05),
            ]
        ),
        est_params=EstimatorParams(
            volume_m3=z.volume_m3,
            co2_gen_m3s=z.co2_gen_m3s,
            infiltration_m3s=np.tile(nominal_infiltration, nl),
            design_occupancy=z.design_occupancy,
            has_counter=np.tile(np.array([zc.has_people_counter for zc in site.zone]), nl),
            has_co2=np.tile(np.array([zc.has_co2_sensor for zc in site.zone]), nl),
        ),
        table=stack_tables([week_table([r.occupied_hours for r in site.resolved])] * nl),
        rec_rows=(rec_idx + (np.arange(nl) * nz)[:, None]).ravel(),
        rec_every=max(1, sc.record_every_s // sc.dt_s),
        co2_out_actual=site.site.co2_outdoor_ppm
        + OUTDOOR_CO2_DAILY_AMPLITUDE_PPM * np.cos(2 * np.pi * (tod - 5 * 3600.0) / 86400.0),
    )


def _schedule_of_day(run: _Run, day: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each row's (opening today, closing today, opening tomorrow) for a local date ordinal."""
    return _hours_of_day(run.table, run.closed, day)


def _hours_of_day(
    table: WeekTable, closed: frozenset[date], day: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    n = table.open_s.shape[0]
    today, tomorrow = date.fromordinal(day), date.fromordinal(day + 1)
    open_today, close_today = day_hours(
        table, np.full(n, today.weekday()), np.full(n, today in closed)
    )
    open_tomorrow, _ = day_hours(
        table, np.full(n, tomorrow.weekday()), np.full(n, tomorrow in closed)
    )
    return open_today, close_today, open_tomorrow


def _recorder(run: _Run) -> _Recorder:
    site = run.sc.site
    nl, nz = len(run.lanes), run.n_zones
    return _Recorder(
        Series(zones=run.sc.record_zones),
        run.rec_rows,
        nl,
        nz,
        len(site.ahu),
        run.params.zones.area_m2.reshape(nl, nz).sum(axis=1),
        site.energy.heating_efficiency,
        site.energy.cooling_cop,
    )


def _loop_numpy(run: _Run, progress: ProgressFn | None) -> tuple[KpiAccumulator, Series]:
    """The loop over numpy arrays, step by step: the core exactly as a gateway runs it."""
    sc, clock, ws, ex, z, zp, ap = (
        run.sc,
        run.clock,
        run.ws,
        run.ex,
        run.params.zones,
        run.zp,
        run.ap,
    )
    n, n_ahu_rows = run.n, run.ap.design_airflow_m3s.shape[0]
    acc = KpiAccumulator.zeros(n, n_ahu_rows)
    recorder = _recorder(run)
    k_count, rec_every, seed_of_lane = run.k_count, run.rec_every, run.seed_of_lane
    dt = float(sc.dt_s)
    co2_out_nominal = np.full(n, sc.site.site.co2_outdoor_ppm)
    zeros = np.zeros(n)
    readings_check = initial_check_state(2 * n)
    reading_age = np.zeros(2 * n)
    est_state = initial_estimator_state(n)
    ctrl_state = initial_state(run.params)
    plant_state = initial_plant_state(n, INITIAL_TEMPERATURE_C, sc.site.site.co2_outdoor_ppm)
    airflow_prev = zeros.copy()
    t_supply_prev = np.full(n, np.nan)
    people_prev = zeros.copy()
    cin_prev = zeros.copy()
    cout_prev = zeros.copy()
    t_out_rows = np.empty(n)
    t24_rows = np.empty(n)
    co2_out_rows = np.empty(n)
    t_ahu = np.empty(n_ahu_rows)
    required_base = z.ra_m3s * z.area_m2
    day = -1
    open_today = close_today = open_tomorrow = zeros
    report_every = max(1, clock.n_steps // 200)
    for k in range(clock.n_steps):
        if clock.local_day[k] != day:
            day = int(clock.local_day[k])
            open_today, close_today, open_tomorrow = _schedule_of_day(run, day)
        tod = clock.local_tod_s[k]
        scheduled, to_open = scheduled_now(open_today, close_today, open_tomorrow, np.full(n, tod))

        # Sensors read the building as it is at the start of the step, then get validated.
        co2_meas = run.co2_bank.read(k, plant_state.co2_ppm)
        t_meas = run.thermo.read(k, operative_c(plant_state))
        readings_check, clean, _ = check(
            readings_check, np.concatenate([co2_meas, t_meas]), reading_age, run.limits, dt
        )
        co2_clean, t_clean = clean[:n], clean[n:]
        est_state, est = estimate(
            est_state,
            Observation(dt, cin_prev, cout_prev, co2_clean, co2_out_nominal, airflow_prev),
            run.est_params,
        )
        occupancy_in = np.where(run.oracle, people_prev, est.occupancy)
        t24_rows.fill(ws.t_out_24h_c[k])
        t_out_rows.fill(ws.t_out_c[k])
        ctrl_state, cmd = control_step(
            ctrl_state,
            Inputs(
                dt_s=dt,
                scheduled=scheduled,
                time_to_open_s=to_open,
                occupancy=occupancy_in,
                co2_ppm=co2_clean,
                t_zone_c=t_clean,
                t_supply_c=t_supply_prev,
                t_out_c=t_out_rows,
                t_out_24h_c=t24_rows,
                co2_out_ppm=co2_out_nominal,
            ),
            run.params,
        )

        people = ex.people[seed_of_lane, k].ravel().astype(np.float64)
        t_ahu.fill(ws.t_out_c[k])
        co2_out_rows.fill(run.co2_out_actual[k])
        plant_state, flows = plant_step(
            plant_state,
            Drive(
                t_out_c=t_out_rows,
                solar_wm2=ws.solar_wm2[k, zp.facade],
                co2_out_ppm=co2_out_rows,
                people=people,
                equipment_on=np.where(people > 0.0, 1.0, EQUIPMENT_STANDBY_FRACTION),
                airflow_m3s=cmd.airflow_m3s,
                t_heat_c=cmd.t_heat_c,
                t_cool_c=cmd.t_cool_c,
                ahu_supply_c=cmd.ahu_supply_c,
                ahu_t_out_c=t_ahu,
            ),
            zp,
            ap,
            dt,
        )
        if k >= k_count:
            band_lo, band_hi = comfort_band(run.params, t24_rows)
            t_op = operative_c(plant_state)
            acc.add(
                dt_s=dt,
                t_op_c=t_op,
                band_low_c=band_lo,
                band_high_c=band_hi,
                co2_ppm=plant_state.co2_ppm,
                co2_limit_ppm=z.co2_limit_ppm,
                people=people,
                delivered_oa_m3s=cmd.airflow_m3s,
                required_oa_m3s=(required_base + z.rp_m3s * people) / z.ez,
                zone_heat_w=flows.zone_heating_w,
                zone_cool_w=flows.zone_cooling_w,
                fan_w=flows.fan_w,
                coil_heat_w=flows.coil_heating_w,
                coil_cool_w=flows.coil_cooling_w,
            )
            if sc.record_zones and (k - k_count) % rec_every == 0:
                recorder.add(
                    clock.epoch_s[k] + dt,
                    acc,
                    people=people,
                    estimate=est.occupancy,
                    co2_ppm=plant_state.co2_ppm,
                    co2_limit_ppm=z.co2_limit_ppm,
                    t_op_c=t_op,
                    band_low_c=band_lo,
                    band_high_c=band_hi,
                    airflow_m3s=cmd.airflow_m3s,
                    mode=cmd.mode.astype(np.float64),
                )
        airflow_prev = cmd.airflow_m3s
        t_supply_prev = flows.ahu_supply_c[zp.ahu]
        people_prev = people
        cin_prev = ex.counter_in[seed_of_lane, k].ravel().astype(np.float64)
        cout_prev = ex.counter_out[seed_of_lane, k].ravel().astype(np.float64)
        if progress is not None and (k % report_every == 0 or k == clock.n_steps - 1):
            progress(k + 1, clock.n_steps)
    return acc, recorder.series


_run_steps: list[Callable[..., Any]] = []


def _compiled_run_steps() -> Callable[..., Any]:
    """The fused loop, compiled once per process (and cached on disk across processes)."""
    if not _run_steps:
        from sim.fused import compile_run_steps  # noqa: PLC0415  (compiling is the slow part)

        _run_steps.append(compile_run_steps())
        log.info(
            "preparing the compiled simulator loop: about half a minute the first time, "
            "then read from numba's cache"
        )
    return _run_steps[0]


@dataclass(frozen=True)
class _Part:
    """Some AHUs and their zones: a building of its own, run on its own thread.

    Zones interact only through their AHU, and lanes not at all, so a run splits into parts
    that need nothing from one another; each part's results are exactly what the whole run
    computes for those rows.
    """

    rows: IntArray  # the part's zone rows in the run
    ahu_rows: IntArray  # its AHU rows in the run
    fixed: Fixed
    table: WeekTable
    co2_bank: Co2SensorBank
    thermo: ThermometerBank
    seed_idx: IntArray  # per row, the index of its seed in the exogenous arrays
    zone_idx: IntArray  # per row, its zone in the site
    record_positions: IntArray  # where the part's recorded rows go in the run's record order


def _parts(run: _Run, rows_per_part: int) -> list[_Part]:
    """The run split into parts of whole AHUs of about `rows_per_part` zone rows each."""
    zp_ahu = run.zp.ahu
    n_ahu_rows = run.ap.design_airflow_m3s.shape[0]
    sizes = np.bincount(zp_ahu, minlength=n_ahu_rows)
    members: list[list[int]] = [[]]
    filled = 0
    for a in range(n_ahu_rows):
        if filled and filled + sizes[a] > rows_per_part:
            members.append([])
            filled = 0
        members[-1].append(a)
        filled += int(sizes[a])
    nz = run.n_zones
    rec = run.rec_rows if run.sc.record_zones else np.zeros(0, dtype=np.int64)
    parts = []
    for ahus in members:
        ahu_rows = np.asarray(ahus, dtype=np.int64)
        rows = np.flatnonzero(np.isin(zp_ahu, ahu_rows))
        parts.append(_part(run, rows, ahu_rows, rec, nz))
    return parts


def _take(t: Any, idx: IntArray, remap: dict[str, IntArray] | None = None) -> Any:  # noqa: ANN401
    """Rows idx of a NamedTuple of arrays; fields in `remap` are index arrays renumbered."""
    remap = remap or {}
    return type(t)(*(remap[f] if f in remap else getattr(t, f)[idx] for f in t._fields))


def _part(run: _Run, rows: IntArray, ahu_rows: IntArray, rec: IntArray, nz: int) -> _Part:
    n = run.n
    local_ahu = np.searchsorted(ahu_rows, run.zp.ahu[rows])
    position = np.full(n, -1)
    position[rows] = np.arange(rows.size)
    z = run.params.zones
    a = run.params.ahus
    params = Params(
        _take(z, rows, {"ahu": local_ahu}),
        _take(a, ahu_rows, {"first_zone": position[a.first_zone[ahu_rows]]}),
    )
    lane_of_row = rows // nz
    seed_idx = run.seed_of_lane[lane_of_row]
    sc = run.sc
    in_part = np.isin(rec, rows)
    fixed = Fixed(
        params,
        _take(run.est_params, rows),
        _take(run.limits, np.concatenate([rows, n + rows])),
        _take(run.zp, rows, {"ahu": local_ahu}),
        _take(run.ap, ahu_rows),
        run.oracle[rows],
        np.full(rows.size, sc.site.site.co2_outdoor_ppm),
        EQUIPMENT_STANDBY_FRACTION,
        position[rec[in_part]],
    )
    return _Part(
        rows=rows,
        ahu_rows=ahu_rows,
        fixed=fixed,
        table=WeekTable(run.table.open_s[rows], run.table.close_s[rows]),
        # The run's sensors for these rows: their static errors are already drawn.
        co2_bank=run.co2_bank.subset(rows),
        thermo=run.thermo.subset(rows),
        seed_idx=seed_idx,
        zone_idx=rows % nz,
        record_positions=np.flatnonzero(in_part),
    )


def _loop_fused(run: _Run, progress: ProgressFn | None) -> tuple[KpiAccumulator, Series]:
    """The same loop, compiled: the core's stages zone by zone, a day of steps per call.

    The run goes in parts of whole AHUs small enough for a core's cache, each part through
    every day before the next, on as many threads as there are cores.
    """
    # Python's cyclic garbage collector, when a full collection falls within the loop, walks
    # every object of the process (numba's alone are hundreds of thousands) holding the GIL,
    # and every part's thread waits for it: a quarter of the loop's time at 1,000 zones after
    # other runs in the same process. The objects that exist before the loop are set aside
    # for its duration; those it creates are collected as usual. A host process that froze
    # its own objects already (the controller daemon does) is left as it is: unfreezing
    # would undo its freeze too. (Two fused runs at once in one process: the first to end
    # unfreezes for both. That costs the other speed, never results.)
    if gc.get_freeze_count():
        return _loop_parts(run, progress)
    gc.freeze()
    try:
        return _loop_parts(run, progress)
    finally:
        gc.unfreeze()


def _loop_parts(run: _Run, progress: ProgressFn | None) -> tuple[KpiAccumulator, Series]:
    sc, clock = run.sc, run.clock
    n, n_ahu_rows = run.n, run.ap.design_airflow_m3s.shape[0]
    run_steps = _compiled_run_steps()
    workers = sc.workers or os.cpu_count() or 1
    per_part = n if n < PARALLEL_FROM_ROWS else -(-n // workers)
    if per_part >= 2 * PIPELINE_PART_ROWS:
        # Two parts per thread at least: a thread draws its next part's day while the other
        # runs (see _run_part), so the threads start their compiled days a part's draw apart.
        per_part = -(-n // (2 * workers))
    per_part = min(PART_ROWS, per_part)
    parts = _parts(run, per_part)
    n_rec = run.rec_rows.shape[0] if sc.record_zones else 0
    counted = max(clock.n_steps - run.k_count, 0)
    n_samples = -(-counted // run.rec_every) if n_rec else 0
    acc = KpiAccumulator.zeros(n, n_ahu_rows)
    merged = _empty_samples(n_samples, n_rec, n, n_ahu_rows)
    lock = threading.Lock()
    draw_lock = threading.Lock()
    done = [0]

    def one(part: _Part) -> int:
        daily = progress if len(parts) == 1 else None
        totals, samples, count = _run_part(
            run, part, run_steps, n_samples, daily, draw_lock=draw_lock
        )
        for name in Totals._fields:
            target = getattr(acc, name)
            target[part.ahu_rows if name in _AHU_TOTALS else part.rows] = getattr(totals, name)
        for name in _ZONE_SAMPLES:
            getattr(merged, name)[:, part.record_positions] = getattr(samples, name)
        for name in _AHU_TOTALS:
            getattr(merged, name)[:, part.ahu_rows] = getattr(samples, name)
        for name in ("heat_j", "cool_j"):
            getattr(merged, name)[:, part.rows] = getattr(samples, name)
        merged.epoch_s[:] = samples.epoch_s
        if progress is not None and daily is None:
            with lock:
                done[0] += part.rows.size
                progress(clock.n_steps * done[0] // n, clock.n_steps)
        return count

    if len(parts) == 1 or workers == 1:
        counts = [one(part) for part in parts]
    else:
        with ThreadPoolExecutor(min(workers, len(parts)), thread_name_prefix="ilma-sim") as pool:
            counts = list(pool.map(one, parts))
    return acc, _series_from_samples(run, merged, counts[0])


# Below this many rows a run is one part on one thread: a day of its steps takes well under
# a millisecond, not worth a thread.
PARALLEL_FROM_ROWS = 32
# Zone rows per part: a part's state and the day's inputs stay in a core's cache (measured on
# bench/sim_speed.py: larger parts run slower per zone).
PART_ROWS = 512
# Parts at least this large when a thread gets more than one (smaller ones spend more of their
# time per step outside the zone loops; measured on bench/sim_speed.py at 100 and 1,000 zones).
PIPELINE_PART_ROWS = 128
_AHU_TOTALS = frozenset({"fan_j", "coil_heat_j", "coil_cool_j"})
_ZONE_SAMPLES = (
    "people", "estimate", "co2_ppm", "t_op_c", "band_low_c", "band_high_c", "airflow_m3s", "mode",
)  # fmt: skip


def _empty_samples(n_samples: int, n_rec: int, n: int, n_ahu: int) -> Samples:
    def zone() -> FloatArray:
        return np.full((n_samples, n_rec), np.nan)

    return Samples(
        zone(), zone(), zone(), zone(), zone(), zone(), zone(), zone(),
        np.empty(n_samples),
        np.empty((n_samples, n_ahu)),
        np.empty((n_samples, n)),
        np.empty((n_samples, n)),
        np.empty((n_samples, n_ahu)),
        np.empty((n_samples, n_ahu)),
    )  # fmt: skip


def _run_part(
    run: _Run,
    part: _Part,
    run_steps: Callable[..., Any],
    n_samples: int,
    progress: ProgressFn | None,
    *,
    draw_lock: threading.Lock,
) -> tuple[Totals, Samples, int]:
    """Every day of the run for one part."""
    sc, clock, ws, ex = run.sc, run.clock, run.ws, run.ex
    f = part.fixed
    n, n_ahu = part.rows.size, part.ahu_rows.size
    n_rec = f.record_rows.shape[0]
    acc = KpiAccumulator.zeros(n, n_ahu)
    totals = Totals(*(getattr(acc, name) for name in Totals._fields))
    samples = _empty_samples(n_samples, n_rec, n, n_ahu)
    carry = Carry(
        initial_plant_state(n, INITIAL_TEMPERATURE_C, sc.site.site.co2_outdoor_ppm),
        initial_check_state(2 * n),
        initial_estimator_state(n),
        initial_state(f.params),
        np.zeros(n),
        np.full(n, np.nan),
        np.zeros(n),
        -1,
        -1,
    )
    starts = np.flatnonzero(np.diff(clock.local_day, prepend=clock.local_day[0] - 1))
    ends = np.append(starts[1:], clock.n_steps)
    record_at = 0
    dt = float(sc.dt_s)
    for k0, k1 in zip(starts.tolist(), ends.tolist(), strict=True):
        # One part at a time draws its day: the draws are many short numpy calls, each taking
        # and releasing the GIL; two threads drawing at once handed it to and fro and waited on
        # each other. Serialized, one part draws while the others run their compiled days.
        with draw_lock:
            co2_plan = part.co2_bank.enter(k0)
            thermo_plan = part.thermo.enter(k0)
            first = part.co2_bank.first_step_of_day
            day = int(clock.local_day[k0])
            open_today, close_today, open_tomorrow = _hours_of_day(part.table, run.closed, day)
            # Copies, not views: threads sharing one array's reference count would contend on it.
            x = Exogenous(
                epoch_s=clock.epoch_s[k0:k1].copy(),
                tod_s=clock.local_tod_s[k0:k1].copy(),
                t_out_c=ws.t_out_c[k0:k1].copy(),
                t_out_24h_c=ws.t_out_24h_c[k0:k1].copy(),
                co2_out_ppm=run.co2_out_actual[k0:k1].copy(),
                solar_wm2=ws.solar_wm2[k0:k1].copy(),
                people=_rows_by_step(ex.people, part.seed_idx, part.zone_idx, k0, k1),
                counter_in_prev=_rows_by_step(
                    ex.counter_in, part.seed_idx, part.zone_idx, k0 - 1, k1 - 1
                ),
                counter_out_prev=_rows_by_step(
                    ex.counter_out, part.seed_idx, part.zone_idx, k0 - 1, k1 - 1
                ),
                open_today_s=open_today,
                close_today_s=close_today,
                open_tomorrow_s=open_tomorrow,
            )
        carry, record_at = run_steps(
            0, k1 - k0, first - k0, dt, run.k_count - k0, run.rec_every if n_rec else 0,
            record_at, x, f, carry, totals, co2_plan, thermo_plan, samples,
        )  # fmt: skip
        part.co2_bank.mark_read(k1 - 1)
        part.thermo.mark_read(k1 - 1)
        if progress is not None:
            progress(k1, clock.n_steps)
    return totals, samples, record_at


def _rows_by_step(
    per_seed: npt.NDArray[Any], seed_idx: IntArray, zone_idx: IntArray, k0: int, k1: int
) -> npt.NDArray[Any]:
    """(steps, rows) of a (seeds, steps, zones) array for steps k0..k1-1; a step before the run
    reads as zeros (registers before the first reading)."""
    lo = max(k0, 0)
    # np.take along the zone axis of one seed's (steps, zones) block gathers straight into the
    # (steps, rows) layout, several times faster than a 3-D fancy index and a transposed copy.
    out = np.empty((k1 - lo, seed_idx.size), dtype=per_seed.dtype)
    if seed_idx.size and (seed_idx == seed_idx[0]).all():
        np.take(per_seed[seed_idx[0], lo:k1], zone_idx, axis=1, out=out)
    else:
        for s in np.unique(seed_idx):
            rows = seed_idx == s
            out[:, rows] = np.take(per_seed[s, lo:k1], zone_idx[rows], axis=1)
    if lo > k0:
        out = np.concatenate([np.zeros((lo - k0, out.shape[1]), dtype=out.dtype), out])
    return out


def _series_from_samples(run: _Run, s: Samples, count: int) -> Series:
    series = Series(zones=run.sc.record_zones)
    if not run.sc.record_zones:
        return series
    site = run.sc.site
    nl, nz, na = len(run.lanes), run.n_zones, len(site.ahu)
    per_m2 = 1.0 / (3.6e6 * run.params.zones.area_m2.reshape(nl, nz).sum(axis=1))
    limit = run.params.zones.co2_limit_ppm[run.rec_rows]
    for q in range(count):
        series.epoch_s.append(float(s.epoch_s[q]))
        for name in ("people", "estimate", "co2_ppm", "t_op_c", "band_low_c", "band_high_c",
                     "airflow_m3s", "mode"):  # fmt: skip
            getattr(series, name).append(getattr(s, name)[q].reshape(nl, -1).copy())
        series.co2_limit_ppm.append(limit.reshape(nl, -1))
        heat = s.heat_j[q].reshape(nl, nz).sum(1) + s.coil_heat_j[q].reshape(nl, na).sum(1)
        cool = s.cool_j[q].reshape(nl, nz).sum(1) + s.coil_cool_j[q].reshape(nl, na).sum(1)
        series.fan_kwh_m2.append(s.fan_j[q].reshape(nl, na).sum(1) * per_m2)
        series.heating_kwh_m2.append(heat / site.energy.heating_efficiency * per_m2)
        series.cooling_kwh_m2.append(cool / site.energy.cooling_cop * per_m2)
    return series


@dataclass(frozen=True)
class _Recorder:
    """Samples the recorded zones of every lane into a Series."""

    series: Series
    rows: IntArray  # rows of the recorded zones, lane-major
    n_lanes: int
    n_zones: int
    n_ahus: int
    lane_area_m2: FloatArray
    heating_efficiency: float
    cooling_cop: float

    def add(self, epoch_s: float, acc: KpiAccumulator, **zone_values: FloatArray) -> None:
        """One sample: zone_values by Series field name, each (n_rows,); energy from acc."""
        s = self.series
        s.epoch_s.append(epoch_s)
        for name, values in zone_values.items():
            getattr(s, name).append(
                np.asarray(values, dtype=np.float64)[self.rows].reshape(self.n_lanes, -1)
            )
        nl, nz, na = self.n_lanes, self.n_zones, self.n_ahus
        per_m2 = 1.0 / (3.6e6 * self.lane_area_m2)
        heat = acc.zone_heat_j.reshape(nl, nz).sum(1) + acc.coil_heat_j.reshape(nl, na).sum(1)
        cool = acc.zone_cool_j.reshape(nl, nz).sum(1) + acc.coil_cool_j.reshape(nl, na).sum(1)
        s.fan_kwh_m2.append(acc.fan_j.reshape(nl, na).sum(1) * per_m2)
        s.heating_kwh_m2.append(heat / self.heating_efficiency * per_m2)
        s.cooling_kwh_m2.append(cool / self.cooling_cop * per_m2)
