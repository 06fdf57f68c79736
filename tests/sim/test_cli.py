"""`ilma-sim run`: the outputs an engineer gets, and clear errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sim.cli import main

SITE = Path(__file__).parents[2] / "config" / "sites" / "helsinki-office.toml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    code = main(
        ["run", str(SITE), "--start", "2027-03-02", "--days", "1", "--warmup-days", "1",
         "--controllers", "ilma,schedule", "--seed", "3", "--out", str(out), "--quiet",
         "--zones", "lecture-hall,office-e1"]
    )  # fmt: skip
    assert code == 0
    return out


def test_summary_json_has_every_kpi_per_controller(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"ilma", "schedule"}
    for kpis in summary.values():
        for key in ("energy_kwh_m2", "thermal_discomfort_kh", "iaq_discomfort_ppmh",
                    "fan_kwh_m2", "heating_kwh_m2", "cooling_kwh_m2", "comfort_share",
                    "ventilation_shortfall_h"):  # fmt: skip
            assert isinstance(kpis[key], float)
    assert summary["ilma"]["energy_kwh_m2"] > 0.0


def test_time_series_and_plot_are_written(run_dir: Path) -> None:
    with (run_dir / "zones.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["zone"] for r in rows} == {"lecture-hall", "office-e1"}
    assert {r["controller"] for r in rows} == {"ilma", "schedule"}
    assert len(rows) == 96 * 2 * 2  # 15 min samples × controllers × zones
    assert all(r["mode"] in {"occupied", "occupied_standby", "unoccupied", "setback", "warm_up",
                             "cool_down", "setup", "freeze_protection"} for r in rows)  # fmt: skip
    with (run_dir / "energy.csv").open() as f:
        energy = list(csv.DictReader(f))
    assert float(energy[-1]["total_kwh_m2"]) > 0.0
    png = (run_dir / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 20_000
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["seeds"] == [3]
    assert meta["zone_steps"] > 0


def test_the_table_is_printed(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", str(SITE), "--start", "2027-03-02", "--days", "1", "--warmup-days", "0",
          "--controllers", "schedule", "--out", str(run_dir / "again"), "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert "HVAC energy, kWh/m²" in out
    assert "energy vs schedule" in out
    assert "summary.json" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zones", "no-such-room"], "unknown zone"),
        (["--dt", "7"], "--dt must divide a day"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["run", str(SITE), "--start", "2027-03-02", "--out", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_bad_site_file_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SITE.read_text().replace("area_m2 = 320", "area_m2 = -320"))
    assert main(["run", str(bad), "--start", "2027-03-02", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err
    assert "zone[0].area_m2" in err


def test_an_unknown_controller_is_an_argument_error() -> None:
    with pytest.raises(SystemExit):
        main(["run", str(SITE), "--start", "2027-03-02", "--out", "x", "--controllers", "magic"])
