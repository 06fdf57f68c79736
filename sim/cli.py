"""`ilma-sim`: run a simulated building under several controllers and compare them."""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np

from controller.params import Strategy
from controller.site import ConfigError, Site, load_site
from controller.standards import ZoneKind
from sim.report import comparison_table, write_outputs
from sim.runner import ProgressFn, Scenario, simulate
from sim.weather import WeatherFileError, read_epw

log = logging.getLogger(__name__)

# Zones shown by default: the most telling kinds first, the largest zone of each.
_SHOWCASE = (
    ZoneKind.LECTURE_HALL,
    ZoneKind.MEETING_ROOM,
    ZoneKind.CLASSROOM,
    ZoneKind.OPEN_OFFICE,
    ZoneKind.CAFETERIA,
    ZoneKind.OFFICE,
)


def default_zones(site: Site, n: int = 3) -> tuple[str, ...]:
    chosen: list[str] = []
    for kind in _SHOWCASE:
        zones = [z for z in site.zone if z.kind is kind]
        if zones:
            chosen.append(max(zones, key=lambda z: z.area_m2).name)
        if len(chosen) == n:
            break
    return tuple(chosen) or (site.zone[0].name,)


def _controllers(text: str) -> tuple[Strategy, ...]:
    try:
        return tuple(Strategy(c.strip()) for c in text.split(",") if c.strip())
    except ValueError:
        known = ", ".join(s.value for s in Strategy)
        raise argparse.ArgumentTypeError(
            f"unknown controller in {text!r}; known: {known}"
        ) from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers such as 1,2,3, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ilma-sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a site under several controllers")
    run.add_argument("site", type=Path, help="site TOML file")
    run.add_argument(
        "--start", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD"
    )
    run.add_argument("--days", type=int, default=7)
    run.add_argument(
        "--controllers",
        type=_controllers,
        default=tuple(Strategy),
        help="comma-separated: " + ",".join(s.value for s in Strategy),
    )
    run.add_argument("--seed", type=_ints, default=(1,), help="seed, or seeds such as 1,2,3")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument(
        "--weather", type=Path, help="EnergyPlus EPW file (default: synthetic Helsinki)"
    )
    run.add_argument(
        "--weather-seed", type=int, default=1, help="seed of the synthetic weather year (default 1)"
    )
    run.add_argument("--dt", type=int, default=60, help="step, seconds (default 60)")
    run.add_argument("--warmup-days", type=int, default=3)
    run.add_argument("--zones", help="zones to record and plot, comma-separated")
    run.add_argument("--record-every", type=int, help="seconds between samples (default: auto)")
    run.add_argument("--perfect-sensors", action="store_true", help="no sensor errors")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        site = load_site(args.site)
        weather = read_epw(args.weather) if args.weather else None
    except (ConfigError, WeatherFileError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    zones = tuple(z.strip() for z in args.zones.split(",")) if args.zones else default_zones(site)
    unknown = [z for z in zones if z not in site.zone_index]
    if unknown:
        print(f"unknown zone(s) {unknown}; the site has {sorted(site.zone_index)}", file=sys.stderr)
        return 2
    if args.days <= 0 or args.dt <= 0 or 86400 % args.dt:
        print("--days must be positive and --dt must divide a day", file=sys.stderr)
        return 2
    record_every = args.record_every or (900 if args.days <= 31 else 3600)
    scenario = Scenario(
        site=site,
        start=args.start,
        days=args.days,
        controllers=args.controllers,
        seeds=args.seed,
        dt_s=args.dt,
        warmup_days=args.warmup_days,
        weather=weather,
        weather_seed=args.weather_seed,
        record_zones=zones,
        record_every_s=max(record_every, args.dt),
        sensor_faults=not args.perfect_sensors,
    )
    t0 = time.perf_counter()
    result = simulate(scenario, progress=None if args.quiet else _progress_bar())
    wall = time.perf_counter() - t0
    meta = {
        "site": str(args.site),
        "start": args.start,
        "days": args.days,
        "warmup_days": args.warmup_days,
        "dt_s": args.dt,
        "controllers": [c.value for c in args.controllers],
        "seeds": list(args.seed),
        "weather": str(args.weather)
        if args.weather
        else f"synthetic Helsinki, seed {args.weather_seed}",
        "sensor_faults": not args.perfect_sensors,
        "recorded_zones": list(zones),
        "wall_time_s": round(wall, 3),
        "zone_steps": result.zone_steps,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    paths = write_outputs(result, args.out, meta)
    print(comparison_table(result.summary()))
    print(f"\n{result.zone_steps:,} zone-steps in {wall:.1f} s. Outputs:")
    for p in paths:
        print(f"  {p}")
    return 0


def _progress_bar() -> ProgressFn:
    from tqdm import tqdm  # noqa: PLC0415  (only when a bar is wanted)

    tqdm.monitor_interval = 0  # no monitor thread: it would outlive the run
    bar: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            # disable=None: a bar on a terminal, nothing in a log file or a pipe.
            bar["bar"] = tqdm(
                total=total, unit="step", unit_scale=True, file=sys.stderr, disable=None
            )
        b = bar["bar"]
        b.update(done - b.n)
        if done >= total:
            b.close()

    return update


if __name__ == "__main__":
    sys.exit(main())
