"""`ilma`: tools for facility managers; `ilma check FILE...` validates any ilma config file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from controller.service_config import describe_file as describe_controller
from controller.site import ConfigError, Site, load_site
from sensors.config import ConfigProblem, read_toml
from sensors.profiles import DeviceProfile, load_profile


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


def _describe_profile(profile: DeviceProfile) -> str:
    writable = sum(p.writable for p in profile.points.values())
    return (
        f"device profile {profile.name!r} ({profile.vendor} {profile.model}): "
        f"{len(profile.points)} points, {writable} writable"
    )


Checker = Callable[[Path], str]


def _checkers() -> dict[str, Checker]:
    """What `ilma check` knows, by the file's top-level table. Files of other packages (gateway
    files of the edge agent, say) register through the `ilma.config` entry point group, so this
    package never imports them."""
    found: dict[str, Checker] = {
        "site": lambda path: _describe(load_site(path)),
        "point": lambda path: _describe_profile(load_profile(path)),
        "controller": describe_controller,
    }
    for ep in entry_points(group="ilma.config"):
        found[ep.name] = ep.load()
    return found


def _kind(path: Path, checkers: dict[str, Checker]) -> str:
    doc = read_toml(path)
    for key in checkers:
        if key in doc:
            return key
    raise ConfigError(
        [
            ConfigProblem(
                str(path),
                "",
                f"not an ilma config file: expected one of the tables {sorted(checkers)}",
            )
        ]
    )


def check(paths: Sequence[Path], *, verbose: bool = False) -> int:
    """Validate every file; print what each holds or every problem in it. 0 if all are good."""
    failed = 0
    checkers = _checkers()
    for path in paths:
        try:
            kind = _kind(path, checkers)
            summary = checkers[kind](path)
        except ConfigError as exc:
            failed += 1
            print(f"FAIL {path}: {exc}", file=sys.stderr)
            continue
        print(f"ok   {path}: {summary}")
        if verbose and kind == "site":
            print(_zone_table(load_site(path)))
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
