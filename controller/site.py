"""The site model: what a facility manager writes in a site TOML file, validated once at load."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from controller.standards import (
    CLASS_DEFAULTS,
    FINNISH_MIN_LS_PER_PERSON,
    KIND_DEFAULTS,
    ComfortClass,
    ZoneKind,
)
from sensors.config import (
    NAME_PATTERN,
    ConfigError,
    ConfigProblem,
    FrozenModel,
    Name,
    key_path,
    problem_message,
    read_toml,
)

__all__ = ["NAME_PATTERN", "ConfigError", "ConfigProblem", "Name", "read_toml"]  # re-exported

# --- occupied hours ---------------------------------------------------------------------------

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_INDEX = {d.lower(): i for i, d in enumerate(_DAY_NAMES)}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAYS = rf"(?:daily|{_DAY}(?:-{_DAY})?(?:,{_DAY}(?:-{_DAY})?)*)"
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d"
HOURS_PATTERN = rf"^{_DAYS} {_TIME}-(?:{_TIME}|24:00)$"
_HOURS_RE = re.compile(HOURS_PATTERN, re.IGNORECASE)
_HOURS_EXPECTED = "days and a time range such as 'Mon-Fri 07:00-18:00' or 'Sat 09:00-14:00'"


@dataclass(frozen=True)
class Hours:
    """Scheduled occupied hours on some weekdays: one interval per listed day, local wall time."""

    days: frozenset[int]  # Monday = 0
    start_s: int  # seconds after local midnight
    end_s: int

    def __str__(self) -> str:
        days = ",".join(_DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {_hhmm(self.start_s)}-{_hhmm(self.end_s)}"


def _hhmm(s: int) -> str:
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}"


def parse_hours(value: object) -> Hours:
    """Parse 'Mon-Fri 07:00-18:00' (also 'daily', 'Mon,Wed', 'Sat 09:00-24:00')."""
    if isinstance(value, Hours):
        return value
    if not isinstance(value, str) or not _HOURS_RE.match(value.strip()):
        raise ValueError(f"expected {_HOURS_EXPECTED}, got {value!r}")
    days_part, times = value.strip().split(" ")
    days: set[int] = set()
    if days_part.lower() == "daily":
        days = set(range(7))
    else:
        for chunk in days_part.split(","):
            first, _, last = chunk.partition("-")
            a, b = _DAY_INDEX[first.lower()], _DAY_INDEX[(last or first).lower()]
            if b < a:
                raise ValueError(f"day range {chunk!r} runs backwards; write e.g. 'Mon-Fri'")
            days.update(range(a, b + 1))
    start, end = (int(t[:2]) * 3600 + int(t[3:]) * 60 for t in times.split("-"))
    if end <= start:
        raise ValueError(f"occupied hours {value!r} end before they start")
    return Hours(frozenset(days), start, end)


def _one_interval_per_day(hours: Sequence[Hours]) -> None:
    seen: set[int] = set()
    for h in hours:
        if seen & h.days:
            day = _DAY_NAMES[min(seen & h.days)]
            raise ValueError(f"occupied_hours give {day} twice; one interval per day is supported")
        seen |= h.days


HoursField = Annotated[
    Hours,
    PlainValidator(parse_hours),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": HOURS_PATTERN, "examples": ["Mon-Fri 07:00-18:00"]}
    ),
]

# Names appear in MQTT topics and file names: no spaces, slashes or wildcards.


# --- the model --------------------------------------------------------------------------------


class SiteInfo(FrozenModel):
    """[site]: where the building is and how it is used."""

    name: Name
    latitude_deg: float = Field(ge=-90, le=90)
    longitude_deg: float = Field(ge=-180, le=180)
    timezone: str = Field(description="IANA time zone, e.g. Europe/Helsinki")
    holiday_country: str | None = Field(
        None, description="ISO 3166 country code whose public holidays close the building"
    )
    holidays: tuple[date, ...] = Field((), description="extra closed days")
    closed_periods: tuple[tuple[date, date], ...] = Field(
        (), description="closed from the first to the last date, inclusive (school breaks)"
    )
    occupied_hours: tuple[HoursField, ...] = Field(
        (parse_hours("Mon-Fri 07:00-18:00"),), description="default for zones that give none"
    )
    co2_outdoor_ppm: float = Field(420.0, ge=300, le=1000)  # NOAA global mean 2024 [S]
    min_outdoor_air_ls_per_person: float = Field(
        FINNISH_MIN_LS_PER_PERSON,
        ge=0,
        description="floor on every zone's per-person rate (Finland: Decree 1009/2017, 6 L/s)",
    )
    # ASHRAE Guideline 36 §3.1.1.1 unoccupied setpoints are 16/32 °C [V: MBL]; many Nordic
    # buildings set back more gently.
    unoccupied_heating_c: float = Field(16.0, ge=5, le=22)
    unoccupied_cooling_c: float = Field(32.0, ge=24, le=40)
    # G36 occupied-standby relaxation: ±0.5 K after 5 min unpopulated [V: MBL G36 Setpoints].
    standby_relax_k: float = Field(0.5, ge=0, le=4)

    @field_validator("occupied_hours")
    @classmethod
    def _one_per_day(cls, v: tuple[Hours, ...]) -> tuple[Hours, ...]:
        _one_interval_per_day(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "Europe" is a directory
            raise ValueError(f"unknown time zone {v!r}; expected e.g. 'Europe/Helsinki'") from exc
        return v

    @field_validator("holiday_country")
    @classmethod
    def _known_country(cls, v: str | None) -> str | None:
        if v is not None and v not in holidays_lib.list_supported_countries():
            raise ValueError(f"no public holiday calendar for {v!r}; expected e.g. 'FI'")
        return v

    @field_validator("closed_periods")
    @classmethod
    def _ordered(cls, v: tuple[tuple[date, date], ...]) -> tuple[tuple[date, date], ...]:
        for first, last in v:
            if last < first:
                raise ValueError(f"closed period {first}..{last} ends before it starts")
        return v

    def closed_days(self, years: Sequence[int]) -> frozenset[date]:
        """Public holidays of `holiday_country` in these years, extra days and closed periods."""
        days = set(self.holidays)
        for first, last in self.closed_periods:
            days.update(date.fromordinal(d) for d in range(first.toordinal(), last.toordinal() + 1))
        if self.holiday_country:
            days.update(holidays_lib.country_holidays(self.holiday_country, years=list(years)))
        return frozenset(days)


class EnergySupply(FrozenModel):
    """[energy]: how delivered heating and cooling turn into purchased energy."""

    heating_efficiency: float = Field(
        1.0, gt=0, le=6, description="delivered/purchased heat: district heat 1.0, heat pump ~3"
    )
    cooling_cop: float = Field(3.0, gt=0, le=10, description="chiller coefficient of performance")


class Ahu(FrozenModel):
    """[[ahu]]: an air handling unit with 100 % outdoor air, heat recovery and coils."""

    name: Name
    design_airflow_m3s: float = Field(gt=0, le=100)
    min_airflow_fraction: float = Field(0.2, ge=0, le=1, description="fan minimum when running")
    # Finnish Decree 1010/2017 limit for balanced ventilation 1.8 kW/(m³/s) [U].
    sfp_kw_per_m3s: float = Field(1.8, gt=0, le=6, description="specific fan power at design")
    # P = P_design·(Q/Q_design)^n; n ≈ 2-2.5 with a fixed duct static pressure [S: esmagazine].
    fan_exponent: float = Field(2.4, ge=1, le=3.5)
    # EU Ecodesign 1253/2014 minimum for plate/wheel exchangers since 2018: 0.73 [S].
    heat_recovery_effectiveness: float = Field(0.75, ge=0, le=0.95)
    supply_t_min_c: float = Field(16.0, ge=8, le=25)
    supply_t_max_c: float = Field(20.0, ge=10, le=30)
    supply_t_design_c: float = Field(17.0, ge=8, le=30, description="fixed supply setpoint")
    has_cooling_coil: bool = True

    @model_validator(mode="after")
    def _supply_range(self) -> Ahu:
        if not self.supply_t_min_c <= self.supply_t_design_c <= self.supply_t_max_c:
            raise ValueError(
                "expected supply_t_min_c <= supply_t_design_c <= supply_t_max_c, got "
                f"{self.supply_t_min_c} / {self.supply_t_design_c} / {self.supply_t_max_c}"
            )
        return self


Facade = Literal["N", "E", "S", "W"]
Limits = tuple[float, float]


class Zone(FrozenModel):
    """[[zone]]: a room or an open area served by one AHU."""

    name: Name
    kind: ZoneKind
    ahu: Name
    area_m2: float = Field(gt=0, le=100_000)
    height_m: float = Field(3.0, gt=1.5, le=40)
    design_occupancy: int | None = Field(None, ge=0, le=100_000)
    comfort_class: ComfortClass = ComfortClass.S2
    occupied_hours: tuple[HoursField, ...] | None = None
    # Ventilation: defaults from the zone kind and the comfort class (see ResolvedZone).
    rp_ls_per_person: float | None = Field(None, ge=0, le=50)
    ra_ls_per_m2: float | None = Field(None, ge=0, le=10)
    co2_limit_ppm: float | None = Field(None, ge=500, le=5000)
    co2_generation_ls_per_person: float | None = Field(None, gt=0, le=0.05)
    # ASHRAE 62.1 Table 6-2: ceiling supply of cool air Ez = 1.0 [S].
    ez: float = Field(1.0, ge=0.5, le=1.5, description="zone air distribution effectiveness")
    airflow_min_m3s: float = Field(0.0, ge=0)
    airflow_max_m3s: float | None = Field(None, gt=0)
    design_airflow_m3s: float | None = Field(None, gt=0)
    # Setpoint limits: no command ever leaves these, whatever the inputs.
    heating_setpoint_limits_c: Limits = (14.0, 24.0)
    cooling_setpoint_limits_c: Limits = (21.0, 35.0)
    heating_capacity_w_m2: float = Field(60.0, ge=0, le=500)
    cooling_capacity_w_m2: float = Field(0.0, ge=0, le=500)
    # Envelope and internal loads, used by the simulator's plant.
    facade: Facade | None = None
    exterior_wall_m2: float = Field(0.0, ge=0)
    window_m2: float = Field(0.0, ge=0)
    roof_m2: float = Field(0.0, ge=0)
    u_wall_w_m2k: float = Field(0.17, gt=0, le=5)  # Finnish new-build reference values [U]
    u_window_w_m2k: float = Field(1.0, gt=0, le=6)
    u_roof_w_m2k: float = Field(0.09, gt=0, le=5)
    g_window: float = Field(0.35, ge=0, le=1, description="solar factor incl. shading")
    infiltration_ach: float = Field(0.1, gt=0, le=5)
    thermal_mass: Literal["light", "medium", "heavy"] = "medium"
    equipment_w_m2: float | None = Field(None, ge=0, le=200)
    has_people_counter: bool = True
    has_co2_sensor: bool = True

    @field_validator("heating_setpoint_limits_c", "cooling_setpoint_limits_c")
    @classmethod
    def _ordered_limits(cls, v: Limits) -> Limits:
        if not v[0] < v[1]:
            raise ValueError(f"expected [low, high] with low < high, got [{v[0]}, {v[1]}]")
        return v

    @field_validator("occupied_hours")
    @classmethod
    def _one_per_day(cls, v: tuple[Hours, ...] | None) -> tuple[Hours, ...] | None:
        if v is not None:
            _one_interval_per_day(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Zone:
        if (self.window_m2 > 0 or self.exterior_wall_m2 > 0) and self.facade is None:
            raise ValueError("a zone with exterior wall or windows needs facade = N, E, S or W")
        if self.airflow_max_m3s is not None and self.airflow_min_m3s > self.airflow_max_m3s:
            raise ValueError(
                f"airflow_min_m3s {self.airflow_min_m3s} exceeds airflow_max_m3s "
                f"{self.airflow_max_m3s}"
            )
        return self


# [zone_defaults]: any zone key except the identity ones, applied where a zone does not set it.
_NOT_DEFAULTABLE = {"name", "area_m2"}


def _optional(name: str) -> Any:  # noqa: ANN401  (a type built at run time)
    """Zone field `name` as optional, keeping its range limits and validators."""
    f = Zone.model_fields[name]
    annotation: Any = f.annotation
    optional = annotation | None
    return Annotated[optional, *f.metadata] if f.metadata else optional


ZoneDefaults = create_model(  # type: ignore[call-overload]
    "ZoneDefaults",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{
        name: (_optional(name), Field(None, description=f.description))
        for name, f in Zone.model_fields.items()
        if name not in _NOT_DEFAULTABLE
    },
)


class Site(FrozenModel):
    """A whole site file: the building, its AHUs and its zones."""

    site: SiteInfo
    energy: EnergySupply = EnergySupply()
    zone_defaults: ZoneDefaults | None = None
    ahu: tuple[Ahu, ...] = Field(min_length=1)
    zone: tuple[Zone, ...] = Field(min_length=1)

    @cached_property
    def resolved(self) -> tuple[ResolvedZone, ...]:
        """Every zone with its defaults filled in from its kind, its class and the site."""
        return tuple(resolve_zone(z, self.site) for z in self.zone)

    @cached_property
    def ahu_index(self) -> dict[str, int]:
        return {a.name: i for i, a in enumerate(self.ahu)}

    @cached_property
    def zone_index(self) -> dict[str, int]:
        return {z.name: i for i, z in enumerate(self.zone)}

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.site.timezone)


@dataclass(frozen=True)
class ResolvedZone:
    """A zone's effective values, after defaults. Rates here in SI: m³/s."""

    zone: Zone
    design_occupancy: int
    rp_m3s_per_person: float
    ra_m3s_per_m2: float
    co2_limit_ppm: float
    co2_generation_m3s_per_person: float
    sensible_w_per_person: float
    equipment_w_m2: float
    design_airflow_m3s: float
    airflow_max_m3s: float
    occupied_hours: tuple[Hours, ...]
    volume_m3: float

    @property
    def vbz_design_m3s(self) -> float:
        """ASHRAE 62.1 breathing-zone outdoor air at design occupancy: Rp·Pz + Ra·Az."""
        return self.rp_m3s_per_person * self.design_occupancy + self.ra_m3s_per_m2 * (
            self.zone.area_m2
        )


# The design airflow is sized so that CO2 settles this far below the limit at design occupancy.
DESIGN_CO2_MARGIN_PPM = 100.0


def resolve_zone(z: Zone, site: SiteInfo) -> ResolvedZone:
    """Fill a zone's unset values from its kind (ASHRAE 62.1), its class (EN 16798-1 / Finnish)."""
    kind = KIND_DEFAULTS[z.kind]
    cls = CLASS_DEFAULTS[z.comfort_class]
    n = (
        z.design_occupancy
        if z.design_occupancy is not None
        else max(1, round(z.area_m2 / kind.m2_per_person))
    )
    rp_ls = (
        z.rp_ls_per_person
        if z.rp_ls_per_person is not None
        else max(kind.rp_ls_per_person, cls.qp_ls_per_person, site.min_outdoor_air_ls_per_person)
    )
    ra_ls = (
        z.ra_ls_per_m2 if z.ra_ls_per_m2 is not None else max(kind.ra_ls_per_m2, cls.qb_ls_per_m2)
    )
    if z.co2_limit_ppm is not None:
        co2_limit = z.co2_limit_ppm
    elif cls.co2_absolute_ppm is not None:
        co2_limit = cls.co2_absolute_ppm
    else:
        assert cls.co2_above_outdoor_ppm is not None  # noqa: S101  (each class sets one of the two)
        co2_limit = site.co2_outdoor_ppm + cls.co2_above_outdoor_ppm
    g_ls = z.co2_generation_ls_per_person or kind.co2_generation_ls_per_person
    vbz = (rp_ls * n + ra_ls * z.area_m2) / 1000.0
    # A designer sizes the zone for its class: enough air that CO2 at design occupancy settles
    # DESIGN_CO2_MARGIN_PPM below the limit (steady state C = C_out + 1e6·n·G/Q, domain.md §3).
    headroom = co2_limit - DESIGN_CO2_MARGIN_PPM - site.co2_outdoor_ppm
    q_co2 = 1e6 * n * g_ls / 1000.0 / headroom if headroom > 0 else math.inf
    design = z.design_airflow_m3s or max(vbz / z.ez, q_co2)
    airflow_max = z.airflow_max_m3s or design
    return ResolvedZone(
        zone=z,
        design_occupancy=n,
        rp_m3s_per_person=rp_ls / 1000.0,
        ra_m3s_per_m2=ra_ls / 1000.0,
        co2_limit_ppm=co2_limit,
        co2_generation_m3s_per_person=g_ls / 1000.0,
        sensible_w_per_person=kind.sensible_w_per_person,
        equipment_w_m2=z.equipment_w_m2 if z.equipment_w_m2 is not None else kind.equipment_w_m2,
        design_airflow_m3s=design,
        airflow_max_m3s=max(airflow_max, z.airflow_min_m3s),
        occupied_hours=z.occupied_hours or site.occupied_hours,
        volume_m3=z.area_m2 * z.height_m,
    )


# --- loading ----------------------------------------------------------------------------------


def load_site(path: Path) -> Site:
    """Read and validate a site file; raise ConfigError listing every problem with its key path."""
    return parse_site(read_toml(path), source=str(path))


def parse_site(raw: Mapping[str, Any], source: str = "<site>") -> Site:
    """Validate a parsed site document; every problem is reported at once."""
    doc, from_defaults = _apply_zone_defaults(raw)
    problems = _cross_check(doc, source)
    try:
        site = Site.model_validate(doc)
    except ValidationError as exc:
        problems = _pydantic_problems(exc, doc, from_defaults, source) + problems
        raise ConfigError(problems) from None
    problems += _feasibility(site, doc, source)
    if problems:
        raise ConfigError(problems)
    return site


def _feasibility(site: Site, doc: Mapping[str, Any], source: str) -> list[ConfigProblem]:
    """Values that are each valid but cannot work together once defaults are resolved."""
    problems = []
    for i, r in enumerate(site.resolved):
        if r.design_airflow_m3s == math.inf:
            problems.append(
                ConfigProblem(
                    source,
                    _zone_loc(doc, ("zone", i, "co2_limit_ppm")),
                    f"a CO2 limit of {r.co2_limit_ppm:.0f} ppm leaves less than "
                    f"{DESIGN_CO2_MARGIN_PPM:.0f} ppm above outdoor air "
                    f"({site.site.co2_outdoor_ppm:.0f} ppm): no airflow can meet it; raise the "
                    "limit or set design_airflow_m3s",
                )
            )
    return problems


def _apply_zone_defaults(raw: Mapping[str, Any]) -> tuple[dict[str, Any], set[tuple[int, str]]]:
    doc = dict(raw)
    defaults = doc.get("zone_defaults")
    zones = doc.get("zone")
    from_defaults: set[tuple[int, str]] = set()
    if isinstance(defaults, Mapping) and isinstance(zones, list):
        merged = []
        for i, z in enumerate(zones):
            if isinstance(z, Mapping):
                extra = {k: v for k, v in defaults.items() if k not in z and k in Zone.model_fields}
                from_defaults.update((i, k) for k in extra)
                z = {**extra, **z}  # noqa: PLW2901  (the merged copy replaces the raw zone)
            merged.append(z)
        doc["zone"] = merged
    return doc, from_defaults


def _cross_check(doc: Mapping[str, Any], source: str) -> list[ConfigProblem]:
    """Checks between entries (unique names, references) that a single field cannot make."""
    problems: list[ConfigProblem] = []
    ahus = _items(doc, "ahu")
    zones = _items(doc, "zone")
    raw_site = doc.get("site")
    site: Mapping[str, Any] = raw_site if isinstance(raw_site, Mapping) else {}
    ahu_names = [a.get("name") for a in ahus if isinstance(a, Mapping)]
    for kind, items in (("ahu", ahus), ("zone", zones)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str):
                continue  # a missing or non-string name is reported by the model
            if name in seen:
                problems.append(
                    ConfigProblem(
                        source,
                        _zone_loc(doc, (kind, i, "name")),
                        f"duplicate name {name!r}, first used at {kind}[{seen[name]}]",
                    )
                )
            seen.setdefault(name, i)
    floor = site.get("min_outdoor_air_ls_per_person", FINNISH_MIN_LS_PER_PERSON)
    for i, z in enumerate(zones):
        if not isinstance(z, Mapping):
            continue
        ahu = z.get("ahu")
        if isinstance(ahu, str) and ahu not in ahu_names:
            known = ", ".join(repr(n) for n in ahu_names if isinstance(n, str)) or "none defined"
            problems.append(
                ConfigProblem(
                    source,
                    _zone_loc(doc, ("zone", i, "ahu")),
                    f"unknown AHU {ahu!r}; expected one of the [[ahu]] names ({known})",
                )
            )
        rp = z.get("rp_ls_per_person")
        if isinstance(rp, int | float) and isinstance(floor, int | float) and rp < floor:
            problems.append(
                ConfigProblem(
                    source,
                    _zone_loc(doc, ("zone", i, "rp_ls_per_person")),
                    f"{rp} L/s per person is below the site minimum of {floor} "
                    "(site.min_outdoor_air_ls_per_person; Finland: Decree 1009/2017)",
                )
            )
    return problems


def _items(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    return value if isinstance(value, list) else []


def _zone_loc(doc: Mapping[str, Any], loc: Sequence[int | str]) -> str:
    """'zone[3].area_m2 (zone "meeting-2")': the key path, with the zone's name when known."""
    path = key_path(loc)
    if len(loc) >= 2 and loc[0] == "zone" and isinstance(loc[1], int):
        zones = doc.get("zone")
        if isinstance(zones, list) and loc[1] < len(zones) and isinstance(zones[loc[1]], Mapping):
            name = zones[loc[1]].get("name")
            if isinstance(name, str):
                path += f' (zone "{name}")'
    return path


def _pydantic_problems(
    exc: ValidationError,
    doc: Mapping[str, Any],
    from_defaults: set[tuple[int, str]],
    source: str,
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    errors = exc.errors(include_url=False)
    failed_items = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
    # A bad [zone_defaults] value is reported once, where it is written; the zones that inherit
    # it fail with it and are not reported again.
    seen_default_keys = {
        str(e["loc"][1]) for e in errors if len(e["loc"]) >= 2 and e["loc"][0] == "zone_defaults"
    }
    reported_defaults: set[str] = set()
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if err["type"] == "too_short" and loc in failed_items:
            continue  # "needs at least one item" only because the items themselves failed
        if len(loc) >= 3 and loc[0] == "zone" and (loc[1], str(loc[2])) in from_defaults:
            # A bad default fails every zone that inherits it: report it once, where it is.
            if str(loc[2]) in seen_default_keys:
                continue
            seen_default_keys.add(str(loc[2]))
            loc = ("zone_defaults", *loc[2:])
        elif len(loc) >= 2 and loc[0] == "zone_defaults" and str(loc[1]) in reported_defaults:
            continue
        if loc[:1] == ("zone_defaults",):
            reported_defaults.add(str(loc[1]) if len(loc) > 1 else "")
        msg = problem_message(err)
        problems.append(ConfigProblem(source, _zone_loc(doc, loc), msg))
    return problems
