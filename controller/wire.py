"""The wire contract: MQTT topics and the one codec for every payload ilma sends or receives.

Topics are versioned and rooted at ``ilma/v1/<site>/``:

======================================  =========  ========  =====================================
topic                                   direction  retained  payload
======================================  =========  ========  =====================================
``ilma/v1/<site>/gw/<gw>/telemetry``    up         no        :class:`Telemetry` (QoS 1)
``ilma/v1/<site>/gw/<gw>/cmd``          down       no        :class:`CommandSet` (QoS 1, expiring)
``ilma/v1/<site>/gw/<gw>/status``       up         yes       :class:`GatewayStatus` (birth, Will)
``ilma/v1/<site>/controller/status``    down       yes       :class:`ControllerStatus` (heartbeat)
======================================  =========  ========  =====================================

Payloads are JSON with SI values (the unit belongs to the point name: ``co2_ppm``,
``airflow_m3s``), times in epoch seconds, and a missing value as ``null`` (JSON has no NaN).
Every decoder raises :class:`WireError` and nothing else on malformed input, so a service can
count, log and drop a bad message and keep running.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import cache, lru_cache
from typing import Annotated, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.law import Mode as LawMode
from controller.law import Reason
from sensors.config import NAME_PATTERN
from sensors.errors import IlmaError

VERSION = 1
ROOT = f"ilma/v{VERSION}"

# A name in a topic level: the config's names are checked against the same pattern.
WireName = Annotated[str, Field(pattern=NAME_PATTERN)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
# Readings are small numbers in SI units; anything this large is a corrupted value, not a reading.
# A sender replaces a value beyond it by a missing one (see edge_agent.readings).
MAX_ABS_VALUE = 1e12
Value = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]


class WireError(IlmaError, ValueError):
    """A payload or topic that does not follow the wire contract."""


class _Wire(BaseModel):
    # Unknown keys are ignored, not refused: a newer peer may add fields within v1.
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


# --- telemetry (gateway → controller) ----------------------------------------------------------


class Quantity(StrEnum):
    """What a telemetry reading is of; the suffix is its SI unit."""

    CO2_PPM = "co2_ppm"
    T_ZONE_C = "t_zone_c"
    RH_PCT = "rh_pct"
    PEOPLE_IN = "people_in"  # cumulative count of entries (it may wrap or reset)
    PEOPLE_OUT = "people_out"
    PEOPLE_COUNT = "people_count"  # a counter's own occupancy figure, where it has one
    AIRFLOW_M3S = "airflow_m3s"  # measured supply airflow
    T_SUPPLY_C = "t_supply_c"
    # What the gateway has written to the building, read back: the controller's feedback.
    AIRFLOW_SETPOINT_M3S = "airflow_setpoint_m3s"
    T_HEAT_SETPOINT_C = "t_heat_setpoint_c"
    T_COOL_SETPOINT_C = "t_cool_setpoint_c"


class Reading(NamedTuple):
    """One reading of one zone's quantity. `quality` is a sensors.validation.Quality bitmask
    (0 = good); `replayed` marks a reading sent from the gateway's buffer after an outage.
    On the wire a message's readings travel as columns (see Telemetry)."""

    zone: str
    point: Quantity
    t: float
    value: float | None  # None: missing
    quality: int = 0
    replayed: bool = False


Quality16 = Annotated[int, Field(ge=0, le=0xFFFF)]


class Readings(_Wire):
    """A message's readings as columns: reading i is (zone[i], point[i], t[i], value[i],
    quality[i], replayed[i]). Columns, not a list of objects: the keys are not repeated per
    reading (half the bytes on a gateway's uplink) and the controller validates and ingests
    whole arrays, not forty objects (bench/controller.py)."""

    zone: tuple[WireName, ...]
    point: tuple[Quantity, ...]
    t: tuple[Seconds, ...]
    value: tuple[Value | None, ...]
    quality: tuple[Quality16, ...]
    replayed: tuple[bool, ...]

    @model_validator(mode="after")
    def _same_length(self) -> Readings:
        n = len(self.zone)
        if not (
            n == len(self.point) == len(self.t) == len(self.value) == len(self.quality)
            and n == len(self.replayed)
        ):
            raise ValueError("the readings' columns differ in length")
        return self

    @classmethod
    def of(cls, rows: Iterable[Reading]) -> Readings:
        rows = tuple(rows)
        return cls(
            zone=tuple(r.zone for r in rows),
            point=tuple(r.point for r in rows),
            t=tuple(r.t for r in rows),
            value=tuple(r.value for r in rows),
            quality=tuple(r.quality for r in rows),
            replayed=tuple(r.replayed for r in rows),
        )


class Telemetry(_Wire):
    """A gateway's readings of one poll cycle. `seq` rises by one per message of a gateway's
    boot (`boot_t`), so the controller can tell duplicates and gaps. Built from rows with
    `Telemetry.of(...)`, sent and decoded as columns (`.readings`), read back as rows
    (`.rows`)."""

    v: Literal[1] = 1
    gateway: WireName
    boot_t: Seconds
    seq: Annotated[int, Field(ge=0)]
    t: Seconds
    readings: Readings

    @classmethod
    def of(
        cls, *, gateway: str, boot_t: float, seq: int, t: float, readings: Iterable[Reading]
    ) -> Telemetry:
        return cls(gateway=gateway, boot_t=boot_t, seq=seq, t=t, readings=Readings.of(readings))

    @property
    def rows(self) -> tuple[Reading, ...]:
        c = self.readings
        return tuple(map(Reading, c.zone, c.point, c.t, c.value, c.quality, c.replayed))

    def __len__(self) -> int:
        return len(self.readings.zone)


# --- commands (controller → gateway) -----------------------------------------------------------


class Mode(StrEnum):
    """A zone's mode on the wire: controller.law.Mode by name (Guideline 36 codes + standby)."""

    OCCUPIED = "occupied"
    COOL_DOWN = "cool_down"
    SETUP = "setup"
    WARM_UP = "warm_up"
    SETBACK = "setback"
    FREEZE_PROTECTION = "freeze_protection"
    UNOCCUPIED = "unoccupied"
    OCCUPIED_STANDBY = "occupied_standby"


def mode_of(code: int) -> Mode:
    """The wire name of a controller.law.Mode code."""
    return Mode[LawMode(code).name]


def law_mode(mode: Mode) -> LawMode:
    return LawMode[mode.name]


@cache
def reason_text(flags: int) -> str:
    """controller.law.Reason flags as 'occupancy+co2' (what a facility manager reads); cached:
    a site has few distinct combinations and this runs twice per zone and period."""
    return "+".join(r.name.lower() for r in Reason if r & flags and r.name) or "none"


class ZoneCommand(_Wire):
    """What one zone should do now, and why (for the audit trail and the dashboard)."""

    zone: WireName
    mode: Mode
    airflow_m3s: Annotated[float, Field(ge=0.0, le=1e3, allow_inf_nan=False)]
    t_heat_c: Annotated[float, Field(ge=-50.0, le=60.0, allow_inf_nan=False)]
    t_cool_c: Annotated[float, Field(ge=-50.0, le=60.0, allow_inf_nan=False)]
    reason: Annotated[str, Field(max_length=200)] = ""


class CommandSet(_Wire):
    """Commands for one gateway's zones. A command is valid for `lease_s` after it was sent
    (also sent as the MQTT 5 message expiry, so a broker drops it when it is late) and never
    after `valid_until` by the gateway's clock: a stale command is never applied after its
    controller died."""

    v: Literal[1] = 1
    controller: WireName
    seq: Annotated[int, Field(ge=0)]
    t: Seconds
    lease_s: Annotated[float, Field(gt=0.0, le=86_400.0, allow_inf_nan=False)]
    valid_until: Seconds
    commands: tuple[ZoneCommand, ...]

    @property
    def command_id(self) -> str:
        """'<controller>/<seq>': names the command in audit records."""
        return f"{self.controller}/{self.seq}"


# --- status and heartbeat (retained) -----------------------------------------------------------


class GatewayState(StrEnum):
    ONLINE = "online"  # following the controller
    DEGRADED = "degraded"  # some zones on their fallback: the controller is silent
    OFFLINE = "offline"  # the gateway's Last Will, or a clean shutdown


class GatewayStatus(_Wire):
    v: Literal[1] = 1
    gateway: WireName
    state: GatewayState
    t: Seconds
    boot_t: Seconds = 0.0
    fallback_zones: tuple[WireName, ...] = ()
    version: Annotated[str, Field(max_length=40)] = ""


class ControllerState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # the controller's Last Will, or a clean shutdown


class ControllerStatus(_Wire):
    """The controller's heartbeat: republished (retained) every control period while it runs."""

    v: Literal[1] = 1
    controller: WireName
    state: ControllerState
    t: Seconds
    period_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 60.0


# --- the codec ---------------------------------------------------------------------------------

Payload = Telemetry | CommandSet | GatewayStatus | ControllerStatus
T = TypeVar("T", bound=_Wire)


def encode(message: Payload) -> bytes:
    """The message as compact JSON bytes (fields at their defaults included: explicit on the
    wire)."""
    return message.model_dump_json().encode()


def decode_telemetry(payload: bytes) -> Telemetry:
    return _decode(Telemetry, payload)


def decode_commands(payload: bytes) -> CommandSet:
    return _decode(CommandSet, payload)


def decode_gateway_status(payload: bytes) -> GatewayStatus:
    return _decode(GatewayStatus, payload)


def decode_controller_status(payload: bytes) -> ControllerStatus:
    return _decode(ControllerStatus, payload)


def _decode(model: type[T], payload: bytes) -> T:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise WireError(
            f"malformed {model.__name__} ({exc.error_count()} problems): {where}: {first['msg']}"
        ) from None
    except (ValueError, TypeError) as exc:  # not UTF-8, not bytes-like
        raise WireError(f"malformed {model.__name__}: {exc}") from None


# --- topics ------------------------------------------------------------------------------------


class Kind(StrEnum):
    TELEMETRY = "telemetry"
    COMMANDS = "cmd"
    GATEWAY_STATUS = "status"
    CONTROLLER_STATUS = "controller-status"


class Topic(NamedTuple):
    site: str
    kind: Kind
    gateway: str | None  # None for the controller's topics


def telemetry_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/gw/{gateway}/telemetry"


def command_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/gw/{gateway}/cmd"


def gateway_status_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/gw/{gateway}/status"


def controller_status_topic(site: str) -> str:
    return f"{ROOT}/{site}/controller/status"


# Controller processes that share sites meet on these topics (no site is named "_cluster": names
# start with a letter or digit).
CLUSTER = f"{ROOT}/_cluster"


def member_topic(controller: str) -> str:
    """A controller process's retained status (its Will: offline) among those sharing sites."""
    return f"{CLUSTER}/{controller}/status"


def inbox_topic(controller: str) -> str:
    """Telemetry forwarded to the process that runs its site."""
    return f"{CLUSTER}/{controller}/inbox"


def telemetry_filter(site: str = "+", group: str | None = None) -> str:
    """The subscription to every gateway's telemetry of a site (all sites: '+'); with `group`,
    an MQTT 5 shared subscription whose messages the group's members share."""
    topic = f"{ROOT}/{site}/gw/+/telemetry"
    return f"$share/{group}/{topic}" if group else topic


def gateway_status_filter(site: str = "+") -> str:
    return f"{ROOT}/{site}/gw/+/status"


@lru_cache(maxsize=4096)  # a handful of topics per gateway, thousands of messages a second
def parse_topic(topic: str) -> Topic:
    """The site, kind and gateway of an ilma topic, or WireError."""
    parts = topic.split("/")
    if len(parts) >= 4 and "/".join(parts[:2]) == ROOT:
        site = parts[2]
        if len(parts) == 6 and parts[3] == "gw":
            for kind in (Kind.TELEMETRY, Kind.COMMANDS, Kind.GATEWAY_STATUS):
                if parts[5] == kind.value:
                    return Topic(site, kind, parts[4])
        if parts[3:] == ["controller", "status"]:
            return Topic(site, Kind.CONTROLLER_STATUS, None)
    raise WireError(f"not an ilma v{VERSION} topic: {topic!r}")
