"""Tests for edge_agent.config: the gateway file, its paths, secrets and every cross-check."""

from __future__ import annotations

import ast
import shutil
import textwrap
from pathlib import Path

import pytest

from controller.broker import Secret
from controller.cli import main as ilma
from edge_agent.config import BusKind, FallbackKind, GatewayConfig, describe_file, load_gateway
from sensors.config import ConfigError, ConfigProblem

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "gateways" / "helsinki-office-east.toml"
SITE = REPO / "config" / "sites" / "helsinki-office.toml"
DEVICES = REPO / "config" / "devices"

HEAD = f"""
[gateway]
name = "gw"
site = "{SITE}"
profiles = "{DEVICES}"
cycle_s = 5.0

[[bus]]
name = "bms"
kind = "tcp"
host = "127.0.0.1"
port = 1502

[[bus]]
name = "rs485"
kind = "rtu"
device = "/dev/ttyUSB0"

[[device]]
name = "vav-1"
bus = "bms"
device_id = 1
profile = "vav-ahu"

[[device]]
name = "rs-1"
bus = "rs485"
device_id = 11
profile = "room-sensor"
"""
ZONE = """
[[zone]]
name = "office-e1"
read = { co2_ppm = "rs-1/co2_ppm", t_zone_c = "rs-1/t_zone_c" }
write = { airflow_m3s = "vav-1/airflow_setpoint_m3s", t_heat_c = "vav-1/t_heat_setpoint_c" }
"""
VALID = HEAD + ZONE


def _write(tmp_path: Path, text: str, name: str = "gw.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(tmp_path: Path, text: str) -> tuple[Path, list[ConfigProblem]]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_gateway(path)
    problems = list(info.value.problems)
    assert all(p.source == str(path) for p in problems), problems
    # The message a person reads names the file and each key path.
    for p in problems:
        assert f"{path}: {p.loc}: " in str(info.value)
    return path, problems


def _only(tmp_path: Path, text: str, loc: str, *words: str) -> ConfigProblem:
    """The one problem of this file: at `loc`, its message mentioning every word."""
    _, problems = _problems(tmp_path, text)
    assert [p.loc for p in problems] == [loc], problems
    for word in words:
        assert word in problems[0].message, (word, problems[0].message)
    return problems[0]


# --- the example and a valid file -------------------------------------------------------------


def test_the_example_gateway_loads() -> None:
    cfg = load_gateway(EXAMPLE)
    assert isinstance(cfg, GatewayConfig)
    assert cfg.name == "east-1"
    assert cfg.path == EXAMPLE
    assert cfg.site.site.name == "helsinki-office"
    assert cfg.file.gateway.site == SITE.resolve()
    assert cfg.file.gateway.profiles == DEVICES.resolve()
    assert set(cfg.profiles) == {"people-counter", "room-sensor", "vav-ahu"}
    assert [b.kind for b in cfg.file.bus] == [BusKind.TCP, BusKind.RTU]
    assert [d.name for d in cfg.file.device] == ["rs-e1", "rs-m1", "pc-m1", "vav-e1", "vav-m1"]
    assert cfg.device("pc-m1").request.timeout_s == 0.5
    assert [z.name for z in cfg.file.zone] == ["office-e1", "meeting-medium-1", "meeting-small-1"]
    assert [z.fallback for z in cfg.file.zone] == [
        FallbackKind.LOCAL,
        FallbackKind.LOCAL,
        FallbackKind.RELINQUISH,
    ]
    assert cfg.file.zone[0].write.airflow_m3s == "vav-e1/airflow_setpoint_m3s"
    (sensor,) = cfg.file.mqtt_sensor
    assert sensor.zone == "meeting-small-1"
    assert sensor.time_field == "ts"
    assert cfg.file.broker.password == Secret(env="ILMA_MQTT_PASSWORD")
    assert cfg.client_id() == "ilma-gw-east-1"
    # Absolute paths stay as written.
    assert cfg.file.buffer.path == Path("/var/lib/ilma/east-1-buffer.sqlite")
    assert cfg.file.metrics.port == 9108
    assert describe_file(EXAMPLE) == (
        "gateway 'east-1' of site 'helsinki-office': 2 buses, 5 devices, 3 zones, "
        "8 writable setpoints, 1 MQTT sensors"
    )


def test_a_minimal_file_takes_the_defaults(tmp_path: Path) -> None:
    cfg = load_gateway(_write(tmp_path, VALID))
    f = cfg.file
    assert f.gateway.cycle_s == 5.0
    assert f.broker.host == "127.0.0.1"
    assert f.broker.port == 1883
    assert f.fallback.after_s == 300.0
    assert f.fallback.max_clock_skew_s == 30.0
    assert f.writes.verify is True
    assert f.metrics.port is None
    assert cfg.client_id() == "ilma-gw-gw"


# --- paths and secrets ------------------------------------------------------------------------


def _relative_tree(tmp_path: Path, gateway: str) -> Path:
    """config/{sites,devices,gateways} under tmp_path, as shipped; the gateway file given."""
    root = tmp_path / "config"
    (root / "sites").mkdir(parents=True)
    shutil.copy(SITE, root / "sites" / "office.toml")
    shutil.copytree(DEVICES, root / "devices")
    (root / "gateways").mkdir()
    path = root / "gateways" / "gw.toml"
    path.write_text(textwrap.dedent(gateway), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return path


RELATIVE = """
[gateway]
name = "gw"
site = "../sites/office.toml"
profiles = "../devices"

[broker]
tls = true
ca_file = "tls/ca.pem"
cert_file = "/etc/ilma/client.pem"
password = { file = "secrets/mqtt.pass" }

[[bus]]
name = "bms"
kind = "tcp"
host = "127.0.0.1"
port = 1502

[[device]]
name = "vav-1"
bus = "bms"
device_id = 1
profile = "vav-ahu"

[[zone]]
name = "office-e1"
write = { airflow_m3s = "vav-1/airflow_setpoint_m3s" }

[buffer]
path = "data/buffer.sqlite"

[audit]
path = "../audit.sqlite"
"""


def test_relative_paths_are_relative_to_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _relative_tree(tmp_path, RELATIVE)
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_gateway(path)
    here = path.parent.resolve()
    f = cfg.file
    assert f.gateway.site == here.parent / "sites" / "office.toml"
    assert f.gateway.profiles == here.parent / "devices"
    assert f.broker.ca_file == here / "tls" / "ca.pem"
    assert f.broker.cert_file == Path("/etc/ilma/client.pem")
    assert f.broker.password == Secret(file=here / "secrets" / "mqtt.pass")
    assert f.buffer.path == here / "data" / "buffer.sqlite"
    assert f.audit.path == here.parent / "audit.sqlite"
    assert cfg.site.site.name == "helsinki-office"
    assert "vav-ahu" in cfg.profiles


def test_the_default_profiles_directory_is_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _relative_tree(tmp_path, RELATIVE.replace('profiles = "../devices"\n', ""))
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_gateway(path)
    assert cfg.file.gateway.profiles == path.parent.resolve().parent / "devices"


def test_a_secret_from_a_file_relative_to_the_gateway_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _relative_tree(tmp_path, RELATIVE)
    secret = path.parent / "secrets" / "mqtt.pass"
    secret.parent.mkdir()
    secret.write_text("s3cret pass\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "elsewhere")
    password = load_gateway(path).file.broker.password
    assert password is not None
    assert password.read() == "s3cret pass"  # the file's trailing newline is not the secret


def test_a_missing_secret_file_names_the_file(tmp_path: Path) -> None:
    path = _relative_tree(tmp_path, RELATIVE)
    password = load_gateway(path).file.broker.password
    assert password is not None
    with pytest.raises(ConfigError) as info:
        password.read()
    (problem,) = info.value.problems
    assert problem.source == str(path.parent.resolve() / "secrets" / "mqtt.pass")
    assert "cannot read secret" in problem.message
    assert "mqtt.pass" in str(info.value)


def test_a_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = VALID + '\n[broker]\nusername = "gw"\npassword = { env = "ILMA_TEST_MQTT_PW" }\n'
    password = load_gateway(_write(tmp_path, text)).file.broker.password
    assert password is not None
    monkeypatch.setenv("ILMA_TEST_MQTT_PW", "from-env\n")
    assert password.read() == "from-env\n"  # taken as it is: no file, no newline convention
    monkeypatch.delenv("ILMA_TEST_MQTT_PW")
    with pytest.raises(ConfigError) as info:
        password.read()
    assert info.value.problems == (ConfigProblem("environment", "ILMA_TEST_MQTT_PW", "is not set"),)
    assert "ILMA_TEST_MQTT_PW" in str(info.value)


@pytest.mark.parametrize(
    "password",
    [
        '{ env = "A", file = "/etc/p" }',
        "{}",
        '"inline-password"',  # never in the file itself
    ],
)
def test_a_secret_has_exactly_one_source_and_is_never_inline(tmp_path: Path, password: str) -> None:
    _, problems = _problems(tmp_path, VALID + f"\n[broker]\npassword = {password}\n")
    assert problems
    assert all(p.loc.startswith("broker.password") for p in problems), problems


# --- field validation -------------------------------------------------------------------------


def test_field_problems_name_the_key_path_all_at_once(tmp_path: Path) -> None:
    text = (
        VALID.replace("cycle_s = 5.0", "cycle_s = 0\ncylce_s = 5").replace(
            "port = 1502", "port = 70000"
        )
        + '\n[[mqtt_sensor]]\ntopic = "sensors/+/counts"\nzone = "office-e1"\nfields = {}\n'
    )
    _, problems = _problems(tmp_path, text)
    by_loc = {p.loc: p.message for p in problems}
    assert set(by_loc) == {
        "gateway.cycle_s",
        "gateway.cylce_s",
        "bus[0].port",
        "mqtt_sensor[0].topic",
    }
    assert "greater than 0" in by_loc["gateway.cycle_s"]
    assert "unknown key" in by_loc["gateway.cylce_s"]
    assert "wildcards" in by_loc["mqtt_sensor[0].topic"]


def test_a_bus_needs_its_address(tmp_path: Path) -> None:
    text = VALID.replace('device = "/dev/ttyUSB0"', "")
    problem = _only(tmp_path, text, "bus[1]", "an rtu bus needs `device`")
    assert problem.source.endswith("gw.toml")


def test_an_unusable_site_file_is_named(tmp_path: Path) -> None:
    text = VALID.replace(str(SITE), str(tmp_path / "no-site.toml"))
    _, problems = _problems_any_source(tmp_path, text)
    assert problems[0].loc == "gateway.site"
    assert "no-site.toml" in problems[0].message
    assert any(p.source == str(tmp_path / "no-site.toml") for p in problems[1:])


def test_an_unusable_profile_directory_is_named(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(DEVICES, profiles)
    bad = profiles / "room-sensor.toml"
    bad.write_text(bad.read_text("utf-8").replace("address = 1", "address = 0"), "utf-8")
    text = VALID.replace(str(DEVICES), str(profiles))
    _, problems = _problems_any_source(tmp_path, text)
    assert problems[0].loc == "gateway.profiles"
    assert any(p.source == str(bad) and p.loc.startswith("point.") for p in problems[1:])


def _problems_any_source(tmp_path: Path, text: str) -> tuple[Path, list[ConfigProblem]]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_gateway(path)
    problems = list(info.value.problems)
    assert problems[0].source == str(path)
    return path, problems


# --- cross-checks: each names the file and the key path ---------------------------------------


def test_duplicate_bus_names(tmp_path: Path) -> None:
    text = VALID + '\n[[bus]]\nname = "bms"\nkind = "tcp"\nhost = "10.0.0.2"\nport = 502\n'
    _only(tmp_path, text, "bus[2].name", "duplicate name 'bms'", "bus[0]")


def test_duplicate_device_names(tmp_path: Path) -> None:
    text = VALID + '\n[[device]]\nname = "vav-1"\nbus = "bms"\ndevice_id = 2\nprofile = "vav-ahu"\n'
    _only(tmp_path, text, "device[2].name", "duplicate name 'vav-1'", "device[0]")


def test_duplicate_zone_names(tmp_path: Path) -> None:
    _only(tmp_path, VALID + ZONE, "zone[1].name", "duplicate name 'office-e1'", "zone[0]")


def test_a_device_on_an_unknown_bus(tmp_path: Path) -> None:
    text = VALID + '\n[[device]]\nname = "x"\nbus = "modbus9"\ndevice_id = 3\nprofile = "vav-ahu"\n'
    _only(tmp_path, text, "device[2].bus", "no [[bus]] named 'modbus9'", "bms", "rs485")


def test_a_device_with_an_unknown_profile(tmp_path: Path) -> None:
    text = VALID + '\n[[device]]\nname = "x"\nbus = "bms"\ndevice_id = 3\nprofile = "vav-xyz"\n'
    _only(tmp_path, text, "device[2].profile", "no device profile named 'vav-xyz'", "vav-ahu")


def test_a_zone_reading_an_unknown_device(tmp_path: Path) -> None:
    text = VALID.replace('co2_ppm = "rs-1/co2_ppm"', 'co2_ppm = "rs-9/co2_ppm"')
    _only(tmp_path, text, "zone[0].read.co2_ppm", "no [[device]] named 'rs-9'")


def test_a_zone_reading_an_unknown_point(tmp_path: Path) -> None:
    text = VALID.replace('co2_ppm = "rs-1/co2_ppm"', 'co2_ppm = "rs-1/co2"')
    _only(tmp_path, text, "zone[0].read.co2_ppm", "has no point 'co2'", "room-sensor", "co2_ppm")


def test_a_zone_writing_an_unknown_point(tmp_path: Path) -> None:
    text = VALID.replace('t_heat_c = "vav-1/t_heat_setpoint_c"', 't_heat_c = "vav-1/t_heat"')
    _only(tmp_path, text, "zone[0].write.t_heat_c", "has no point 't_heat'")


def test_a_zone_writing_a_read_only_point(tmp_path: Path) -> None:
    text = VALID.replace('t_heat_c = "vav-1/t_heat_setpoint_c"', 't_heat_c = "vav-1/t_supply_c"')
    _only(tmp_path, text, "zone[0].write.t_heat_c", "'vav-1/t_supply_c' is not writable")


def test_a_zone_that_is_not_in_the_site(tmp_path: Path) -> None:
    text = VALID.replace('name = "office-e1"', 'name = "attic"')
    _only(tmp_path, text, "zone[0].name", "has no zone 'attic'", "helsinki-office")


def test_a_local_fallback_needs_an_airflow_write(tmp_path: Path) -> None:
    text = VALID.replace('airflow_m3s = "vav-1/airflow_setpoint_m3s", ', "")
    _only(tmp_path, text, "zone[0].fallback", "writable airflow point", "relinquish")
    # A zone without an airflow point is fine with the relinquish fallback.
    relinquish = text.replace(
        'name = "office-e1"\n', 'name = "office-e1"\nfallback = "relinquish"\n'
    )
    cfg = load_gateway(_write(tmp_path, relinquish, "ok.toml"))
    assert cfg.file.zone[0].write.airflow_m3s is None


def test_an_mqtt_sensor_for_an_unknown_zone(tmp_path: Path) -> None:
    text = VALID + (
        '\n[[mqtt_sensor]]\ntopic = "sensors/door/counts"\nzone = "office-e2"\n'
        'fields = { people_in = "in" }\n'
    )
    # office-e2 is in the site, not in this gateway.
    _only(tmp_path, text, "mqtt_sensor[0].zone", "no [[zone]] named 'office-e2'")


def test_a_quirk_override_that_leaves_a_point_unreadable(tmp_path: Path) -> None:
    text = VALID.replace(
        'device_id = 1\nprofile = "vav-ahu"',
        'device_id = 1\nprofile = "vav-ahu"\nrequest = { max_registers = 1 }',
    )
    _, problems = _problems(tmp_path, text)
    assert {p.loc for p in problems} == {"device[0].request"}
    # Both float points of the VAV take two registers.
    assert len(problems) == 2
    messages = " ".join(p.message for p in problems)
    assert "airflow_setpoint_m3s" in messages
    assert "max_registers is 1" in messages
    assert "could never be read" in messages
    # A harmless override is no problem.
    ok = VALID.replace(
        'device_id = 1\nprofile = "vav-ahu"',
        'device_id = 1\nprofile = "vav-ahu"\nrequest = { max_registers = 2, timeout_s = 0.2 }',
    )
    assert load_gateway(_write(tmp_path, ok, "ok.toml")).device("vav-1").request.max_registers == 2


def test_two_devices_with_one_id_on_a_bus(tmp_path: Path) -> None:
    text = VALID + '\n[[device]]\nname = "vav-2"\nbus = "bms"\ndevice_id = 1\nprofile = "vav-ahu"\n'
    _only(tmp_path, text, "device[2].device_id", "device_id 1 on bus 'bms' is also 'vav-1'")
    # The same id on another bus is another device.
    other = (
        VALID
        + '\n[[device]]\nname = "rs-2"\nbus = "rs485"\ndevice_id = 1\nprofile = "room-sensor"\n'
    )
    assert len(load_gateway(_write(tmp_path, other, "ok.toml")).file.device) == 3


def test_every_cross_check_problem_at_once(tmp_path: Path) -> None:
    text = (
        HEAD
        + '\n[[bus]]\nname = "bms"\nkind = "tcp"\nhost = "10.0.0.2"\nport = 502\n'
        + '\n[[device]]\nname = "rs-1"\nbus = "rs485"\ndevice_id = 12\nprofile = "room-sensor"\n'
        + '\n[[device]]\nname = "x1"\nbus = "nobus"\ndevice_id = 3\nprofile = "noprofile"\n'
        + '\n[[device]]\nname = "vav-2"\nbus = "bms"\ndevice_id = 1\nprofile = "vav-ahu"\n'
        + "request = { max_registers = 1 }\n"
        + '\n[[zone]]\nname = "attic"\nfallback = "relinquish"\n'
        + 'read = { co2_ppm = "ghost/co2_ppm", t_zone_c = "rs-1/t_zone" }\n'
        + 'write = { t_heat_c = "vav-1/t_supply_c" }\n'
        + '\n[[zone]]\nname = "office-e1"\nwrite = { t_cool_c = "vav-1/t_cool_setpoint_c" }\n'
        + '\n[[zone]]\nname = "office-e1"\nfallback = "relinquish"\n'
        + '\n[[mqtt_sensor]]\ntopic = "s/door"\nzone = "lobby"\nfields = { people_in = "in" }\n'
    )
    _, problems = _problems(tmp_path, text)
    locs = [p.loc for p in problems]
    assert set(locs) == {
        "bus[2].name",
        "device[2].name",
        "device[3].bus",
        "device[3].profile",
        "device[4].request",
        "device[4].device_id",
        "zone[2].name",
        "zone[0].name",
        "zone[0].read.co2_ppm",
        "zone[0].read.t_zone_c",
        "zone[0].write.t_heat_c",
        "zone[1].fallback",
        "mqtt_sensor[0].zone",
    }
    assert locs.count("device[4].request") == 2


# --- `ilma check` ----------------------------------------------------------------------------


def test_ilma_check_reports_gateway_files_and_device_profiles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = DEVICES / "vav-ahu.toml"
    assert ilma(["check", str(EXAMPLE), str(profile)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        (
            f"ok   {EXAMPLE}: gateway 'east-1' of site 'helsinki-office': 2 buses, 5 devices, "
            "3 zones, 8 writable setpoints, 1 MQTT sensors"
        ),
        f"ok   {profile}: device profile 'vav-ahu' (Generic VAV-C): 7 points, 4 writable",
    ]


def test_ilma_check_reports_every_problem_of_a_gateway_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(
        tmp_path,
        VALID.replace('name = "office-e1"', 'name = "attic"').replace(
            't_heat_c = "vav-1/t_heat_setpoint_c"', 't_heat_c = "vav-1/t_supply_c"'
        ),
    )
    good = _write(tmp_path, VALID, "good.toml")
    assert ilma(["check", str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert f"FAIL {bad}: 2 problems in config" in captured.err
    assert f"{bad}: zone[0].name: the site 'helsinki-office' has no zone 'attic'" in captured.err
    assert f"{bad}: zone[0].write.t_heat_c: point 'vav-1/t_supply_c'" in captured.err
    assert captured.out.startswith(f"ok   {good}: gateway 'gw'")


def test_ilma_check_of_a_file_that_is_neither_says_what_it_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _write(tmp_path, "[tool.something]\nkey = 1\n", "other.toml")
    assert ilma(["check", str(other)]) == 1
    err = capsys.readouterr().err
    assert f"FAIL {other}" in err
    expected = "not an ilma config file: expected one of the tables "
    assert expected in err
    tables = ast.literal_eval(err.split(expected, 1)[1].splitlines()[0])
    # Other packages may register more kinds of file; these three are always there.
    assert {"gateway", "point", "site"} <= set(tables)
