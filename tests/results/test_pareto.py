"""Non-dominated sorting against an O(n^2) brute force, and front selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from arnas_ray.results.pareto import (
    NAN_RANK,
    crowding_distance,
    nondominated_mask,
    pareto_ranks,
    rank_rows,
    select_front,
)
from arnas_ray.results.table import normalize_rows

from ._fakes import row


def _brute_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """O(n^2): row i is on the front iff no valid row j is <= everywhere and < somewhere."""
    loss = values * np.array([-1.0 if d == "max" else 1.0 for d in directions])
    valid = ~np.isnan(loss).any(axis=1)
    le = (loss[:, None, :] <= loss[None, :, :]).all(axis=2)  # le[j, i]: j <= i everywhere
    lt = (loss[:, None, :] < loss[None, :, :]).any(axis=2)
    dominates = le & lt & valid[:, None]
    return valid & ~dominates.any(axis=0)


def _brute_ranks(values: np.ndarray, directions: list[str]) -> np.ndarray:
    ranks = np.full(len(values), NAN_RANK)
    remaining = np.flatnonzero(~np.isnan(values).any(axis=1))
    rank = 0
    while len(remaining):
        front = _brute_mask(values[remaining], directions)
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


@st.composite
def point_sets(draw: st.DrawFn, k_values: tuple[int, ...] = (2, 3)) -> tuple[np.ndarray, list]:
    k = draw(st.sampled_from(k_values))
    n = draw(st.integers(0, 40))
    # Few distinct values so ties and exact duplicates are frequent.
    elements = st.one_of(st.integers(0, 4).map(float), st.just(float("nan")),
                         st.sampled_from([0.25, -np.inf, np.inf]))
    values = draw(hnp.arrays(np.float64, (n, k), elements=elements))
    duplicates = draw(st.integers(0, 5))
    if n and duplicates:
        values = np.concatenate([values, values[: duplicates]])
    directions = draw(st.lists(st.sampled_from(["max", "min"]), min_size=k, max_size=k))
    return values, directions


@settings(max_examples=200, deadline=None)
@given(point_sets(k_values=(1, 2, 3, 4)))
def test_mask_equals_brute_force(case: tuple[np.ndarray, list]) -> None:
    values, directions = case
    np.testing.assert_array_equal(nondominated_mask(values, directions),
                                  _brute_mask(values, directions))


@settings(max_examples=200, deadline=None)
@given(point_sets(k_values=(1, 2, 3)))
def test_ranks_equal_brute_force(case: tuple[np.ndarray, list]) -> None:
    values, directions = case
    np.testing.assert_array_equal(pareto_ranks(values, directions),
                                  _brute_ranks(values, directions))


def test_ranks_random_continuous_2d_and_3d() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 3):
        values = rng.random((150, k))
        directions = ["max", "min", "max"][:k]
        np.testing.assert_array_equal(pareto_ranks(values, directions),
                                      _brute_ranks(values, directions))


def test_known_small_example_and_nan_rank() -> None:
    values = [[0.9, 0.4], [0.8, 0.5], [0.7, 0.3], [0.9, 0.4], [np.nan, 1.0]]
    assert nondominated_mask(values, ("max", "max")).tolist() == [True, True, False, True, False]
    assert pareto_ranks(values, ("max", "max")).tolist() == [0, 0, 1, 0, NAN_RANK]


@pytest.mark.parametrize(
    ("values", "directions", "pattern"),
    [
        ([[1.0, 2.0]], ("max",), "1 direction"),
        ([[1.0, 2.0]], ("max", "up"), r"directions\[1\].*'up'.*\('max', 'min'\)"),
        ([1.0, 2.0, 3.0], ("max", "max"), "shape"),
    ],
)
def test_bad_inputs_are_named(values: list, directions: tuple, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        nondominated_mask(values, directions)


def test_crowding_distance_extremes_are_infinite() -> None:
    d = crowding_distance([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    assert np.isinf(d[0]) and np.isinf(d[3])
    np.testing.assert_allclose(d[1:3], [4.0 / 3.0, 4.0 / 3.0])


def _frame(rows: list[dict]) -> pd.DataFrame:
    return normalize_rows(rows)


G1 = {"cells": {"n": {"edges": [["skip_connect", 0], ["skip_connect", 1]], "concat": [2]}}}
G2 = {"cells": {"n": {"edges": [["sep_conv_3x3", 0], ["skip_connect", 1]], "concat": [2]}}}
G3 = {"cells": {"n": {"edges": [["dil_conv_3x3", 0], ["skip_connect", 1]], "concat": [2]}}}
OBJ = {"nat_acc": "max", "pgd_acc": "max"}


def test_select_front_ignores_failed_and_unfinished_rows() -> None:
    df = _frame([
        row("search", "ok", nat_acc=0.8, pgd_acc=0.4, params=10, genotype=G1),
        row("search", "failed", status="failed", nat_acc=0.99, pgd_acc=0.99, params=1,
            genotype=G2),
        row("search", "running", status="running", nat_acc=0.95, pgd_acc=0.95, genotype=G3),
        row("search", "nan", nat_acc=0.99, genotype=G3),  # no pgd_acc: on no front
    ])
    front = select_front(df, OBJ)
    assert front["trial_id"].tolist() == ["ok"]
    assert front["pareto_rank"].tolist() == [0]


def test_select_front_breaks_ties_by_params_and_dedups_genotypes() -> None:
    g1_reordered = json.dumps({"cells": {"n": {"concat": [2], "edges": G1["cells"]["n"]["edges"]}}})
    df = _frame([
        row("search", "a-big", nat_acc=0.8, pgd_acc=0.5, params=300, genotype=G1),
        row("search", "a-small", nat_acc=0.8, pgd_acc=0.5, params=100, genotype=g1_reordered),
        row("search", "b", nat_acc=0.9, pgd_acc=0.4, params=500, genotype=G2),
        row("search", "c-big", nat_acc=0.7, pgd_acc=0.6, params=900, genotype=G3),
        row("search", "c-small", nat_acc=0.7, pgd_acc=0.6, params=800, genotype=G2 | {"x": 1}),
        row("search", "dominated", nat_acc=0.6, pgd_acc=0.3, params=1, genotype=G3),
    ])
    front = select_front(df, OBJ)
    # Same genotype JSON (keys in another order) kept once: the one with fewer params.
    assert "a-big" not in front["trial_id"].tolist()
    # Ordered by the first objective, best first, ties by params.
    assert front["trial_id"].tolist() == ["b", "a-small", "c-small", "c-big"]
    no_dedup = select_front(df, OBJ, dedup_on=())
    assert no_dedup["trial_id"].tolist() == ["b", "a-small", "a-big", "c-small", "c-big"]


def test_select_front_top_k_keeps_extremes_first() -> None:
    df = _frame([
        row("search", f"t{i}", nat_acc=0.5 + 0.05 * i, pgd_acc=0.6 - 0.05 * i, params=10 + i)
        for i in range(6)
    ])
    top2 = select_front(df, OBJ, top_k=2)
    assert sorted(top2["trial_id"]) == ["t0", "t5"]  # both extremes of the front
    assert len(select_front(df, OBJ, top_k=3)) == 3
    with pytest.raises(ValueError, match="top_k"):
        select_front(df, OBJ, top_k=0)
    with pytest.raises(ValueError, match="unknown objective"):
        select_front(df, {"accuracy": "max"})


def test_rank_rows_ranks_finished_rows_per_stage() -> None:
    df = _frame([
        row("search", "a", nat_acc=0.8, pgd_acc=0.5),
        row("search", "b", nat_acc=0.7, pgd_acc=0.4),
        row("search", "f", status="failed", nat_acc=0.9, pgd_acc=0.9),
        row("retrain", "a", nat_acc=0.1, pgd_acc=0.1),
    ])
    ranked = rank_rows(df, OBJ)
    assert ranked["pareto_rank"].tolist()[:2] == [0, 1]
    assert pd.isna(ranked["pareto_rank"].iloc[2])
    assert ranked["pareto_rank"].iloc[3] == 0  # alone in its stage
