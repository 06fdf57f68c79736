"""`ilma`: tools for facility managers; `ilma check FILE...` validates config files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from controller.site import ConfigError, Site, load_site


def _describe(site: Site) -> str:
    rz = site.resolved
    area = sum(r.zone.area_m2 for r in rz)
    people = sum(r.design_occupancy for r in rz)
    return (
        f"site {site.site.name!r}: {len(site.ahu)} AHUs, {len(rz)} zones, {area:.0f} m², "
        f"{people} people at design"
    )


def _zone_table(site: Site) -> str:
    header = (
        f"  {'zone':<22}{'kind':<14}{'class':>5}{'people':>7}{'Rp L/s·p':>9}"
        f"{'Ra L/s·m²':>10}{'design L/s':>11}{'CO2 max':>8}"
    )
    rows = [
        f"  {r.zone.name:<22}{r.zone.kind.value:<14}{r.zone.comfort_class.value:>5}"
        f"{r.design_occupancy:>7}{r.rp_m3s_per_person * 1e3:>9.1f}"
        f"{r.ra_m3s_per_m2 * 1e3:>10.2f}{r.design_airflow_m3s * 1e3:>11.0f}"
        f"{r.co2_limit_ppm:>8.0f}"
        for r in site.resolved
    ]
    return "\n".join([header, *rows])


def check(paths: Sequence[Path], *, verbose: bool = False) -> int:
    """Validate every file; print what each holds or every problem in it. 0 if all are good."""
    failed = 0
    for path in paths:
        try:
            site = load_site(path)
        except ConfigError as exc:
            failed += 1
            print(f"FAIL {path}: {exc}", file=sys.stderr)
            continue
        print(f"ok   {path}: {_describe(site)}")
        if verbose:
            print(_zone_table(site))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ilma", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="validate config files; report every problem at once")
    chk.add_argument("files", nargs="+", type=Path)
    chk.add_argument(
        "-v", "--verbose", action="store_true", help="show each zone's resolved values"
    )
    args = parser.parse_args(argv)
    return check(args.files, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
