"""The controller file: which sites a controller serves, its broker, control period and historian.

`ilma-controller --config config/controllers/NAME.toml`. Relative paths are relative to the
file; secrets (broker password, database token) come from files or environment variables the
file names, never the file itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from controller.broker import Broker, Secret
from controller.site import Site, load_site
from sensors.config import (
    ConfigError,
    ConfigProblem,
    FrozenModel,
    Name,
    read_toml,
    validation_problems,
)

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ControllerInfo(FrozenModel):
    """[controller]: who this controller is and what it serves."""

    name: Name = Field(description="its id on the wire: heartbeats and command ids")
    sites: tuple[Path, ...] = Field(min_length=1, description="site files, relative to this file")
    period_s: Positive = Field(60.0, description="control period")
    lease_periods: float = Field(
        3.0, ge=1.0, le=100.0, description="a command is valid this many periods"
    )
    share_group: Name | None = Field(
        None,
        description="MQTT 5 shared subscription group: controllers with the same group share "
        "the sites between them (each site is run by one of them at a time)",
    )


class InfluxDB(FrozenModel):
    """[historian.influxdb]: any server of the InfluxDB v2 write API (InfluxDB 2.x/3.x,
    VictoriaMetrics, ...)."""

    url: str = Field(pattern=r"^https?://")
    org: str = "ilma"
    bucket: str = "ilma"
    token: Secret | None = None
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: Positive = 1.0


class SqliteHistory(FrozenModel):
    """[historian.sqlite]: the embedded history when no InfluxDB is configured."""

    path: Path = Path("/var/lib/ilma/history.sqlite")
    retention_days: Positive = 90.0


class Historian(FrozenModel):
    influxdb: InfluxDB | None = None
    sqlite: SqliteHistory = SqliteHistory()
    queue_max: int = Field(
        200_000,
        ge=100,
        description="records held while the database is slow or away; beyond it the oldest "
        "are dropped and counted, and control never waits",
    )


class Metrics(FrozenModel):
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535, description="Prometheus endpoint; off if unset")


class Log(FrozenModel):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ControllerFile(FrozenModel):
    controller: ControllerInfo
    broker: Broker = Broker()  # client_id default: ilma-ctl-<controller name>
    historian: Historian = Historian()
    metrics: Metrics = Metrics()
    log: Log = Log()

    @model_validator(mode="after")
    def _unique_sites(self) -> ControllerFile:
        if len(set(self.controller.sites)) != len(self.controller.sites):
            raise ValueError("a site file is listed twice in controller.sites")
        return self


@dataclass(frozen=True)
class ControllerConfig:
    path: Path
    file: ControllerFile
    sites: dict[str, Site]  # by site name

    @property
    def name(self) -> str:
        return self.file.controller.name

    def client_id(self) -> str:
        return self.file.broker.client_id or f"ilma-ctl-{self.name}"


def load_controller(path: Path) -> ControllerConfig:
    """Load a controller file and its site files; ConfigError lists every problem at once."""
    source = str(path)
    raw = _resolve(read_toml(path), path.parent)
    problems: list[ConfigProblem] = []
    try:
        doc = ControllerFile.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc, source)
        doc = None
    # The site files too, even when the file itself has problems: every problem at once.
    listed = (
        raw.get("controller", {}).get("sites") if isinstance(raw.get("controller"), dict) else None
    )
    site_paths = (
        doc.controller.sites
        if doc is not None
        else tuple(Path(p) for p in listed if isinstance(p, str))
        if isinstance(listed, list)
        else ()
    )
    sites: dict[str, Site] = {}
    for i, site_path in enumerate(site_paths):
        if site_path in site_paths[:i]:
            continue  # reported as listed twice
        try:
            site = load_site(site_path)
        except ConfigError as exc:
            problems += [
                ConfigProblem(source, f"controller.sites[{i}]", f"{site_path} is not usable"),
                *exc.problems,
            ]
            continue
        if site.site.name in sites:
            problems.append(
                ConfigProblem(
                    source, f"controller.sites[{i}]", f"a second site named {site.site.name!r}"
                )
            )
        sites[site.site.name] = site
    if problems or doc is None:
        raise ConfigError(problems)
    return ControllerConfig(path, doc, sites)


def _resolve(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the file."""

    def under(p: object) -> object:
        return str((base / p).resolve()) if isinstance(p, str) else p

    doc = dict(raw)
    ctl = doc.get("controller")
    if isinstance(ctl, dict) and isinstance(ctl.get("sites"), list):
        doc["controller"] = {**ctl, "sites": [under(p) for p in ctl["sites"]]}
    broker = doc.get("broker")
    if isinstance(broker, dict):
        broker = {
            k: under(v) if k in ("ca_file", "cert_file", "key_file") else v
            for k, v in broker.items()
        }
        if isinstance(broker.get("password"), dict) and "file" in broker["password"]:
            broker["password"] = {**broker["password"], "file": under(broker["password"]["file"])}
        doc["broker"] = broker
    hist = doc.get("historian")
    if isinstance(hist, dict):
        hist = dict(hist)
        if isinstance(hist.get("sqlite"), dict) and "path" in hist["sqlite"]:
            hist["sqlite"] = {**hist["sqlite"], "path": under(hist["sqlite"]["path"])}
        influx = hist.get("influxdb")
        if (
            isinstance(influx, dict)
            and isinstance(influx.get("token"), dict)
            and "file" in influx["token"]
        ):
            hist["influxdb"] = {
                **influx,
                "token": {**influx["token"], "file": under(influx["token"]["file"])},
            }
        doc["historian"] = hist
    return doc


def describe_file(path: Path) -> str:
    """`ilma check` of a controller file: a one-line summary, or ConfigError."""
    cfg = load_controller(path)
    zones = sum(len(s.zone) for s in cfg.sites.values())
    h = cfg.file.historian
    history = f"InfluxDB at {h.influxdb.url}" if h.influxdb else f"SQLite at {h.sqlite.path}"
    share = cfg.file.controller.share_group
    return (
        f"controller {cfg.name!r}: {len(cfg.sites)} sites, {zones} zones, period "
        f"{cfg.file.controller.period_s:g} s, history in {history}"
        + (f", sharing sites in group {share!r}" if share else "")
    )
