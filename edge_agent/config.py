"""The gateway file: what a gateway reads, where it publishes, what it may write, and its fallback.

A facility manager writes one TOML file per gateway (config/gateways/NAME.toml). It names the
site file whose zones the gateway serves, the field buses and the devices on them (each with a
device profile from config/devices/), which device point gives each zone its readings and takes
its setpoints, MQTT sensors, the broker, and the agent's own limits. Loading checks every
cross-reference (zones in the site, points in the profiles, writable targets) and reports every
problem at once with the file and key path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from controller.broker import Broker
from controller.site import Site, load_site
from controller.wire import Quantity
from sensors.config import (
    ConfigError,
    ConfigProblem,
    FrozenModel,
    Name,
    read_toml,
    validation_problems,
)
from sensors.profiles import DeviceProfile, load_profiles, point_set_problems

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# "device/point": names may hold '.', never '/'.
PointRef = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
]


class GatewayInfo(FrozenModel):
    """[gateway]: who this gateway is and which site it serves."""

    name: Name
    site: Path = Field(description="the site file, relative to this file")
    profiles: Path = Field(
        Path("../devices"), description="directory of device profiles, relative to this file"
    )
    cycle_s: Positive = Field(10.0, description="poll and publish cycle")


class BusKind(StrEnum):
    TCP = "tcp"
    RTU = "rtu"


class Bus(FrozenModel):
    """[[bus]]: one Modbus connection (a TCP host or a serial line), used by one request at a
    time."""

    name: Name
    kind: BusKind
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    device: str | None = Field(None, description="serial device path, e.g. /dev/ttyUSB0")
    baudrate: int = Field(9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @model_validator(mode="after")
    def _address(self) -> Bus:
        if self.kind is BusKind.TCP and (self.host is None or self.port is None):
            raise ValueError("a tcp bus needs `host` and `port`")
        if self.kind is BusKind.RTU and self.device is None:
            raise ValueError("an rtu bus needs `device`")
        return self


class QuirkOverrides(FrozenModel):
    """A device's own quirks, over its profile's [request] values."""

    max_registers: int | None = Field(None, ge=1, le=125)
    max_bits: int | None = Field(None, ge=1, le=2000)
    max_gap: int | None = Field(None, ge=0, le=125)
    pause_s: NonNegative | None = None
    timeout_s: Positive | None = None
    retries: int | None = Field(None, ge=0, le=10)


class Device(FrozenModel):
    """[[device]]: one device on a bus, read through its profile."""

    name: Name
    bus: Name
    device_id: int = Field(ge=0, le=247)
    profile: Name
    period_s: Positive | None = Field(None, description="poll period; default: the cycle")
    request: QuirkOverrides = QuirkOverrides()


class FallbackKind(StrEnum):
    LOCAL = "local"  # the agent runs the control core on its own readings
    RELINQUISH = "relinquish"  # the agent writes each point's default: the BMS's own control


class ZoneReads(FrozenModel):
    """Which device point gives each of a zone's quantities."""

    co2_ppm: PointRef | None = None
    t_zone_c: PointRef | None = None
    rh_pct: PointRef | None = None
    people_in: PointRef | None = None
    people_out: PointRef | None = None
    people_count: PointRef | None = None
    airflow_m3s: PointRef | None = None
    t_supply_c: PointRef | None = None


class ZoneWrites(FrozenModel):
    """Which device point takes each of a zone's commands."""

    airflow_m3s: PointRef | None = None
    t_heat_c: PointRef | None = None
    t_cool_c: PointRef | None = None
    mode: PointRef | None = None


class Zone(FrozenModel):
    """[[zone]]: a zone of the site served by this gateway."""

    name: Name
    fallback: FallbackKind = FallbackKind.LOCAL
    read: ZoneReads = ZoneReads()
    write: ZoneWrites = ZoneWrites()


class MqttSensor(FrozenModel):
    """[[mqtt_sensor]]: a sensor that publishes JSON on the broker, mapped to a zone."""

    topic: str = Field(min_length=1, max_length=200)
    zone: Name
    fields: dict[Quantity, str] = Field(
        description='quantity → JSON field path, e.g. people_in = "in" or "counts.in"'
    )
    time_field: str | None = Field(None, description="epoch seconds; default: arrival time")

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("a sensor topic names one sensor: no '+' or '#' wildcards")
        return v


class Fallback(FrozenModel):
    """[fallback]: when the controller counts as silent and how commands age."""

    after_s: Positive = Field(300.0, description="controller silent this long → fallback")
    max_clock_skew_s: NonNegative = Field(
        30.0, description="tolerance on a command's absolute valid_until"
    )


class Writes(FrozenModel):
    """[writes]: how setpoints reach the building."""

    verify: bool = Field(True, description="read every written point back")
    deadband_fraction: NonNegative = Field(
        0.002, description="skip a write smaller than this share of the point's range"
    )
    refresh_s: Positive = Field(
        300.0,
        description="read an unchanged setpoint back this often, and write it again if the "
        "device lost it (a controller that restarted holds its default)",
    )


class BufferConfig(FrozenModel):
    path: Path = Path("/var/lib/ilma/buffer.sqlite")
    max_messages: int = Field(100_000, ge=10)
    replay_per_s: Positive = Field(20.0, description="replay rate after an outage")


class AuditConfig(FrozenModel):
    path: Path = Path("/var/lib/ilma/audit.sqlite")
    max_records: int = Field(200_000, ge=10)


class Metrics(FrozenModel):
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535, description="Prometheus endpoint; off if unset")


class Log(FrozenModel):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class GatewayFile(FrozenModel):
    """A gateway file as written."""

    gateway: GatewayInfo
    broker: Broker = Broker()  # client_id default: ilma-gw-<gateway name>
    bus: tuple[Bus, ...] = ()
    device: tuple[Device, ...] = ()
    zone: tuple[Zone, ...] = Field(min_length=1)
    mqtt_sensor: tuple[MqttSensor, ...] = ()
    fallback: Fallback = Fallback()
    writes: Writes = Writes()
    buffer: BufferConfig = BufferConfig()
    audit: AuditConfig = AuditConfig()
    metrics: Metrics = Metrics()
    log: Log = Log()


@dataclass(frozen=True)
class GatewayConfig:
    """A loaded gateway: its file, the site it serves and the profiles of its devices."""

    path: Path
    file: GatewayFile
    site: Site
    profiles: dict[str, DeviceProfile]

    @property
    def name(self) -> str:
        return self.file.gateway.name

    def device(self, name: str) -> Device:
        return next(d for d in self.file.device if d.name == name)

    def client_id(self) -> str:
        return self.file.broker.client_id or f"ilma-gw-{self.name}"


def load_gateway(path: Path) -> GatewayConfig:
    """Load and check a gateway file, its site file and device profiles; ConfigError lists every
    problem at once."""
    source = str(path)
    raw = read_toml(path)
    try:
        doc = GatewayFile.model_validate(_resolve_paths(raw, path.parent))
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, source)) from None
    site_path = doc.gateway.site
    try:
        site = load_site(site_path)
    except ConfigError as exc:
        raise ConfigError(
            [
                ConfigProblem(source, "gateway.site", f"the site file {site_path} is not usable"),
                *exc.problems,
            ]
        ) from None
    try:
        profiles = load_profiles(doc.gateway.profiles)
    except ConfigError as exc:
        raise ConfigError(
            [
                ConfigProblem(source, "gateway.profiles", "a device profile is not usable"),
                *exc.problems,
            ]
        ) from None
    problems = _cross_check(doc, site, profiles, source)
    if problems:
        raise ConfigError(problems)
    return GatewayConfig(path, doc, site, profiles)


_PATH_KEYS = {
    "gateway": ("site", "profiles"),
    "broker": ("ca_file", "cert_file", "key_file"),
    "buffer": ("path",),
    "audit": ("path",),
}


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the file, not to where the agent runs."""
    doc = dict(raw)
    gateway = doc.get("gateway")
    if isinstance(gateway, dict) and "profiles" not in gateway:
        # The default profile directory is beside the file's directory, like the written one.
        doc["gateway"] = {**gateway, "profiles": str((base / "../devices").resolve())}
    for table, keys in _PATH_KEYS.items():
        section = doc.get(table)
        if not isinstance(section, dict):
            continue
        section = dict(section)
        for key in keys:
            if isinstance(section.get(key), str):
                section[key] = str((base / section[key]).resolve())
        password = section.get("password")
        if (
            table == "broker"
            and isinstance(password, dict)
            and isinstance(password.get("file"), str)
        ):
            section["password"] = {**password, "file": str((base / password["file"]).resolve())}
        doc[table] = section
    return doc


def _cross_check(
    doc: GatewayFile, site: Site, profiles: dict[str, DeviceProfile], source: str
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []

    def problem(loc: str, message: str) -> None:
        problems.append(ConfigProblem(source, loc, message))

    named: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("bus", tuple(b.name for b in doc.bus)),
        ("device", tuple(d.name for d in doc.device)),
        ("zone", tuple(z.name for z in doc.zone)),
    )
    for kind, names in named:
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                problem(
                    f"{kind}[{i}].name", f"duplicate name {name!r}, first at {kind}[{seen[name]}]"
                )
            seen.setdefault(name, i)
    buses = {b.name: b for b in doc.bus}
    devices = {d.name: d for d in doc.device}
    site_zones = {z.name for z in site.zone}
    ids: dict[tuple[str, int], str] = {}
    for i, d in enumerate(doc.device):
        if d.bus not in buses:
            problem(f"device[{i}].bus", f"no [[bus]] named {d.bus!r} (buses: {sorted(buses)})")
        if d.profile not in profiles:
            problem(
                f"device[{i}].profile",
                f"no device profile named {d.profile!r} in {doc.gateway.profiles} "
                f"(profiles: {sorted(profiles)})",
            )
        profile = profiles.get(d.profile)
        overrides = d.request.model_dump(exclude_none=True)
        if profile is not None and overrides:
            quirks = profile.request.with_overrides(overrides)
            for key, message in point_set_problems(profile.points, quirks):
                where = ".".join(str(p) for p in key)
                problem(
                    f"device[{i}].request",
                    f"with these quirks, profile {d.profile}: {where}: {message}",
                )
        key = (d.bus, d.device_id)
        if key in ids:
            problem(
                f"device[{i}].device_id",
                f"device_id {d.device_id} on bus {d.bus!r} is also {ids[key]!r}",
            )
        ids.setdefault(key, d.name)
    for i, z in enumerate(doc.zone):
        if z.name not in site_zones:
            problem(f"zone[{i}].name", f"the site {site.site.name!r} has no zone {z.name!r}")
        for section, refs, must_write in (("read", z.read, False), ("write", z.write, True)):
            for quantity, ref in refs.model_dump().items():
                if ref is None:
                    continue
                loc = f"zone[{i}].{section}.{quantity}"
                device_name, point_name = ref.split("/")
                device = devices.get(device_name)
                if device is None:
                    problem(loc, f"no [[device]] named {device_name!r}")
                    continue
                profile = profiles.get(device.profile)
                if profile is None:
                    continue  # reported at the device
                point = profile.points.get(point_name)
                if point is None:
                    problem(
                        loc,
                        f"profile {profile.name!r} of device {device_name!r} has no point "
                        f"{point_name!r} (points: {sorted(profile.points)})",
                    )
                elif must_write and not point.writable:
                    problem(loc, f"point {ref!r} is not writable in profile {profile.name!r}")
        if z.fallback is FallbackKind.LOCAL and z.write.airflow_m3s is None:
            problem(
                f"zone[{i}].fallback",
                "local fallback needs a writable airflow point (zone.write.airflow_m3s); "
                'use fallback = "relinquish" for a zone the gateway only reads',
            )
    zone_names = {z.name for z in doc.zone}
    for i, s in enumerate(doc.mqtt_sensor):
        if s.zone not in zone_names:
            problem(f"mqtt_sensor[{i}].zone", f"no [[zone]] named {s.zone!r} in this gateway")
    return problems


def describe_file(path: Path) -> str:
    """`ilma check` of a gateway file: a one-line summary, or ConfigError."""
    cfg = load_gateway(path)
    f = cfg.file
    writes = sum(1 for z in f.zone for v in z.write.model_dump().values() if v is not None)
    return (
        f"gateway {cfg.name!r} of site {cfg.site.site.name!r}: {len(f.bus)} buses, "
        f"{len(f.device)} devices, {len(f.zone)} zones, {writes} writable setpoints, "
        f"{len(f.mqtt_sensor)} MQTT sensors"
    )
