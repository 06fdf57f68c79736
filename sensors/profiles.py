"""Device profiles: a vendor's Modbus register map and request quirks, loaded from config/devices/.

A profile says where each point lives (table, address), how its registers encode a number (type,
byte and word order, scale and offset) and, for points ilma writes, the limits and the relinquish
default that keep a write safe. It is validated once at load; every problem in a file is reported
at once with its key path (`point.co2_ppm.address`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from sensors.config import (
    ConfigError,
    ConfigProblem,
    FrozenModel,
    Name,
    key_path,
    read_toml,
    validation_problems,
)

__all__ = [
    "ByteOrder",
    "DataType",
    "DeviceProfile",
    "Quantity",
    "RegisterPoint",
    "RequestQuirks",
    "Table",
    "WordOrder",
    "load_profile",
    "load_profiles",
    "parse_profile",
    "point_set_problems",
]

LAST_ADDRESS = 0xFFFF  # Modbus addresses are 16-bit
MAX_READ_REGISTERS = 125  # Modbus application protocol v1.1b3 §6.3/6.4: FC3/FC4 read at most 125
MAX_READ_BITS = 2000  # same spec §6.1/6.2: FC1/FC2 read at most 2000 coils or inputs
FLOAT32_MAX = 3.4028234663852886e38


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bit(self) -> bool:
        """Coils and discrete inputs hold single bits; the other two hold 16-bit registers."""
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def is_writable(self) -> bool:
        """Only coils and holding registers can be written (FC5/6/15/16)."""
        return self in (Table.COIL, Table.HOLDING)


class DataType(StrEnum):
    """How a point's registers encode its raw number."""

    BOOL = "bool"
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"

    @property
    def n_registers(self) -> int:
        """Registers (or bits, for bool) the type occupies."""
        return 2 if self in (DataType.U32, DataType.S32, DataType.F32) else 1

    @property
    def raw_range(self) -> tuple[float, float]:
        """Smallest and largest raw value the type holds (float32: the largest finite)."""
        return _RAW_RANGE[self]


_RAW_RANGE: dict[DataType, tuple[float, float]] = {
    DataType.BOOL: (0, 1),
    DataType.U16: (0, 0xFFFF),
    DataType.S16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.S32: (-0x8000_0000, 0x7FFF_FFFF),
    DataType.F32: (-FLOAT32_MAX, FLOAT32_MAX),
}


class ByteOrder(StrEnum):
    """Bytes within one register: big = AB, the Modbus standard; little = BA (byte-swapped)."""

    BIG = "big"
    LITTLE = "little"


class WordOrder(StrEnum):
    """Registers within a 32-bit value: big = high word first (ABCD); little = low word first."""

    BIG = "big"
    LITTLE = "little"


class Quantity(StrEnum):
    """What a point measures or commands: how the agent knows which reading or command it is."""

    CO2_PPM = "co2_ppm"
    T_ZONE_C = "t_zone_c"
    RH_PCT = "rh_pct"
    PEOPLE_IN = "people_in"
    PEOPLE_OUT = "people_out"
    PEOPLE_COUNT = "people_count"
    AIRFLOW_M3S = "airflow_m3s"
    AIRFLOW_SETPOINT_M3S = "airflow_setpoint_m3s"
    T_HEAT_SETPOINT_C = "t_heat_setpoint_c"
    T_COOL_SETPOINT_C = "t_cool_setpoint_c"
    T_SUPPLY_C = "t_supply_c"
    T_SUPPLY_SETPOINT_C = "t_supply_setpoint_c"
    OCCUPANCY_MODE = "occupancy_mode"
    STATUS = "status"


# A model validator skips its cross-field checks under this context key: the loader runs the same
# checks itself afterwards, so it can report each one at its own key and all of them at once.
_DEFER_KEY = "ilma_defer_checks"
_DEFER = {_DEFER_KEY: True}


def _deferred(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and info.context.get(_DEFER_KEY) is True


class RequestQuirks(FrozenModel):
    """[request]: how a device wants to be asked; a gateway file may override any of it."""

    max_registers: int = Field(
        MAX_READ_REGISTERS,
        ge=1,
        le=MAX_READ_REGISTERS,
        description="most registers in one read request (FC3/FC4 allow 125)",
    )
    max_bits: int = Field(
        MAX_READ_BITS,
        ge=1,
        le=MAX_READ_BITS,
        description="most coils or discrete inputs in one read request (FC1/FC2 allow 2000)",
    )
    max_gap: int = Field(
        8,
        ge=0,
        le=MAX_READ_BITS,
        description="unused registers (or bits) a read may span to merge two reads into one",
    )
    pause_s: float = Field(
        0.0, ge=0, le=60, allow_inf_nan=False, description="pause between two requests"
    )
    timeout_s: float = Field(
        1.0, gt=0, le=60, allow_inf_nan=False, description="time allowed for one request"
    )
    retries: int = Field(1, ge=0, le=10, description="retries of a failed request within a poll")

    def with_overrides(self, overrides: Mapping[str, object]) -> RequestQuirks:
        """These quirks with some fields replaced, validated (pydantic ValidationError if not)."""
        return RequestQuirks.model_validate({**self.model_dump(), **overrides})


class RegisterPoint(FrozenModel):
    """[point.NAME]: one value in a device's register map and how to turn it into SI units."""

    table: Table
    address: int = Field(ge=0, le=LAST_ADDRESS, description="0-based protocol address")
    type: DataType
    scale: float = Field(
        1.0, allow_inf_nan=False, description="engineering value = raw * scale + offset"
    )
    offset: float = Field(0.0, allow_inf_nan=False)
    unit: str = Field("", description="SI unit of the engineering value, e.g. 'ppm', 'degC'")
    quantity: Quantity | None = None
    writable: bool = False
    min: float | None = Field(None, allow_inf_nan=False, description="lowest engineering value")
    max: float | None = Field(None, allow_inf_nan=False, description="highest engineering value")
    default: float | None = Field(
        None, allow_inf_nan=False, description="relinquish default: the BMS's fallback value"
    )
    max_rate_per_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="fastest change of written values, per s"
    )
    # Without an override a point takes the profile's orders (DeviceProfile fills them in).
    byte_order: ByteOrder = ByteOrder.BIG
    word_order: WordOrder = WordOrder.BIG
    description: str = ""

    @property
    def n_registers(self) -> int:
        """Registers (or bits, for a bool point) the point occupies: 1 or 2."""
        return self.type.n_registers

    @property
    def last_address(self) -> int:
        """Address of the point's last register (or bit)."""
        return self.address + self.n_registers - 1

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        if not _deferred(info):
            problems = _point_problems(self)
            if problems:
                raise ValueError("; ".join(f"{key}: {msg}" for key, msg in problems))
        return self


class DeviceProfile(FrozenModel):
    """A whole profile file: the device, its default byte and word order, quirks and points."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_alias=True, validate_by_name=True
    )

    name: Name
    vendor: str = ""
    model: str = ""
    description: str = ""
    byte_order: ByteOrder = Field(
        ByteOrder.BIG, description="default for points: bytes within a register"
    )
    word_order: WordOrder = Field(
        WordOrder.BIG, description="default for 32-bit points: registers within a value"
    )
    request: RequestQuirks = RequestQuirks()
    # The TOML tables are [point.NAME]; in code the mapping reads better as `points`.
    points: dict[Name, RegisterPoint] = Field(alias="point", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _points_inherit_orders(cls, data: Any) -> Any:  # noqa: ANN401  (raw input, any shape)
        return _inherit_orders(data)

    @model_validator(mode="after")
    def _points_fit_together(self, info: ValidationInfo) -> Self:
        if not _deferred(info):
            problems = _cross_problems(self.points, self.request)
            if problems:
                raise ValueError("; ".join(f"{key_path(loc)}: {msg}" for loc, msg in problems))
        return self


# --- checks -----------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _inherit_orders(data: Any) -> Any:  # noqa: ANN401  (raw input, any shape)
    """`data` with the profile's byte and word order given to every point that sets none."""
    if not isinstance(data, Mapping):
        return data
    field = "point" if "point" in data else "points"  # the TOML key, or the name in code
    if not isinstance(data.get(field), Mapping):
        return data
    inherited: dict[str, Any] = {}
    for key, enum in (("byte_order", ByteOrder), ("word_order", WordOrder)):
        value = data.get(key)
        # An invalid profile default is reported once, at its own key, not again in every point.
        if isinstance(value, str) and value in {e.value for e in enum}:
            inherited[key] = enum(value)
    if not inherited:
        return data
    points: dict[Any, Any] = {}
    for name, p in data[field].items():
        if isinstance(p, Mapping):
            points[name] = {**inherited, **p}
        elif isinstance(p, RegisterPoint):
            unset = {k: v for k, v in inherited.items() if k not in p.model_fields_set}
            points[name] = p.model_copy(update=unset)
        else:
            points[name] = p
    return {**data, field: points}


def _fits_type(value: float, p: RegisterPoint) -> bool:
    """Whether the codec can write `value` to `p`: same rounding as bacnet_modbus.codec.encode."""
    raw = (value - p.offset) / p.scale
    if not math.isfinite(raw):
        return False
    lo, hi = p.type.raw_range
    if p.type is DataType.F32:
        return abs(raw) <= FLOAT32_MAX
    return lo <= round(raw) <= hi


def _point_problems(p: RegisterPoint) -> list[tuple[str, str]]:
    """Problems of one point on its own, each as (its key, what is wrong and what to do)."""
    problems: list[tuple[str, str]] = []

    def problem(key: str, message: str) -> None:
        problems.append((key, message))

    if p.type is DataType.BOOL and not p.table.is_bit:
        problem(
            "type",
            f"a {p.table} register is 16 bits: 'bool' is only for coil and discrete points "
            "(a register holding 0 or 1 is 'u16')",
        )
    if p.table.is_bit and p.type is not DataType.BOOL:
        problem("type", f"a {p.table} point is a single bit: type must be 'bool', got '{p.type}'")
    if p.writable and not p.table.is_writable:
        problem(
            "writable",
            f"{p.table} points are read-only in Modbus; only coil and holding points are written",
        )
    if p.last_address > LAST_ADDRESS:
        problem(
            "address",
            f"type {p.type} takes {p.n_registers} registers: from {p.address} it would end at "
            f"{p.last_address}, past the last Modbus address {LAST_ADDRESS}",
        )
    if p.scale == 0:
        problem("scale", "scale must not be 0: every raw value would read as the offset")
    if p.min is not None and p.max is not None and p.min > p.max:
        problem("max", f"max {p.max} is below min {p.min}")
    if p.default is not None and (
        (p.min is not None and p.default < p.min) or (p.max is not None and p.default > p.max)
    ):
        problem("default", f"default {p.default} is outside the limits [{p.min}, {p.max}]")
    if not p.writable:
        if p.max_rate_per_s is not None:
            problem("max_rate_per_s", "only written values are rate-limited; this one is read-only")
        return problems
    limits = {"min": p.min, "max": p.max, "default": p.default}
    for key, value in limits.items():
        if value is None:
            problem(
                key,
                "required for a writable point: ilma never writes outside [min, max] and "
                "relinquishes to the default",
            )
        elif p.scale != 0 and not _fits_type(value, p):
            lo, hi = p.type.raw_range
            problem(
                key,
                f"{value} cannot be written as {p.type} with scale {p.scale} and offset "
                f"{p.offset}: its raw value {(value - p.offset) / p.scale:g} is outside "
                f"{lo:g}..{hi:g}",
            )
    return problems


def _cross_problems(
    points: Mapping[str, RegisterPoint], quirks: RequestQuirks | None
) -> list[tuple[Loc, str]]:
    """Problems between points (overlaps) and between a point and the request limits."""
    problems: list[tuple[Loc, str]] = []

    def problem(name: str, key: str, message: str) -> None:
        problems.append((("point", name, key), message))

    if quirks is not None:
        for name, p in points.items():
            limit, what = (
                (quirks.max_bits, "max_bits")
                if p.table.is_bit
                else (quirks.max_registers, "max_registers")
            )
            if p.n_registers > limit:
                problem(
                    name,
                    "type",
                    f"type {p.type} takes {p.n_registers} registers but [request] {what} is "
                    f"{limit}: the point could never be read",
                )
    for table in Table:
        members = sorted((p.address, name) for name, p in points.items() if p.table is table)
        owner = ""
        end = -1  # last address taken so far by `owner`, the point reaching furthest
        for address, name in members:
            p = points[name]
            if address <= end:
                o = points[owner]
                problem(
                    name,
                    "address",
                    f"{table} addresses {address}..{p.last_address} overlap point '{owner}' "
                    f"({o.address}..{o.last_address}); each address belongs to one point",
                )
            if p.last_address > end:
                owner, end = name, p.last_address
    return problems


def point_set_problems(
    points: Mapping[str, RegisterPoint], quirks: RequestQuirks | None
) -> list[tuple[Loc, str]]:
    """Every problem of these points, each as (key path under the profile, message).

    A gateway file that overrides a device's quirks calls this again with the new quirks: a
    smaller `max_registers` may leave a 32-bit point unreadable.
    """
    problems: list[tuple[Loc, str]] = [
        (("point", name, key), msg) for name, p in points.items() for key, msg in _point_problems(p)
    ]
    return problems + _cross_problems(points, quirks)


# --- loading ----------------------------------------------------------------------------------


def parse_profile(raw: Mapping[str, Any], source: str = "<profile>") -> DeviceProfile:
    """Validate a parsed profile document; ConfigError lists every problem at once."""
    doc = _inherit_orders(raw)
    try:
        profile = DeviceProfile.model_validate(doc, context=_DEFER)
    except ValidationError as exc:
        # The points and quirks that are valid on their own are still checked, so one run of
        # `ilma check` shows everything wrong with the file.
        points, quirks = _valid_parts(doc)
        found = point_set_problems(points, quirks)
        raise ConfigError(
            validation_problems(exc, source)
            + [ConfigProblem(source, key_path(loc), msg) for loc, msg in found]
        ) from None
    found = point_set_problems(profile.points, profile.request)
    if found:
        raise ConfigError([ConfigProblem(source, key_path(loc), msg) for loc, msg in found])
    return profile


def _valid_parts(
    doc: Mapping[str, Any],
) -> tuple[dict[str, RegisterPoint], RequestQuirks | None]:
    points: dict[str, RegisterPoint] = {}
    raw_points = doc.get("point")
    if isinstance(raw_points, Mapping):
        for name, raw in raw_points.items():
            try:
                points[str(name)] = RegisterPoint.model_validate(raw, context=_DEFER)
            except ValidationError:
                continue  # already reported by the whole-document validation
    try:
        quirks = RequestQuirks.model_validate(doc.get("request", {}))
    except ValidationError:
        quirks = None
    return points, quirks


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate one profile file; ConfigError names the file and each key path."""
    return parse_profile(read_toml(path), source=str(path))


def load_profiles(directory: Path) -> dict[str, DeviceProfile]:
    """Every `*.toml` profile in `directory` by its `name`; problems of all files at once."""
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(str(directory), "", "not a directory of profiles")])
    profiles: dict[str, DeviceProfile] = {}
    sources: dict[str, Path] = {}
    problems: list[ConfigProblem] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            profile = load_profile(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if profile.name in profiles:
            problems.append(
                ConfigProblem(
                    str(path),
                    "name",
                    f"profile name {profile.name!r} is already used by {sources[profile.name]}",
                )
            )
            continue
        profiles[profile.name] = profile
        sources[profile.name] = path
    if problems:
        raise ConfigError(problems)
    return profiles
