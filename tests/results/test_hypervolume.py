"""Exact hypervolume against unit-cell counting on integer points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from arnas_ray.results.hypervolume import hypervolume


def _cell_count(values: np.ndarray, directions: list[str], reference: np.ndarray) -> int:
    """Brute force: count the unit cells of the integer grid that some point dominates.

    In minimisation form a cell [c, c+1)^k lies in the dominated region iff it is inside the
    reference box (c + 1 <= ref) and some point p has p <= c in every coordinate.
    """
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    loss, ref = values * sign, reference * sign
    lo = np.floor(np.min(np.vstack([loss, ref[None]]), axis=0)).astype(int)
    hi = ref.astype(int)
    count = 0
    for cell in itertools.product(*[range(a, b) for a, b in zip(lo, hi)]):
        c = np.array(cell, dtype=float)
        if np.any(np.all(loss <= c, axis=1)):
            count += 1
    return count


@st.composite
def integer_sets(draw: st.DrawFn, k: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    n = draw(st.integers(0, 12 if k == 2 else 7))
    values = draw(hnp.arrays(np.float64, (n, k), elements=st.integers(0, 5).map(float)))
    directions = draw(st.lists(st.sampled_from(["max", "min"]), min_size=k, max_size=k))
    # Reference anywhere in the grid: some points beat it, others do not.
    reference = np.array(draw(st.lists(st.integers(0, 5), min_size=k, max_size=k)), float)
    return values, directions, reference


@settings(max_examples=150, deadline=None)
@given(integer_sets(2))
def test_2d_equals_cell_count(case: tuple) -> None:
    values, directions, reference = case
    assert hypervolume(values, directions, reference) == _cell_count(values, directions,
                                                                      reference)


@settings(max_examples=100, deadline=None)
@given(integer_sets(3))
def test_3d_equals_cell_count(case: tuple) -> None:
    values, directions, reference = case
    assert hypervolume(values, directions, reference) == _cell_count(values, directions,
                                                                      reference)


@settings(max_examples=30, deadline=None)
@given(integer_sets(4))
def test_4d_equals_cell_count(case: tuple) -> None:
    values, directions, reference = case
    assert hypervolume(values, directions, reference) == _cell_count(values, directions,
                                                                      reference)


def test_known_values_and_default_reference() -> None:
    # Accuracies maximised: default reference (0, 0); union of two boxes.
    assert hypervolume([[0.5, 0.25], [0.25, 0.5]], ("max", "max")) == pytest.approx(0.1875)
    assert hypervolume([[1.0, 1.0]], ("max", "max")) == 1.0
    assert hypervolume(np.empty((0, 2)), ("max", "max")) == 0.0
    # NaN rows and rows that do not beat the reference add nothing.
    assert hypervolume([[0.5, 0.5], [np.nan, 0.9], [0.9, 0.0]], ("max", "max")) == 0.25
    # 3-D box.
    assert hypervolume([[1.0, 2.0, 3.0]], ("min", "min", "min"), [2, 3, 4]) == 1.0


def test_continuous_2d_matches_inclusion_exclusion() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((5, 2))
    total = 0.0
    for r in range(1, 6):  # inclusion-exclusion over subsets: volume of box intersections
        for subset in itertools.combinations(range(5), r):
            corner = pts[list(subset)].min(axis=0)
            total += (-1) ** (r + 1) * corner.prod()
    assert hypervolume(pts, ("max", "max")) == pytest.approx(total)
    assert hypervolume(pts, ("max", "max", "max")[:2], (0.0, 0.0)) == pytest.approx(total)


def test_reference_errors() -> None:
    with pytest.raises(ValueError, match="reference is required"):
        hypervolume([[1.0, 2.0]], ("max", "min"))
    with pytest.raises(ValueError, match="2 value"):
        hypervolume([[1.0, 2.0]], ("max", "max"), [0.0])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[1.0, 2.0]], ("max", "max"), [0.0, np.inf])
