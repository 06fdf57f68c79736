"""Tests for controller.schema (the committed JSON Schema is current) and `ilma check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main
from controller.schema import SCHEMAS, schema_text, write_schemas
from controller.site import ConfigError, Site, load_site

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "config" / "schema"
HELSINKI = REPO / "config" / "sites" / "helsinki-office.toml"
SCHOOL = REPO / "config" / "sites" / "school.toml"

BAD = """\
[site]
name = "bad site"
latitude_deg = 95.0
longitude_deg = 24.9
timezone = "Europe/Helsinki"

[[ahu]]
name = "TK01"
design_airflow_m3s = 2.0

[[zone]]
name = "a"
kind = "office"
ahu = "TK02"
area_m2 = -3
"""


def test_committed_site_schema_is_current() -> None:
    committed = (SCHEMA_DIR / "site.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(Site), (
        "config/schema/site.schema.json is stale: run `python -m controller.schema config/schema`"
    )


def test_every_generated_schema_is_committed() -> None:
    assert set(SCHEMAS) == {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    for name, model in SCHEMAS.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == schema_text(model)


def test_schema_describes_the_site_file() -> None:
    schema = json.loads(schema_text(Site))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {"site", "energy", "zone_defaults", "ahu", "zone"}
    assert set(schema["required"]) == {"site", "ahu", "zone"}
    zone = schema["$defs"]["Zone"]
    assert zone["additionalProperties"] is False
    assert zone["properties"]["area_m2"]["exclusiveMinimum"] == 0
    hours = schema["$defs"]["SiteInfo"]["properties"]["occupied_hours"]["items"]
    assert hours["type"] == "string"
    assert hours["pattern"].startswith("^")


def test_write_schemas_writes_what_schema_text_gives(tmp_path: Path) -> None:
    (written,) = write_schemas(tmp_path / "out")
    assert written == tmp_path / "out" / "site.schema.json"
    assert written.read_text(encoding="utf-8") == schema_text(Site)


def test_check_reports_ok_for_the_good_and_every_problem_of_the_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_site(bad)
    problems = info.value.problems
    assert len(problems) >= 4  # name, latitude, unknown AHU, area
    assert main(["check", str(HELSINKI), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"ok   {HELSINKI}:" in out
    assert "'helsinki-office': 3 AHUs, 17 zones" in out
    assert str(bad) not in out
    assert f"FAIL {bad}" in err
    for p in problems:
        assert str(p) in err
    for loc in ("site.name", "site.latitude_deg", "zone[0].ahu", "zone[0].area_m2"):
        assert f"{bad}: {loc}" in err


def test_check_returns_zero_when_every_file_is_good(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(HELSINKI), str(SCHOOL)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("ok   ") == 2
    assert f"ok   {SCHOOL}: site 'school': 2 AHUs, 12 zones" in out
    assert "zone " not in out  # no table without -v


def test_check_verbose_prints_the_zone_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-v", str(HELSINKI)]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"ok   {HELSINKI}")
    header = lines[1]
    for column in ("zone", "kind", "class", "people", "Rp L/s·p", "design L/s", "CO2 max"):
        assert column in header
    site = load_site(HELSINKI)
    rows = lines[2:]
    assert len(rows) == len(site.zone)
    for row, rz in zip(rows, site.resolved, strict=True):
        cells = row.split()
        assert cells[0] == rz.zone.name
        assert cells[1] == rz.zone.kind.value
        assert cells[2] == rz.zone.comfort_class.value
        assert int(cells[3]) == rz.design_occupancy
        assert float(cells[6]) == round(rz.design_airflow_m3s * 1000.0)
        assert float(cells[7]) == round(rz.co2_limit_ppm)
    hall = next(r for r in rows if r.split()[0] == "lecture-hall")
    assert hall.split()[3:] == ["150", "7.0", "0.50", "1465", "950"]


def test_check_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["check", str(missing)]) == 1
    _, err = capsys.readouterr()
    assert f"FAIL {missing}" in err
    assert "cannot read" in err


def test_check_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert "files" in capsys.readouterr().err
