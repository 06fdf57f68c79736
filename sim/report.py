"""Run outputs: the comparison table, summary.json, CSV time series and the PNG plot."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.law import Mode
from sim.runner import RunResult

# Rows of the comparison table: (summary key, label, format).
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("energy_kwh_m2", "HVAC energy, kWh/m²", "{:.3f}"),
    ("fan_kwh_m2", "  fans", "{:.3f}"),
    ("heating_kwh_m2", "  heating", "{:.3f}"),
    ("cooling_kwh_m2", "  cooling", "{:.3f}"),
    ("thermal_discomfort_kh", "thermal discomfort, K·h/zone", "{:.2f}"),
    ("iaq_discomfort_ppmh", "IAQ discomfort, ppm·h/zone", "{:.1f}"),
    ("comfort_share", "occupied time in class", "{:.1%}"),
    ("ventilation_shortfall_h", "air short of 62.1, h/zone", "{:.2f}"),
)
BASELINE = "schedule"


def comparison_table(summary: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one column per controller, energy also relative to the baseline."""
    names = list(summary)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["".ljust(30) + "".join(n.rjust(width) for n in names)]
    for key, label, fmt in TABLE_ROWS:
        lines.append(
            label.ljust(30) + "".join(fmt.format(summary[n][key]).rjust(width) for n in names)
        )
    if BASELINE in summary and summary[BASELINE]["energy_kwh_m2"] > 0:
        base = summary[BASELINE]["energy_kwh_m2"]
        lines.append(
            f"energy vs {BASELINE}".ljust(30)
            + "".join(
                f"{summary[n]['energy_kwh_m2'] / base - 1.0:+.1%}".rjust(width) for n in names
            )
        )
    return "\n".join(lines)


def write_outputs(result: RunResult, out: Path, meta: dict[str, Any]) -> list[Path]:
    """Write every output of a run into `out`; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    paths = [out / "summary.json", out / "run.json", out / "zone_kpis.csv"]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    _write_zone_kpis(result, paths[2])
    if result.series.epoch_s:
        paths += [out / "zones.csv", out / "energy.csv", out / "plot.png"]
        _write_series(result, paths[3], paths[4])
        plot(result, paths[5])
    return paths


def _write_zone_kpis(result: RunResult, path: Path) -> None:
    site = result.scenario.site
    nz = len(site.zone)
    a = result.totals
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["controller", "seed", "zone", "thermal_discomfort_kh", "iaq_discomfort_ppmh",
             "occupied_h", "ventilation_shortfall_h", "heating_kwh", "cooling_kwh"]
        )  # fmt: skip
        for li, lane in enumerate(result.lanes):
            for zi, zone in enumerate(site.zone):
                r = li * nz + zi
                w.writerow(
                    [lane.controller.value, lane.seed, zone.name, f"{a.tdis_kh[r]:.4f}",
                     f"{a.idis_ppmh[r]:.2f}", f"{a.occupied_h[r]:.3f}", f"{a.short_h[r]:.3f}",
                     f"{a.zone_heat_j[r] / 3.6e6:.3f}", f"{a.zone_cool_j[r] / 3.6e6:.3f}"]
                )  # fmt: skip


_ZONE_FIELDS = (
    "people", "estimate", "co2_ppm", "co2_limit_ppm", "t_op_c", "band_low_c", "band_high_c",
    "airflow_m3s", "mode",
)  # fmt: skip


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def _write_series(result: RunResult, zones_csv: Path, energy_csv: Path) -> None:
    s = result.series
    times = [_iso(t) for t in s.epoch_s]
    cols = {f: s.array(f) for f in _ZONE_FIELDS}  # (n_samples, n_lanes, n_zones)
    with zones_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "controller", "seed", "zone", *_ZONE_FIELDS])
        for j, t in enumerate(times):
            for li, lane in enumerate(result.lanes):
                for zi, zone in enumerate(s.zones):
                    row = [cols[c][j, li, zi] for c in _ZONE_FIELDS]
                    w.writerow(
                        [t, lane.controller.value, lane.seed, zone]
                        + [f"{v:.4g}" if np.isfinite(v) else "" for v in row[:-1]]
                        + [Mode(int(row[-1])).name.lower()]
                    )
    energy = {k: s.array(k) for k in ("fan_kwh_m2", "heating_kwh_m2", "cooling_kwh_m2")}
    with energy_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "controller", "seed", "fan_kwh_m2", "heating_kwh_m2",
                    "cooling_kwh_m2", "total_kwh_m2"])  # fmt: skip
        for j, t in enumerate(times):
            for li, lane in enumerate(result.lanes):
                e = [energy[k][j, li] for k in energy]
                w.writerow([t, lane.controller.value, lane.seed, *(f"{v:.5f}" for v in e),
                            f"{sum(e):.5f}"])  # fmt: skip


def _date_axis(ax: Any, mdates: Any, tz: Any) -> None:  # noqa: ANN401  (matplotlib objects)
    locator = mdates.AutoDateLocator(tz=tz, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    ax.grid(alpha=0.3)


_COLOURS = {"ilma": "#1b9e77", "schedule": "#7570b3", "co2": "#d95f02", "oracle": "#e7298a"}


def plot(result: RunResult, path: Path) -> None:
    """One figure: occupancy, CO2, temperature and airflow per recorded zone; energy below."""
    import matplotlib as mpl  # noqa: PLC0415  (a heavy import only the report needs)

    mpl.use("Agg")
    import matplotlib.dates as mdates  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415

    s = result.series
    tz = result.scenario.site.tz
    t = mdates.date2num([datetime.fromtimestamp(x, tz) for x in s.epoch_s])  # type: ignore[no-untyped-call]
    seed0 = result.scenario.seeds[0]
    lanes = [(i, lane) for i, lane in enumerate(result.lanes) if lane.seed == seed0]
    nzc = len(s.zones)
    fig = plt.figure(figsize=(4.2 * nzc + 1.5, 13), constrained_layout=True)
    grid = fig.add_gridspec(5, nzc)
    people, est = s.array("people"), s.array("estimate")
    co2, lim = s.array("co2_ppm"), s.array("co2_limit_ppm")
    t_op, lo, hi = s.array("t_op_c"), s.array("band_low_c"), s.array("band_high_c")
    air = s.array("airflow_m3s") * 1000.0
    for zi, zone in enumerate(s.zones):
        ax = [fig.add_subplot(grid[r, zi]) for r in range(4)]
        ax[0].set_title(zone)
        i0 = lanes[0][0]
        ax[0].plot(t, people[:, i0, zi], color="black", lw=1.2, label="true")
        for i, lane in lanes:
            if lane.controller.value == "ilma":
                ax[0].plot(t, est[:, i, zi], color=_COLOURS["ilma"], lw=1, ls="--",
                           label="ilma estimate")  # fmt: skip
        ax[1].plot(t, lim[:, i0, zi], color="grey", lw=1, ls=":", label="limit")
        ax[2].fill_between(t, lo[:, i0, zi], hi[:, i0, zi], color="#dddddd", label="comfort band")
        for i, lane in lanes:
            c = _COLOURS.get(lane.controller.value)
            ax[1].plot(t, co2[:, i, zi], color=c, lw=0.9, label=lane.controller.value)
            ax[2].plot(t, t_op[:, i, zi], color=c, lw=0.9, label=lane.controller.value)
            ax[3].plot(t, air[:, i, zi], color=c, lw=0.9, label=lane.controller.value)
        for a_, label in zip(
            ax, ("people", "CO₂, ppm", "operative °C", "airflow, L/s"), strict=True
        ):
            a_.set_ylabel(label)
            _date_axis(a_, mdates, tz)
        if zi == 0:
            for a_ in ax:
                a_.legend(fontsize=7, loc="upper left")
    ax_e = fig.add_subplot(grid[4, :])
    total = s.array("fan_kwh_m2") + s.array("heating_kwh_m2") + s.array("cooling_kwh_m2")
    for i, lane in lanes:
        ax_e.plot(t, total[:, i], color=_COLOURS.get(lane.controller.value), lw=1.5,
                  label=lane.controller.value)  # fmt: skip
    ax_e.set_ylabel("HVAC energy since start, kWh/m²")
    _date_axis(ax_e, mdates, tz)
    ax_e.legend(fontsize=8, loc="upper left")
    site = result.scenario.site.site.name
    fig.suptitle(f"{site}: {result.scenario.start} + {result.scenario.days} days, seed {seed0}")
    fig.savefig(path, dpi=90)
    plt.close(fig)
