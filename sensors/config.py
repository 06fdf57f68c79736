"""Config plumbing shared by every TOML file ilma reads: errors naming file and key, names, models.

Sites, gateways, controllers and device profiles are each validated once at the boundary into
frozen pydantic models; a bad file raises ConfigError listing every problem at once, each with the
file, the key path and what was expected.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensors.errors import IlmaError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file: where, and what was expected."""

    source: str
    loc: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.loc}: {self.message}"
            if self.loc
            else (f"{self.source}: {self.message}")
        )


class ConfigError(IlmaError, ValueError):
    """A config file that cannot be used; `problems` lists every problem, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


# Names end up in MQTT topics, metric labels and file names: no spaces, slashes, '+' or '#'.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class FrozenModel(BaseModel):
    """Base of every config model: immutable, and an unknown key is an error (a typo)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document, or ConfigError naming the file, line and column."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"not valid TOML: {exc}")]) from exc


def key_path(loc: Sequence[int | str]) -> str:
    """pydantic's location as the TOML key path a person reads: 'device[2].point.co2.address'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def problem_message(err: Mapping[str, Any]) -> str:
    """A pydantic error's message, said for a person editing a TOML file."""
    msg = str(err["msg"])
    if err["type"] == "string_pattern_mismatch" and NAME_PATTERN in msg:
        return (
            "expected a name of up to 64 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit (it is used in MQTT topics), got {err['input']!r}"
        )
    if err["type"] == "extra_forbidden":
        return "unknown key (check its spelling; `ilma check` lists the keys in the schema)"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "value_error":
        return msg.removeprefix("Value error, ")
    if "input" in err and err["type"] != "model_type":
        return f"{msg}, got {err['input']!r}"
    return msg


def validation_problems(
    exc: ValidationError,
    source: str,
    where: Callable[[Sequence[int | str]], str] = key_path,
) -> list[ConfigProblem]:
    """Every problem of a failed validation, located by `where` (default: the key path)."""
    problems = []
    errors = exc.errors(include_url=False)
    failed_items = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
    for err in errors:
        # Drop pydantic's union-branch labels ("function-after[...]") from the key path.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if err["type"] == "too_short" and loc in failed_items:
            continue  # "needs at least one item" only because the items themselves failed
        problems.append(ConfigProblem(source, where(loc), problem_message(err)))
    return problems


def parse_model(model: type[M], raw: Mapping[str, Any], source: str) -> M:
    """`raw` validated as `model`, or ConfigError with every problem, each naming `source`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, source)) from None
