"""Decoders for sensors that publish JSON over MQTT: named fields to numbers, or a typed error."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from sensors.errors import IlmaError

# A sensor message is a few fields; anything larger is not a sensor talking.
MAX_PAYLOAD_BYTES = 16_384


class PayloadError(IlmaError, ValueError):
    """A sensor payload that does not hold what its mapping says."""


class Decoded(NamedTuple):
    values: dict[str, float]  # by the mapping's keys
    t: float | None  # the sensor's own timestamp (epoch s), if the mapping names one


def field_at(doc: object, path: str) -> object:
    """The value at a dotted path ('counts.in') in a JSON document, or PayloadError."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PayloadError(f"no field {path!r}")
        node = node[part]
    return node


def _number(value: object, path: str) -> float:
    # bool is an int in Python, but `true` is not a count.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"field {path!r} is not a number: {value!r}"[:120])
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise PayloadError(f"field {path!r} is not finite")
    return x


def decode_fields(
    payload: bytes, fields: Mapping[str, str], time_field: str | None = None
) -> Decoded:
    """The mapped fields of a JSON object payload, e.g. {"people_in": "in"} on {"in": 12}.

    Every mapped field must be present and numeric; a payload that fails any of that raises
    PayloadError (and nothing else), so a caller can count it and drop it.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes is larger than a sensor sends")
    try:
        doc: Any = json.loads(payload)
    except (ValueError, TypeError, RecursionError) as exc:
        raise PayloadError(f"not JSON: {exc}"[:160]) from None
    if not isinstance(doc, dict):
        raise PayloadError("not a JSON object")
    values = {key: _number(field_at(doc, path), path) for key, path in fields.items()}
    t = None if time_field is None else _number(field_at(doc, time_field), time_field)
    return Decoded(values, t)
