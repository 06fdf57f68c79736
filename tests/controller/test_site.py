"""Tests for controller.site: loading, every problem at once, hours, closed days, resolved zones."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controller.site import (
    DESIGN_CO2_MARGIN_PPM,
    ConfigError,
    ConfigProblem,
    Hours,
    Site,
    load_site,
    parse_hours,
    parse_site,
)
from sensors.errors import IlmaError

REPO = Path(__file__).resolve().parents[2]
SITES = REPO / "config" / "sites"
HELSINKI = SITES / "helsinki-office.toml"
SCHOOL = SITES / "school.toml"

WEEKDAYS = frozenset(range(5))
ALL_DAYS = frozenset(range(7))


def _raw(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# Module-level, not fixtures: hypothesis tests run their body many times per fixture.
_HELSINKI_RAW = _raw(HELSINKI)


def _small(**site: Any) -> dict[str, Any]:
    """A minimal valid document; `site` keys are added to [site]."""
    return {
        "site": {
            "name": "small",
            "latitude_deg": 60.2,
            "longitude_deg": 24.9,
            "timezone": "Europe/Helsinki",
            **site,
        },
        "ahu": [{"name": "TK01", "design_airflow_m3s": 2.0}],
        "zone": [{"name": "room", "kind": "office", "ahu": "TK01", "area_m2": 20.0}],
    }


def _problems(doc: dict[str, Any], source: str = "test.toml") -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        parse_site(doc, source=source)
    return info.value.problems


# --- the example files ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [HELSINKI, SCHOOL], ids=lambda p: p.name)
def test_example_sites_load(path: Path) -> None:
    site = load_site(path)
    raw = _raw(path)
    assert site.site.name == raw["site"]["name"]
    assert [z.name for z in site.zone] == [z["name"] for z in raw["zone"]]
    assert [a.name for a in site.ahu] == [a["name"] for a in raw["ahu"]]
    assert len(site.resolved) == len(site.zone)
    assert site.tz.key == "Europe/Helsinki"


def test_example_site_values_and_defaults_arrive_in_the_model() -> None:
    site = load_site(HELSINKI)
    hall = site.zone[site.zone_index["lecture-hall"]]
    assert hall.height_m == 5.5  # its own value wins over [zone_defaults]
    assert hall.occupied_hours == (Hours(WEEKDAYS, 8 * 3600, 18 * 3600),)
    office = site.zone[site.zone_index["office-e1"]]
    assert office.height_m == 3.0  # from [zone_defaults]
    assert office.cooling_capacity_w_m2 == 40.0  # from [zone_defaults]
    assert office.occupied_hours is None  # the site's hours apply, see `resolved`
    assert site.resolved[site.zone_index["office-e1"]].occupied_hours == (
        Hours(WEEKDAYS, 7 * 3600, 18 * 3600),
    )
    assert site.ahu_index == {"TK01": 0, "TK02": 1, "TK03": 2}
    assert site.ahu[1].supply_t_design_c == 17.0  # model default
    assert site.energy.cooling_cop == 3.5


def test_site_model_is_frozen() -> None:
    site = load_site(HELSINKI)
    with pytest.raises(ValueError, match="frozen"):
        site.zone[0].area_m2 = 1.0  # type: ignore[misc]


# --- every problem at once ------------------------------------------------------------------

BAD_SITE = """\
[site]
name = "bad"
latitude_deg = 60.2
longitude_deg = 24.9
timezone = "Europe/Helsinki"

[[ahu]]
name = "TK01"
design_airflow_m3s = 2.0

[[zone]]
name = "a"
kind = "office"
ahu = "TK01"
area_m2 = 20

[[zone]]                      # zone[1]: wrong type
name = "b"
kind = "office"
ahu = "TK01"
area_m2 = "twenty"

[[zone]]                      # zone[2]: unknown key
name = "c"
kind = "office"
ahu = "TK01"
area_m2 = 20
colour = "blue"

[[zone]]                      # zone[3]: out of range
name = "d"
kind = "office"
ahu = "TK01"
area_m2 = 20
height_m = 100

[[zone]]                      # zone[4]: unknown AHU
name = "e"
kind = "office"
ahu = "TK99"
area_m2 = 20

[[zone]]                      # zone[5]: duplicate name
name = "a"
kind = "office"
ahu = "TK01"
area_m2 = 20

[[zone]]                      # zone[6]: below the site's 6 L/s per person
name = "g"
kind = "office"
ahu = "TK01"
area_m2 = 20
rp_ls_per_person = 4.0

[[zone]]                      # zone[7]: required key missing
name = "h"
ahu = "TK01"
area_m2 = 20
"""

# (key path, words of the expectation that must appear in the message)
BAD_SITE_PROBLEMS = [
    ("zone[1].area_m2", ("valid number", "'twenty'")),
    ("zone[2].colour", ("unknown key",)),
    ("zone[3].height_m", ("less than or equal to 40", "100")),
    ("zone[4].ahu", ("unknown AHU 'TK99'", "'TK01'")),
    ("zone[5].name", ("duplicate name 'a'", "zone[0]")),
    ("zone[6].rp_ls_per_person", ("below the site minimum of 6",)),
    ("zone[7].kind", ("required",)),
]


def test_a_file_with_many_mistakes_lists_every_one_with_file_key_and_expectation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad-site.toml"
    path.write_text(BAD_SITE, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    problems = info.value.problems
    assert len(problems) == len(BAD_SITE_PROBLEMS), "\n".join(map(str, problems))
    for loc, words in BAD_SITE_PROBLEMS:
        matching = [p for p in problems if p.loc.split(" ")[0] == loc]
        assert len(matching) == 1, f"{loc}: {[str(p) for p in problems]}"
        problem = matching[0]
        assert problem.source == str(path)
        for word in words:
            assert word in problem.message, f"{loc}: {word!r} not in {problem.message!r}"
        assert str(problem).startswith(f"{path}: {loc}")
    # The key path names the zone too, so a reader finds it in a long file.
    assert next(p for p in problems if p.loc.startswith("zone[3].")).loc == (
        'zone[3].height_m (zone "d")'
    )
    # The exception's text carries every problem; it is a ValueError and an IlmaError.
    text = str(info.value)
    assert text.startswith("7 problems in config:")
    for p in problems:
        assert str(p) in text
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, IlmaError)


def test_the_site_minimum_per_person_follows_the_site_setting() -> None:
    doc = _small(min_outdoor_air_ls_per_person=8.0)
    doc["zone"][0]["rp_ls_per_person"] = 7.0
    (problem,) = _problems(doc)
    assert problem.loc == 'zone[0].rp_ls_per_person (zone "room")'
    assert "below the site minimum of 8.0" in problem.message
    doc = _small(min_outdoor_air_ls_per_person=2.0)
    doc["zone"][0]["rp_ls_per_person"] = 2.0
    assert parse_site(doc).resolved[0].rp_m3s_per_person == pytest.approx(0.002)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("height_m", 0.5, ("greater than 1.5",)),  # out of range
        ("height_m", "tall", ("valid number",)),  # wrong type
        ("thermal_mass", "paper", ("'light', 'medium' or 'heavy'",)),  # not one of the choices
        ("heating_setpoint_limits_c", [25.0, 20.0], ("low < high",)),  # fails a zone check
    ],
)
def test_a_bad_zone_default_is_reported_once_where_it_is_written(
    key: str, value: object, words: tuple[str, ...]
) -> None:
    doc = copy.deepcopy(_HELSINKI_RAW)  # 17 zones inherit [zone_defaults]
    doc["zone_defaults"][key] = value
    problems = _problems(doc)
    assert [p.loc for p in problems] == [f"zone_defaults.{key}"], "\n".join(map(str, problems))
    for word in words:
        assert word in problems[0].message


def test_a_bad_zone_default_is_reported_even_when_every_zone_sets_its_own_value() -> None:
    doc = _small()
    doc["zone_defaults"] = {"height_m": 0.5}
    doc["zone"][0]["height_m"] = 3.0
    problems = _problems(doc)
    assert [p.loc for p in problems] == ["zone_defaults.height_m"]


def test_a_zone_value_that_overrides_a_good_default_is_reported_at_the_zone() -> None:
    doc = copy.deepcopy(_HELSINKI_RAW)
    doc["zone"][2]["height_m"] = 0.5
    (problem,) = _problems(doc)
    assert problem.loc == 'zone[2].height_m (zone "office-e1")'


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[site]\nname = "x"\nlatitude_deg = = 60\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    (problem,) = info.value.problems
    assert problem.source == str(path)
    assert "line 3" in problem.message
    assert str(path) in str(info.value)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert [p.source for p in info.value.problems] == [str(path)]
    assert "cannot read" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("mutate", "loc", "words"),
    [
        (lambda d: d["site"].update(timezone="Mars/Olympus"), "site.timezone", ("time zone",)),
        (lambda d: d["site"].update(timezone="Europe"), "site.timezone", ("time zone",)),
        (lambda d: d["site"].update(timezone="x" * 300), "site.timezone", ("time zone",)),
        (lambda d: d["site"].update(holiday_country="XX"), "site.holiday_country", ("'XX'",)),
        (lambda d: d["site"].update(name="a b/c"), "site.name", ("MQTT",)),
        (
            lambda d: d["site"].update(closed_periods=[["2027-01-05", "2027-01-01"]]),
            "site.closed_periods",
            ("ends before it starts",),
        ),
        (
            lambda d: d["site"].update(occupied_hours=["Mon-Fri 07:00-12:00", "Fri 13:00-18:00"]),
            "site.occupied_hours",
            ("Fri twice",),
        ),
        (
            lambda d: d["zone"][0].update(
                occupied_hours=["Mon-Fri 07:00-12:00", "Mon 13:00-18:00"]
            ),
            'zone[0].occupied_hours (zone "room")',
            ("Mon twice",),
        ),
        (
            lambda d: d["zone"][0].update(occupied_hours=["Fri-Mon 07:00-18:00"]),
            'zone[0].occupied_hours[0] (zone "room")',
            ("runs backwards",),
        ),
        (
            lambda d: d["zone"][0].update(airflow_min_m3s=0.2, airflow_max_m3s=0.1),
            'zone[0] (zone "room")',
            ("exceeds airflow_max_m3s",),
        ),
        (
            lambda d: d["zone"][0].update(window_m2=4.0),
            'zone[0] (zone "room")',
            ("facade",),
        ),
        (
            lambda d: d["ahu"][0].update(supply_t_min_c=18.0, supply_t_design_c=17.0),
            "ahu[0]",
            ("supply_t_min_c <= supply_t_design_c",),
        ),
        (lambda d: d["zone"][0].update(name=["room"]), "zone[0].name", ("valid string",)),
        (lambda d: d["ahu"][0].update(name={"n": 1}), "ahu[0].name", ("valid string",)),
        (lambda d: d.update(zone=[]), "zone", ("at least 1",)),
    ],
    ids=[
        "unknown-tz",
        "tz-is-a-directory",
        "tz-too-long",
        "holiday-country",
        "name-pattern",
        "closed-period-reversed",
        "site-hours-twice",
        "zone-hours-twice",
        "day-range-backwards",
        "airflow-min-above-max",
        "window-without-facade",
        "ahu-supply-order",
        "zone-name-a-list",
        "ahu-name-a-table",
        "no-zones",
    ],
)
def test_single_mistakes_are_reported_at_their_key(
    mutate: Any, loc: str, words: tuple[str, ...]
) -> None:
    doc = _small()
    mutate(doc)
    problems = _problems(doc)
    assert loc in [p.loc for p in problems], "\n".join(map(str, problems))
    message = next(p.message for p in problems if p.loc == loc)
    for word in words:
        assert word in message


# --- occupied hours -------------------------------------------------------------------------

H = 3600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mon-Fri 07:00-18:00", Hours(WEEKDAYS, 7 * H, 18 * H)),
        ("daily 00:00-24:00", Hours(ALL_DAYS, 0, 24 * H)),
        ("daily 06:30-22:15", Hours(ALL_DAYS, 6 * H + 1800, 22 * H + 900)),
        ("Mon,Wed,Fri 08:00-12:00", Hours(frozenset({0, 2, 4}), 8 * H, 12 * H)),
        ("Sat 09:00-14:00", Hours(frozenset({5}), 9 * H, 14 * H)),
        ("Sun 18:00-24:00", Hours(frozenset({6}), 18 * H, 24 * H)),
        ("Mon-Wed,Fri 07:00-18:00", Hours(frozenset({0, 1, 2, 4}), 7 * H, 18 * H)),
        ("Sat-Sun 10:00-16:00", Hours(frozenset({5, 6}), 10 * H, 16 * H)),
        ("mon-fri 07:00-18:00", Hours(WEEKDAYS, 7 * H, 18 * H)),  # any case
        ("DAILY 00:00-00:01", Hours(ALL_DAYS, 0, 60)),
        ("  Tue 23:59-24:00 ", Hours(frozenset({1}), 23 * H + 59 * 60, 24 * H)),
    ],
)
def test_parse_hours_golden(text: str, expected: Hours) -> None:
    assert parse_hours(text) == expected
    assert parse_hours(str(parse_hours(text))) == expected  # str() writes a parseable form


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Fri-Mon 07:00-18:00", "runs backwards"),  # reversed day range
        ("Mon,Sun-Sat 07:00-18:00", "runs backwards"),
        ("Mon-Fri 18:00-07:00", "end before they start"),  # end before start
        ("Mon-Fri 07:00-07:00", "end before they start"),  # empty interval
        ("Mon-Fri 24:00-24:00", "expected days"),  # 24:00 only as an end
        ("Mon-Fri 07:00-24:01", "expected days"),
        ("Mon-Fri 07:00-25:00", "expected days"),
        ("Mon-Fri 7:00-18:00", "expected days"),  # two-digit hours
        ("Mon-Fri 07:60-18:00", "expected days"),
        ("Monday 07:00-18:00", "expected days"),
        ("Mon-Fri", "expected days"),
        ("07:00-18:00", "expected days"),
        ("Mon-Fri  07:00-18:00", "expected days"),  # two spaces
        ("Mon-Fri 07:00-12:00 13:00-18:00", "expected days"),  # two intervals in one string
        ("Mon,,Fri 07:00-18:00", "expected days"),
        ("", "expected days"),
        (42, "expected days"),
        (None, "expected days"),
    ],
)
def test_parse_hours_rejects(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_hours(value)


@pytest.mark.parametrize(
    "hours",
    [
        ["Mon-Fri 07:00-12:00", "Mon-Fri 13:00-18:00"],  # two intervals on the same days
        ["Mon-Fri 07:00-12:00", "Wed 13:00-18:00"],
        ["daily 07:00-12:00", "Sun 13:00-18:00"],
        ["Mon,Wed 07:00-12:00", "Tue-Wed 13:00-18:00"],
    ],
)
def test_two_intervals_on_the_same_day_are_rejected(hours: list[str]) -> None:
    (problem,) = _problems(_small(occupied_hours=hours))
    assert problem.loc == "site.occupied_hours"
    assert "twice" in problem.message


def test_disjoint_days_may_have_different_hours() -> None:
    site = parse_site(_small(occupied_hours=["Mon-Fri 07:00-18:00", "Sat 09:00-14:00"]))
    assert site.site.occupied_hours == (
        Hours(WEEKDAYS, 7 * H, 18 * H),
        Hours(frozenset({5}), 9 * H, 14 * H),
    )


def test_hours_default_to_weekday_office_hours() -> None:
    site = parse_site(_small())
    assert site.resolved[0].occupied_hours == (Hours(WEEKDAYS, 7 * H, 18 * H),)


# --- closed days ----------------------------------------------------------------------------


def test_closed_periods_expand_into_closed_days() -> None:
    school = load_site(SCHOOL)
    closed = school.site.closed_days([2026, 2027])
    christmas = {date(2026, 12, 21) + timedelta(days=k) for k in range(17)}  # ..2027-01-06
    ski_week = {date(2027, 2, 22) + timedelta(days=k) for k in range(5)}
    summer = {date(2027, 6, 1) + timedelta(days=k) for k in range(71)}  # ..2027-08-10
    assert max(summer) == date(2027, 8, 10)
    assert christmas | ski_week | summer <= closed
    for open_day in (date(2026, 12, 18), date(2027, 1, 7), date(2027, 2, 19), date(2027, 8, 11)):
        assert open_day not in closed
    assert date(2027, 3, 1) not in closed


def test_holiday_country_closes_public_holidays() -> None:
    closed = load_site(HELSINKI).site.closed_days([2027])
    assert date(2027, 12, 6) in closed  # Finnish Independence Day
    assert date(2027, 1, 1) in closed
    assert date(2027, 12, 24) in closed  # Christmas Eve is a public holiday in Finland
    assert date(2027, 12, 7) not in closed
    assert date(2027, 12, 3) not in closed


def test_extra_holidays_close_and_no_country_means_no_public_holidays() -> None:
    site = parse_site(_small(holidays=["2027-03-15"]))
    assert site.site.closed_days([2027]) == frozenset({date(2027, 3, 15)})
    assert parse_site(_small()).site.closed_days([2027]) == frozenset()


# --- resolved zones -------------------------------------------------------------------------


def _zone_site(
    *,
    kind: str = "office",
    comfort_class: str = "S2",
    co2_outdoor_ppm: float = 420.0,
    site_min: float = 6.0,
    area_m2: float = 40.0,
    **zone: Any,
) -> dict[str, Any]:
    doc = _small(co2_outdoor_ppm=co2_outdoor_ppm, min_outdoor_air_ls_per_person=site_min)
    doc["zone"][0].update(kind=kind, comfort_class=comfort_class, area_m2=area_m2, **zone)
    return doc


# kind, class, site minimum, zone override -> L/s per person. Kind values: ASHRAE 62.1 Table 6-1
# (office 2.5, classroom 5, lecture hall 3.8, corridor 0); class values: EN 16798-1 q_p
# (I 10, II 7, III 4, IV 2.5) and Finnish S1 10, S2 7, S3 6; Finland's site minimum 6.
@pytest.mark.parametrize(
    ("kind", "cls", "site_min", "override", "expected_ls"),
    [
        ("office", "II", 6.0, None, 7.0),  # the class
        ("office", "I", 6.0, None, 10.0),
        ("classroom", "IV", 6.0, None, 6.0),  # the site minimum
        ("classroom", "IV", 0.0, None, 5.0),  # the kind (ASHRAE 62.1)
        ("lecture_hall", "IV", 0.0, None, 3.8),
        ("lecture_hall", "III", 0.0, None, 4.0),
        ("corridor", "IV", 0.0, None, 2.5),
        ("meeting_room", "S3", 0.0, None, 6.0),
        ("office", "S1", 12.0, None, 12.0),
        ("office", "S1", 6.0, 8.0, 8.0),  # the zone's own value wins, even below its class
        ("classroom", "I", 0.0, 1.0, 1.0),
    ],
)
def test_per_person_rate_is_the_largest_of_kind_class_and_site_minimum(
    kind: str, cls: str, site_min: float, override: float | None, expected_ls: float
) -> None:
    zone: dict[str, Any] = {} if override is None else {"rp_ls_per_person": override}
    doc = _zone_site(kind=kind, comfort_class=cls, site_min=site_min, **zone)
    rz = parse_site(doc).resolved[0]
    assert rz.rp_m3s_per_person == pytest.approx(expected_ls / 1000.0)


@pytest.mark.parametrize(
    ("kind", "cls", "override", "expected_ls_m2"),
    [
        ("office", "II", None, 0.7),  # EN II q_B 0.7 > 62.1 office 0.3
        ("office", "S2", None, 0.5),
        ("classroom", "S2", None, 0.6),  # 62.1 classroom 0.6 > S2 0.5
        ("cafeteria", "S3", None, 0.9),
        ("office", "IV", None, 0.3),
        ("office", "I", 0.2, 0.2),
    ],
)
def test_area_rate_is_the_larger_of_kind_and_class_unless_overridden(
    kind: str, cls: str, override: float | None, expected_ls_m2: float
) -> None:
    zone: dict[str, Any] = {} if override is None else {"ra_ls_per_m2": override}
    rz = parse_site(_zone_site(kind=kind, comfort_class=cls, **zone)).resolved[0]
    assert rz.ra_m3s_per_m2 == pytest.approx(expected_ls_m2 / 1000.0)


@pytest.mark.parametrize(
    ("cls", "outdoor", "override", "expected"),
    [
        ("I", 420.0, None, 970.0),  # EN 16798-1: outdoor + 550
        ("II", 400.0, None, 1200.0),  # outdoor + 800
        ("II", 450.0, None, 1250.0),
        ("III", 420.0, None, 1770.0),  # outdoor + 1350
        ("IV", 420.0, None, 1770.0),
        ("S1", 420.0, None, 750.0),  # Finnish classes: absolute
        ("S2", 300.0, None, 950.0),
        ("S2", 500.0, None, 950.0),
        ("S3", 420.0, None, 1200.0),
        ("II", 420.0, 1000.0, 1000.0),  # the zone's own limit wins
        ("S1", 420.0, 900.0, 900.0),
    ],
)
def test_co2_limit_from_class_relative_or_absolute_or_the_zones_own(
    cls: str, outdoor: float, override: float | None, expected: float
) -> None:
    zone: dict[str, Any] = {} if override is None else {"co2_limit_ppm": override}
    doc = _zone_site(comfort_class=cls, co2_outdoor_ppm=outdoor, **zone)
    assert parse_site(doc).resolved[0].co2_limit_ppm == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kind", "area", "given", "expected"),
    [
        ("office", 100.0, None, 10),  # EN 16798-1 default 10 m² per person
        ("open_office", 150.0, None, 10),  # 15 m²
        ("meeting_room", 24.0, None, 12),  # 2 m²
        ("corridor", 10.0, None, 1),  # never fewer than one person
        ("office", 100.0, 3, 3),
        ("office", 100.0, 0, 0),  # a zone may be designed for nobody
    ],
)
def test_design_occupancy_from_kind_density_unless_given(
    kind: str, area: float, given: int | None, expected: int
) -> None:
    zone: dict[str, Any] = {} if given is None else {"design_occupancy": given}
    rz = parse_site(_zone_site(kind=kind, area_m2=area, **zone)).resolved[0]
    assert rz.design_occupancy == expected


def test_zone_overrides_of_airflow_win() -> None:
    doc = _zone_site(design_airflow_m3s=0.5, airflow_max_m3s=0.7, airflow_min_m3s=0.1)
    rz = parse_site(doc).resolved[0]
    assert (rz.design_airflow_m3s, rz.airflow_max_m3s) == (0.5, 0.7)
    rz = parse_site(_zone_site(design_airflow_m3s=0.5)).resolved[0]
    assert rz.airflow_max_m3s == 0.5  # the maximum defaults to the design airflow
    rz = parse_site(_zone_site(design_airflow_m3s=0.05, airflow_min_m3s=0.08)).resolved[0]
    assert rz.airflow_max_m3s == 0.08  # never below the minimum


def _steady_co2_ppm(outdoor: float, n: int, g_m3s: float, q_m3s: float) -> float:
    """Well-mixed steady state: C = C_out + 1e6·n·G/Q."""
    return outdoor + 1e6 * n * g_m3s / q_m3s


def _check_design_airflow(site: Site) -> None:
    for rz in site.resolved:
        where = rz.zone.name
        assert rz.design_airflow_m3s >= rz.vbz_design_m3s / rz.zone.ez * (1 - 1e-12), where
        if rz.design_occupancy == 0:
            continue  # nobody to dilute CO2 for: a zone may need no air at all
        steady = _steady_co2_ppm(
            site.site.co2_outdoor_ppm,
            rz.design_occupancy,
            rz.co2_generation_m3s_per_person,
            rz.design_airflow_m3s,
        )
        assert steady <= rz.co2_limit_ppm - DESIGN_CO2_MARGIN_PPM + 1e-6, (where, steady)
        assert rz.airflow_max_m3s >= rz.design_airflow_m3s


@pytest.mark.parametrize("path", [HELSINKI, SCHOOL], ids=lambda p: p.name)
def test_example_design_airflows_cover_vbz_and_keep_co2_below_the_limit(path: Path) -> None:
    site = load_site(path)
    _check_design_airflow(site)
    # Golden: a meeting room of the Helsinki office, S2 (950 ppm), 10 people at 4.8 mL/s each.
    if path == HELSINKI:
        rz = site.resolved[site.zone_index["meeting-medium-1"]]
        assert rz.vbz_design_m3s == pytest.approx(0.007 * 10 + 0.0005 * 24)
        assert rz.design_airflow_m3s == pytest.approx(1e6 * 10 * 4.8e-6 / (950 - 100 - 420))


@settings(max_examples=150)
@given(
    kind=st.sampled_from(
        [
            "office",
            "open_office",
            "meeting_room",
            "classroom",
            "lecture_hall",
            "cafeteria",
            "corridor",
            "lobby",
        ]
    ),
    cls=st.sampled_from(["I", "II", "III", "IV", "S1", "S2", "S3"]),
    area=st.floats(1.0, 5000.0),
    occupancy=st.one_of(st.none(), st.integers(0, 2000)),
    outdoor=st.floats(350.0, 480.0),
    site_min=st.floats(0.0, 12.0),
    ez=st.floats(0.5, 1.5),
    ra=st.one_of(st.none(), st.floats(0.0, 3.0)),
)
def test_design_airflow_covers_vbz_and_keeps_co2_below_the_class_limit(
    *,
    kind: str,
    cls: str,
    area: float,
    occupancy: int | None,
    outdoor: float,
    site_min: float,
    ez: float,
    ra: float | None,
) -> None:
    zone: dict[str, Any] = {"ez": ez}
    if occupancy is not None:
        zone["design_occupancy"] = occupancy
    if ra is not None:
        zone["ra_ls_per_m2"] = ra
    doc = _zone_site(
        kind=kind,
        comfort_class=cls,
        area_m2=area,
        co2_outdoor_ppm=outdoor,
        site_min=site_min,
        **zone,
    )
    _check_design_airflow(parse_site(doc))


@pytest.mark.parametrize("limit", [600.0, 650.0])
def test_design_airflow_keeps_co2_below_an_overridden_limit(limit: float) -> None:
    # 10 people in 24 m² (S2: 7 L/s·p + 0.5 L/s·m², Vbz = 82 L/s) asked to stay below 600 ppm
    # with 420 ppm outdoors: 80 ppm of headroom needs 10·4.8 mL/s / 80 ppm = 0.6 m³/s.
    doc = _zone_site(kind="meeting_room", area_m2=24.0, design_occupancy=10, co2_limit_ppm=limit)
    _check_design_airflow(parse_site(doc))


# --- robustness -----------------------------------------------------------------------------


def _paths(node: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path in a document, containers included."""
    out: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


_DOC_PATHS = _paths(_HELSINKI_RAW)

json_ish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "office", "TK01", "S2", "Europe", "Mon-Fri 07:00-18:00", "2027-01-01"])
    | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _mutated(doc: dict[str, Any], path: tuple[str | int, ...], op: str, value: object) -> None:
    *parents, last = path
    node: Any = doc
    for part in parents:
        node = node[part]
    if op == "replace":
        node[last] = value
    elif op == "delete":
        del node[last]
    elif isinstance(node, dict):  # "add" a key next to this one
        node[f"{last}_x"] = value
    else:
        node.append(value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(_DOC_PATHS),
            st.sampled_from(["replace", "replace", "delete", "add"]),
            json_ish,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_parse_site_raises_only_config_error_on_mutated_documents(
    edits: list[tuple[tuple[str | int, ...], str, object]],
) -> None:
    doc = copy.deepcopy(_HELSINKI_RAW)
    for path, op, value in edits:
        try:
            _mutated(doc, path, op, value)
        except (KeyError, IndexError, TypeError, AttributeError):
            assume(False)  # an earlier edit removed this path or replaced its container
    try:
        site = parse_site(doc, source="mutant.toml")
    except ConfigError as exc:
        problems = exc.problems
    else:
        # Whatever validates must also resolve and serialise.
        assert len(site.resolved) == len(site.zone)
        json.dumps(site.model_dump(mode="json"))
        return
    assert problems
    for p in problems:
        assert p.source == "mutant.toml"
        assert p.message


def test_nan_in_a_numeric_field_is_a_config_error() -> None:
    doc = _small()
    doc["zone"][0]["area_m2"] = math.nan
    (problem,) = _problems(doc)
    assert problem.loc == 'zone[0].area_m2 (zone "room")'
