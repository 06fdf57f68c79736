"""concat_rows: lanes of frozen dataclasses of arrays placed side by side, index fields shifted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sensors.arrays import FloatArray, IntArray, concat_rows


@dataclass(frozen=True, slots=True)
class Zones:
    volume_m3: FloatArray
    ahu: IntArray  # row index into the AHU arrays of the same lane
    floor: IntArray  # a label, not an index: never shifted


def zones(volume: list[float], ahu: list[int], floor: list[int]) -> Zones:
    return Zones(np.array(volume), np.array(ahu, dtype=np.int64), np.array(floor, dtype=np.int64))


def test_every_field_is_concatenated_and_only_the_named_index_fields_shift() -> None:
    a = zones([10.0, 20.0], [0, 1], [1, 2])
    b = zones([30.0, 40.0, 50.0], [0, 0, 1], [1, 1, 3])
    out = concat_rows([a, b], shift={"ahu": [0, 2]})  # lane a has 2 AHUs
    assert type(out) is Zones
    np.testing.assert_array_equal(out.volume_m3, [10.0, 20.0, 30.0, 40.0, 50.0])
    np.testing.assert_array_equal(out.ahu, [0, 1, 2, 2, 3])
    np.testing.assert_array_equal(out.floor, [1, 2, 1, 1, 3])
    assert out.volume_m3.dtype == np.float64
    assert out.ahu.dtype == np.int64


def test_three_lanes_shift_by_their_own_offsets_and_inputs_are_left_alone() -> None:
    lanes = [zones([1.0], [0], [0]), zones([2.0, 3.0], [1, 0], [0, 0]), zones([4.0], [0], [0])]
    out = concat_rows(lanes, shift={"ahu": [0, 1, 3], "floor": [0, 10, 20]})
    np.testing.assert_array_equal(out.ahu, [0, 2, 1, 3])
    np.testing.assert_array_equal(out.floor, [0, 10, 10, 20])
    np.testing.assert_array_equal(out.volume_m3, [1.0, 2.0, 3.0, 4.0])
    # The lanes keep their own indices: concatenation must not shift them in place.
    np.testing.assert_array_equal(lanes[1].ahu, [1, 0])
    np.testing.assert_array_equal(lanes[2].floor, [0])


def test_without_shift_rows_are_only_concatenated() -> None:
    a = zones([1.0], [0], [5])
    b = zones([2.0], [0], [6])
    out = concat_rows([a, b])
    np.testing.assert_array_equal(out.ahu, [0, 0])
    np.testing.assert_array_equal(out.floor, [5, 6])


def test_a_single_lane_comes_back_equal() -> None:
    a = zones([1.0, 2.0], [0, 1], [3, 4])
    out = concat_rows([a], shift={"ahu": [0]})
    for name in ("volume_m3", "ahu", "floor"):
        np.testing.assert_array_equal(getattr(out, name), getattr(a, name))


def test_a_shift_that_does_not_name_one_offset_per_lane_is_an_error() -> None:
    a = zones([1.0], [0], [0])
    with pytest.raises(ValueError, match="zip"):
        concat_rows([a, a], shift={"ahu": [0]})
