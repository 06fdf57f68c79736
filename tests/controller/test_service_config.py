"""Tests for controller.service_config: the controller file, its paths, problems; `ilma check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.broker import Secret
from controller.cli import main
from controller.service_config import describe_file, load_controller
from sensors.config import ConfigError, ConfigProblem

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "controllers" / "helsinki.toml"
OFFICE = REPO / "config" / "sites" / "helsinki-office.toml"
SCHOOL = REPO / "config" / "sites" / "school.toml"

BAD_SITE = """\
[site]
name = "broken"
latitude_deg = 95.0
longitude_deg = 24.9
timezone = "Europe/Helsinki"

[[ahu]]
name = "TK01"
design_airflow_m3s = 2.0

[[zone]]
name = "a"
kind = "office"
ahu = "TK01"
area_m2 = -3
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def site_copy(directory: Path, file: str, name: str = "helsinki-office") -> Path:
    """A copy of the Helsinki office's site file, with its site named `name`."""
    text = OFFICE.read_text(encoding="utf-8").replace(
        'name = "helsinki-office"', f'name = "{name}"'
    )
    return write(directory / file, text)


def problems_of(path: Path) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        load_controller(path)
    return info.value.problems


def locs(problems: tuple[ConfigProblem, ...], source: Path) -> set[str]:
    return {p.loc for p in problems if p.source == str(source)}


# --- the example -------------------------------------------------------------------------------


def test_the_example_loads_with_its_sites() -> None:
    cfg = load_controller(EXAMPLE)
    assert cfg.path == EXAMPLE
    assert cfg.name == "ctl-a"
    assert cfg.client_id() == "ilma-ctl-ctl-a"
    assert set(cfg.sites) == {"helsinki-office", "school"}
    assert len(cfg.sites["helsinki-office"].zone) == 17
    assert len(cfg.sites["school"].zone) == 12
    ctl = cfg.file.controller
    assert ctl.sites == (OFFICE.resolve(), SCHOOL.resolve())
    assert (ctl.period_s, ctl.lease_periods, ctl.share_group) == (60.0, 3.0, None)
    assert (cfg.file.broker.host, cfg.file.broker.port) == ("127.0.0.1", 1883)
    assert cfg.file.broker.password == Secret(env="ILMA_MQTT_PASSWORD")
    h = cfg.file.historian
    assert h.influxdb is None
    assert h.queue_max == 200_000
    assert h.sqlite.path == Path("/var/lib/ilma/history.sqlite")  # absolute: left as it is
    assert h.sqlite.retention_days == 90
    assert cfg.file.metrics.port == 9109
    assert cfg.file.log.format == "json"


def test_the_example_loads_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert set(load_controller(Path(EXAMPLE)).sites) == {"helsinki-office", "school"}


# --- relative paths ----------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_copy(tmp_path / "sites", "office.toml")
    write(
        tmp_path / "controllers" / "ctl.toml",
        """\
[controller]
name = "ctl-b"
sites = ["../sites/office.toml"]

[broker]
tls = true
ca_file = "certs/ca.pem"
cert_file = "certs/me.pem"
key_file = "/etc/ilma/me.key"
password = { file = "secrets/mqtt" }

[historian]
sqlite = { path = "data/history.sqlite" }

[historian.influxdb]
url = "https://db.example.org:8086"
token = { file = "../secrets/influx" }
""",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # A relative path to the controller file itself works as well.
    cfg = load_controller(Path("..") / "controllers" / "ctl.toml")
    here = (tmp_path / "controllers").resolve()
    assert cfg.file.controller.sites == ((tmp_path / "sites" / "office.toml").resolve(),)
    b = cfg.file.broker
    assert b.ca_file == here / "certs" / "ca.pem"
    assert b.cert_file == here / "certs" / "me.pem"
    assert b.key_file == Path("/etc/ilma/me.key")
    assert b.password == Secret(file=here / "secrets" / "mqtt")
    h = cfg.file.historian
    assert h.sqlite.path == here / "data" / "history.sqlite"
    assert h.influxdb is not None
    assert h.influxdb.token == Secret(file=(tmp_path / "secrets" / "influx").resolve())
    assert cfg.path == Path("..") / "controllers" / "ctl.toml"
    assert set(cfg.sites) == {"helsinki-office"}


def test_a_secret_from_the_environment_is_not_a_path(tmp_path: Path) -> None:
    site_copy(tmp_path, "office.toml")
    cfg = load_controller(
        write(
            tmp_path / "ctl.toml",
            '[controller]\nname = "c"\nsites = ["office.toml"]\n\n'
            '[historian.influxdb]\nurl = "http://127.0.0.1:8428"\n'
            'token = { env = "ILMA_INFLUX_TOKEN" }\n',
        )
    )
    assert cfg.file.historian.influxdb is not None
    assert cfg.file.historian.influxdb.token == Secret(env="ILMA_INFLUX_TOKEN")


# --- problems ----------------------------------------------------------------------------------

GOOD_SITE_LINE = 'sites = ["office.toml"]'


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\nperiod_s = 0', "controller.period_s",
         "greater than 0"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\nperiod_s = -60', "controller.period_s",
         "greater than 0"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\nperiod_s = "fast"', "controller.period_s",
         "number"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\nperiod_s = inf', "controller.period_s",
         "finite"),
        ('[controller]\nname = "c"', "controller.sites", "required key is missing"),
        ('[controller]\nname = "c"\nsites = []', "controller.sites", "at least 1"),
        (f'[controller]\n{GOOD_SITE_LINE}', "controller.name", "required key is missing"),
        (f'[controller]\nname = "c 1"\n{GOOD_SITE_LINE}', "controller.name",
         "expected a name"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\nlease_periods = 0.5',
         "controller.lease_periods", "greater than or equal to 1"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\n[historian.influxdb]\nurl = "influx:8086"',
         "historian.influxdb.url", "should match pattern"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\n[historian.influxdb]\nurl = "ftp://db"',
         "historian.influxdb.url", "should match pattern"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\n[historian]\nqueue_max = 10',
         "historian.queue_max", "greater than or equal to 100"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\nperiod = 60', "controller.period",
         "unknown key"),
        # A check of the whole file: its message names the key.
        ('[controller]\nname = "c"\nsites = ["office.toml", "office.toml"]', "",
         "listed twice in controller.sites"),
        (f'[controller]\nname = "c"\n{GOOD_SITE_LINE}\n[broker]\npassword = {{}}',
         "broker.password", "exactly one of"),
    ],
)  # fmt: skip
def test_a_bad_controller_file_names_the_file_and_key(
    tmp_path: Path, body: str, loc: str, says: str
) -> None:
    site_copy(tmp_path, "office.toml")
    path = write(tmp_path / "ctl.toml", body + "\n")
    problems = problems_of(path)
    assert len(problems) == 1, problems
    (p,) = problems
    assert (p.source, p.loc) == (str(path), loc)
    assert says in p.message
    assert str(p).startswith(f"{path}: {loc}: " if loc else f"{path}: ")


def test_every_problem_of_the_controller_file_at_once(tmp_path: Path) -> None:
    site_copy(tmp_path, "office.toml")
    path = write(
        tmp_path / "ctl.toml",
        '[controller]\nname = "bad name"\nsites = ["office.toml"]\nperiod_s = 0\n'
        "lease_periods = 1000\n\n"
        '[historian.influxdb]\nurl = "db:8086"\nbatch_size = 0\n\n[metrics]\nport = 70000\n',
    )
    assert locs(problems_of(path), path) == {
        "controller.name",
        "controller.period_s",
        "controller.lease_periods",
        "historian.influxdb.url",
        "historian.influxdb.batch_size",
        "metrics.port",
    }


def test_a_site_file_with_problems_gives_its_own_problems(tmp_path: Path) -> None:
    bad = write(tmp_path / "sites" / "bad.toml", BAD_SITE)
    site_copy(tmp_path / "sites", "office.toml")
    path = write(
        tmp_path / "ctl.toml",
        '[controller]\nname = "c"\nsites = ["sites/office.toml", "sites/bad.toml"]\n',
    )
    problems = problems_of(path)
    head = [p for p in problems if p.source == str(path)]
    assert len(head) == 1
    assert head[0].loc == "controller.sites[1]"
    assert str(bad.resolve()) in head[0].message
    in_site = [p for p in problems if p.source == str(bad.resolve())]
    assert len(in_site) >= 2  # latitude and area, at least: every problem of the site file
    site_locs = {p.loc.split(" ")[0] for p in in_site}  # 'zone[0].area_m2 (zone "a")'
    assert {"site.latitude_deg", "zone[0].area_m2"} <= site_locs
    assert len(problems) == len(head) + len(in_site)


def test_a_missing_site_file_is_a_problem_of_its_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "ctl.toml", '[controller]\nname = "c"\nsites = ["nowhere.toml"]\n')
    problems = problems_of(path)
    assert problems[0] == ConfigProblem(
        str(path), "controller.sites[0]", f"{(tmp_path / 'nowhere.toml').resolve()} is not usable"
    )
    assert problems[1].source == str((tmp_path / "nowhere.toml").resolve())
    assert "cannot read" in problems[1].message


def test_two_site_files_of_the_same_site_name(tmp_path: Path) -> None:
    site_copy(tmp_path, "a.toml")
    site_copy(tmp_path, "b.toml")
    site_copy(tmp_path, "c.toml", name="another")
    path = write(
        tmp_path / "ctl.toml", '[controller]\nname = "c"\nsites = ["a.toml", "c.toml", "b.toml"]\n'
    )
    assert problems_of(path) == (
        ConfigProblem(str(path), "controller.sites[2]", "a second site named 'helsinki-office'"),
    )


def test_every_problem_of_the_sites_at_once(tmp_path: Path) -> None:
    write(tmp_path / "bad.toml", BAD_SITE)
    site_copy(tmp_path, "a.toml")
    site_copy(tmp_path, "b.toml")
    path = write(
        tmp_path / "ctl.toml",
        '[controller]\nname = "c"\nsites = ["bad.toml", "a.toml", "gone.toml", "b.toml"]\n',
    )
    assert locs(problems_of(path), path) == {
        "controller.sites[0]",
        "controller.sites[2]",
        "controller.sites[3]",
    }


def test_problems_of_the_file_and_of_its_sites_come_together(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", BAD_SITE)
    path = write(tmp_path / "ctl.toml", '[controller]\nname = "c"\nsites = ["bad.toml"]\n'
                 "period_s = 0\n")  # fmt: skip
    problems = problems_of(path)
    assert "controller.period_s" in locs(problems, path)
    assert locs(problems, bad.resolve())  # fails: the site file's problems are missing


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "ctl.toml", "[controller\nname = 'c'\n")
    (p,) = problems_of(path)
    assert p.source == str(path)
    assert "not valid TOML" in p.message


# --- `ilma check` ------------------------------------------------------------------------------


def test_describe_file_of_the_example() -> None:
    assert describe_file(EXAMPLE) == (
        "controller 'ctl-a': 2 sites, 29 zones, period 60 s, history in SQLite at "
        "/var/lib/ilma/history.sqlite"
    )


def test_describe_file_with_influx_and_a_share_group(tmp_path: Path) -> None:
    site_copy(tmp_path, "office.toml")
    path = write(
        tmp_path / "ctl.toml",
        '[controller]\nname = "c"\nsites = ["office.toml"]\nperiod_s = 30\nshare_group = "ilma"\n'
        '[historian.influxdb]\nurl = "http://127.0.0.1:8428"\n',
    )
    assert describe_file(path) == (
        "controller 'c': 1 sites, 17 zones, period 30 s, history in InfluxDB at "
        "http://127.0.0.1:8428, sharing sites in group 'ilma'"
    )


def test_ilma_check_describes_a_controller_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == f"ok   {EXAMPLE}: {describe_file(EXAMPLE)}\n"
    assert err == ""


def test_ilma_check_reports_every_problem_of_a_bad_controller_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "bad.toml", BAD_SITE)
    path = write(
        tmp_path / "ctl.toml", '[controller]\nname = "c"\nsites = ["bad.toml", "gone.toml"]\n'
    )
    assert main(["check", str(EXAMPLE), str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"ok   {EXAMPLE}: ")
    assert err.startswith(f"FAIL {path}: ")
    assert f"{path}: controller.sites[0]: " in err
    assert f"{path}: controller.sites[1]: " in err
    assert f"{(tmp_path / 'bad.toml').resolve()}: site.latitude_deg: " in err
