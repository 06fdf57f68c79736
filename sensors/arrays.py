"""Array type aliases shared by the pure core: one row per zone, NaN meaning missing."""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]


# The index of an elementwise stage (see controller.law): every row at once (numpy) or, compiled
# by numba, one row.
Index = int | slice
ALL = slice(None)
# A value in an elementwise stage: an array (numpy backend) or, compiled by numba, a scalar.
Elem = Any

T = TypeVar("T")


def concat_rows(items: Sequence[T], shift: Mapping[str, Sequence[int]] | None = None) -> T:
    """Concatenate NamedTuples or frozen dataclasses of arrays row-wise (lanes side by side).

    shift : per index field, the offset to add to each item's values (e.g. AHU row indices of
    lane k move past the AHUs of lanes 0..k-1).
    """
    shift = shift or {}
    first = items[0]
    names = (
        first._fields if hasattr(first, "_fields") else [f.name for f in dataclasses.fields(first)]  # type: ignore[arg-type]
    )
    values = {}
    for name in names:
        parts = [getattr(item, name) for item in items]
        if name in shift:
            parts = [p + off for p, off in zip(parts, shift[name], strict=True)]
        values[name] = np.concatenate(parts)
    return type(first)(**values)
