"""The control core on live readings: estimation and control of a set of zones, cycle by cycle.

The simulator drives the core step by step from its plant; the central controller and an edge
agent in fallback drive it from telemetry. This module is that second driver, pure like the
rest of the core: the caller passes the time and the readings (validated, NaN when missing), and
gets the new state and the commands. The central service and the agent's fallback run exactly
this, so a gateway on its own controls a zone as the controller would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from controller.law import Commands, Inputs, ZoneState, initial_state, step
from controller.params import Params, Strategy, compile_params
from controller.schedule import WeekTable, day_hours, scheduled_now, week_table
from controller.site import Site, parse_site
from sensors.arrays import BoolArray, FloatArray
from sensors.occupancy import (
    Estimate,
    EstimatorParams,
    EstimatorState,
    Observation,
    estimate,
    initial_estimator_state,
)


def site_subset(site: Site, zone_names: Sequence[str]) -> Site:
    """The site with only these zones (in this order) and the AHUs that serve them."""
    doc = site.model_dump(mode="json", exclude_none=True)
    by_name = {z["name"]: z for z in doc["zone"]}
    zones = [by_name[name] for name in zone_names]
    used = {z["ahu"] for z in zones}
    # Each AHU keeps the share of its design airflow that the kept zones have: its fan minimum
    # then asks of them what it asks of them on the whole site, not the whole floor's minimum.
    total: dict[str, float] = {}
    kept: dict[str, float] = {}
    keep = set(zone_names)
    for r in site.resolved:
        total[r.zone.ahu] = total.get(r.zone.ahu, 0.0) + r.design_airflow_m3s
        if r.zone.name in keep:
            kept[r.zone.ahu] = kept.get(r.zone.ahu, 0.0) + r.design_airflow_m3s
    ahus = [
        {**a, "design_airflow_m3s": a["design_airflow_m3s"] * kept[a["name"]] / total[a["name"]]}
        for a in doc["ahu"]
        if a["name"] in used
    ]
    doc = {**doc, "zone": zones, "ahu": ahus}
    doc.pop("zone_defaults", None)
    return parse_site(doc, source=f"{site.site.name} (zones {', '.join(zone_names)})")


@dataclass(frozen=True)
class LiveCore:
    """Everything fixed about a set of zones: the core's parameters, schedule and calendar."""

    site: Site
    zones: tuple[str, ...]
    params: Params
    estimator: EstimatorParams
    table: WeekTable
    tz: ZoneInfo

    @classmethod
    def build(
        cls, site: Site, zones: Sequence[str] | None = None, strategy: Strategy = Strategy.ILMA
    ) -> LiveCore:
        names = tuple(z.name for z in site.zone) if zones is None else tuple(zones)
        sub = site if names == tuple(z.name for z in site.zone) else site_subset(site, names)
        rz = sub.resolved
        return cls(
            site=sub,
            zones=names,
            params=compile_params(sub, strategy),
            estimator=EstimatorParams(
                volume_m3=np.array([r.volume_m3 for r in rz]),
                co2_gen_m3s=np.array([r.co2_generation_m3s_per_person for r in rz]),
                infiltration_m3s=np.array(
                    [r.zone.infiltration_ach * r.volume_m3 / 3600 for r in rz]
                ),
                design_occupancy=np.array([float(r.design_occupancy) for r in rz]),
                has_counter=np.array([z.has_people_counter for z in sub.zone]),
                has_co2=np.array([z.has_co2_sensor for z in sub.zone]),
            ),
            table=week_table([r.occupied_hours for r in rz]),
            tz=ZoneInfo(sub.site.timezone),
        )

    @property
    def n(self) -> int:
        return len(self.zones)


class LiveState(NamedTuple):
    control: ZoneState
    estimator: EstimatorState
    airflow_m3s: FloatArray  # the airflow commanded last cycle: the estimator's CO2 balance


def initial_live_state(core: LiveCore) -> LiveState:
    return LiveState(initial_state(core.params), initial_estimator_state(core.n), np.zeros(core.n))


class LiveReadings(NamedTuple):
    """One cycle's validated readings, (n_zones,) each; NaN where missing or not good."""

    counter_in: FloatArray  # cumulative IN register
    counter_out: FloatArray
    co2_ppm: FloatArray
    t_zone_c: FloatArray
    t_supply_c: FloatArray  # of the zone's AHU
    t_out_c: FloatArray  # outdoor; NaN at a gateway without a weather sensor
    t_out_24h_c: FloatArray


def missing_readings(n: int) -> LiveReadings:
    return LiveReadings(*(np.full(n, np.nan) for _ in LiveReadings._fields))


def live_step(
    state: LiveState, readings: LiveReadings, epoch_s: float, dt_s: float, core: LiveCore
) -> tuple[LiveState, Commands, Estimate]:
    """Estimate occupancy and compute every zone's command for the moment `epoch_s`."""
    n = core.n
    co2_out = np.full(n, core.site.site.co2_outdoor_ppm)
    est_state, est = estimate(
        state.estimator,
        Observation(
            dt_s, readings.counter_in, readings.counter_out, readings.co2_ppm, co2_out,
            state.airflow_m3s,
        ),
        core.estimator,
    )  # fmt: skip
    scheduled, to_open = schedule_at(core, epoch_s)
    ctrl, cmd = step(
        state.control,
        Inputs(
            dt_s=dt_s,
            scheduled=scheduled,
            time_to_open_s=to_open,
            occupancy=est.occupancy,
            co2_ppm=readings.co2_ppm,
            t_zone_c=readings.t_zone_c,
            t_supply_c=readings.t_supply_c,
            t_out_c=readings.t_out_c,
            t_out_24h_c=readings.t_out_24h_c,
            co2_out_ppm=co2_out,
        ),
        core.params,
    )
    return LiveState(ctrl, est_state, cmd.airflow_m3s), cmd, est


def schedule_at(core: LiveCore, epoch_s: float) -> tuple[BoolArray, FloatArray]:
    """(inside scheduled hours, seconds to the next opening) per zone at `epoch_s`, in the site's
    local time, with its holidays and closed periods."""
    local = datetime.fromtimestamp(epoch_s, UTC).astimezone(core.tz)
    today = local.date()
    tomorrow = today + timedelta(days=1)
    closed = core.site.site.closed_days((today.year, tomorrow.year))
    n = core.n
    open_today, close_today = day_hours(
        core.table, np.full(n, today.weekday()), np.full(n, today in closed)
    )
    open_tomorrow, _ = day_hours(
        core.table, np.full(n, tomorrow.weekday()), np.full(n, tomorrow in closed)
    )
    tod_s = local.hour * 3600.0 + local.minute * 60.0 + local.second + local.microsecond / 1e6
    scheduled, to_open = scheduled_now(open_today, close_today, open_tomorrow, np.full(n, tod_s))
    if local.utcoffset() != (local + timedelta(days=2)).astimezone(core.tz).utcoffset():
        # A daylight-saving change within reach: wall-clock seconds to the opening are not real
        # seconds (what optimal start needs). Only these two nights a year pay for the loop.
        now_offset = local.utcoffset() or timedelta(0)
        for k in np.flatnonzero(np.isfinite(to_open)).tolist():
            wall = local.replace(tzinfo=None) + timedelta(seconds=float(to_open[k]))
            shift = (wall.replace(tzinfo=core.tz).utcoffset() or timedelta(0)) - now_offset
            to_open[k] -= shift.total_seconds()
    return scheduled, to_open
