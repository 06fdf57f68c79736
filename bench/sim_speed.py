"""Simulator speed: zone-steps per second of the full closed loop, and a simulated year.

    python bench/sim_speed.py [--json] [--quick]

1. The full closed loop (sensors, validation, estimation, control, plant, KPIs) at 10, 100,
   1,000 and 10,000 zones with 60 s steps, one controller (ilma), one simulated day: the fused
   loop (the core's stages compiled by numba, the simulator's default), the same core as plain
   numpy (as gateways run it), and a straightforward per-zone Python loop of the same model
   (bench/reference_loop.py), in the same process on the same site. Goal: ≥ 10 M zone-steps/s
   at 1,000 zones and above.
2. A full simulated year of the Helsinki office with all four controllers. Goal: < 10 s.

Setup (weather, people, sensor faults, parameters) is timed apart from the loop; the one-time
compile of the fused loop happens before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.reference_loop import simulate_reference  # noqa: E402
from controller.params import Strategy  # noqa: E402
from controller.site import Site, load_site  # noqa: E402
from sim.building import replicate  # noqa: E402
from sim.runner import Scenario, simulate  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)
GOAL_ZONE_STEPS_S = 10e6
GOAL_YEAR_S = 10.0
# The reference loop is slow: give it about this many zone-steps at each size.
REFERENCE_ZONE_STEPS = 150_000


def closed_loop(site: Site, n: int) -> dict[str, Any]:
    s = replicate(site, n)
    sc = Scenario(
        site=s, start=date(2027, 1, 12), days=1, controllers=(Strategy.ILMA,), warmup_days=0
    )
    fused = simulate(sc)
    plain = simulate(replace(sc, accelerate=False))
    ref_steps = max(10, min(1440, REFERENCE_ZONE_STEPS // n))
    ref = simulate_reference(sc, max_steps=ref_steps)
    rate = fused.zone_steps / fused.loop_s
    numpy_rate = plain.zone_steps / plain.loop_s
    ref_rate = ref.zone_steps / ref.loop_s
    return {
        "zones": n,
        "steps": fused.steps,
        "zone_steps": fused.zone_steps,
        "setup_s": round(fused.setup_s, 3),
        "loop_s": round(fused.loop_s, 3),
        "zone_steps_per_s": rate,
        "numpy_zone_steps_per_s": numpy_rate,
        "reference_zone_steps": ref.zone_steps,
        "reference_zone_steps_per_s": ref_rate,
        "speedup_vs_reference": rate / ref_rate,
        "numpy_speedup_vs_reference": numpy_rate / ref_rate,
    }


def year(site: Site) -> dict[str, Any]:
    sc = Scenario(
        site=site, start=date(2027, 1, 1), days=365, controllers=tuple(Strategy), warmup_days=3
    )
    t0 = time.perf_counter()
    r = simulate(sc)
    wall = time.perf_counter() - t0
    return {
        "zones": len(site.zone),
        "controllers": len(sc.controllers),
        "days": sc.days,
        "steps": r.steps,
        "zone_steps": r.zone_steps,
        "setup_s": round(r.setup_s, 3),
        "loop_s": round(r.loop_s, 3),
        "wall_s": round(wall, 3),
        "goal_s": GOAL_YEAR_S,
        "energy_vs_schedule": r.summary()["ilma"]["energy_kwh_m2"]
        / r.summary()["schedule"]["energy_kwh_m2"]
        - 1.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quick", action="store_true", help="skip 10,000 zones and the year")
    args = parser.parse_args()
    site = load_site(ROOT / "config" / "sites" / "helsinki-office.toml")
    t0 = time.perf_counter()
    simulate(Scenario(site=site, start=date(2027, 1, 12), days=1, controllers=(Strategy.ILMA,)))
    compile_s = time.perf_counter() - t0  # compiles the fused loop, or loads it from the cache
    sizes = SIZES[:-1] if args.quick else SIZES
    loops = [closed_loop(site, n) for n in sizes]
    out: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "first_run_s": round(compile_s, 1),
        "closed_loop": loops,
        "goal_zone_steps_per_s": GOAL_ZONE_STEPS_S,
    }
    if not args.quick:
        out["year"] = year(site)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print("full closed loop, 60 s steps, ilma, one day; zone-steps per second")
    print(
        f"{'zones':>8}{'fused':>13}{'numpy':>13}{'per-zone loop':>15}"
        f"{'fused/loop':>12}{'numpy/loop':>12}{'of goal':>9}"
    )
    for row in loops:
        print(
            f"{row['zones']:>8,}{row['zone_steps_per_s']:>13,.0f}"
            f"{row['numpy_zone_steps_per_s']:>13,.0f}{row['reference_zone_steps_per_s']:>15,.0f}"
            f"{row['speedup_vs_reference']:>11.1f}×{row['numpy_speedup_vs_reference']:>11.1f}×"
            f"{row['zone_steps_per_s'] / GOAL_ZONE_STEPS_S:>9.0%}"
        )
    print(f"(first run, compiling or loading the fused loop: {out['first_run_s']} s)")
    if "year" in out:
        y = out["year"]
        print(
            f"\na year of the Helsinki office ({y['zones']} zones), "
            f"{y['controllers']} controllers: {y['wall_s']:.1f} s "
            f"(loop {y['loop_s']:.1f} s, setup {y['setup_s']:.1f} s; "
            f"goal < {GOAL_YEAR_S:.0f} s); ilma vs schedule {y['energy_vs_schedule']:+.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
