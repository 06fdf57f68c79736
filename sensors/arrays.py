"""Array type aliases shared by the pure core: one row per zone, NaN meaning missing."""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]


T = TypeVar("T")


def concat_rows(items: Sequence[T], shift: Mapping[str, Sequence[int]] | None = None) -> T:
    """Concatenate frozen dataclasses of arrays row-wise (lanes side by side).

    shift : per index field, the offset to add to each item's values (e.g. AHU row indices of
    lane k move past the AHUs of lanes 0..k-1).
    """
    shift = shift or {}
    first = items[0]
    values = {}
    for f in dataclasses.fields(first):  # type: ignore[arg-type]
        parts = [getattr(item, f.name) for item in items]
        if f.name in shift:
            parts = [p + off for p, off in zip(parts, shift[f.name], strict=True)]
        values[f.name] = np.concatenate(parts)
    return type(first)(**values)
