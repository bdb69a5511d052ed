"""Non-dominated sorting and Pareto-front selection as plain numpy functions (optuna style).

Conventions: ``values`` is an ``[n, k]`` array of objective values and ``directions`` names,
per objective, ``"max"`` or ``"min"``. A row dominates another when it is at least as good in
every objective and strictly better in one; identical rows do not dominate each other, so
duplicates share a rank. A row with a NaN is on no front: its mask entry is ``False`` and its
rank is :data:`NAN_RANK` (``-1``).

Two objectives use a sort and a sweep, ``O(n log n)``; more objectives use optuna's
lexicographic peeling on unique rows, ``O(n * f * k)`` per front of size ``f``.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from arnas_ray.errors import ArnasError

__all__ = [
    "DIRECTIONS",
    "NAN_RANK",
    "crowding_distance",
    "nondominated_mask",
    "pareto_ranks",
    "rank_rows",
    "select_front",
]

DIRECTIONS: tuple[str, ...] = ("max", "min")
NAN_RANK = -1
"""Rank given to rows with a NaN objective (they are on no front)."""


class _ObjectiveError(ArnasError, ValueError):
    pass


def _as_minimization(values: np.ndarray | Sequence[Sequence[float]],
                     directions: Sequence[str]) -> np.ndarray:
    """Return a float ``[n, k]`` copy where smaller is better in every column."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(directions) == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise _ObjectiveError(f"values must be an [n, k] array, got shape {arr.shape}")
    if isinstance(directions, str):
        raise _ObjectiveError(f"directions must be a sequence such as ('max', 'min'), got "
                              f"{directions!r}")
    if len(directions) != arr.shape[1]:
        raise _ObjectiveError(
            f"got {len(directions)} direction(s) {list(directions)} for {arr.shape[1]} objective(s)"
        )
    signs = np.empty(arr.shape[1])
    for j, d in enumerate(directions):
        if d not in DIRECTIONS:
            raise _ObjectiveError(f"directions[{j}]: unknown value {d!r}; expected one of "
                                  f"{DIRECTIONS}")
        signs[j] = -1.0 if d == "max" else 1.0
    return arr * signs


def _mask_2d(loss: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite-or-inf ``[n, 2]`` minimization values (no NaN)."""
    n = len(loss)
    order = np.lexsort((loss[:, 1], loss[:, 0]))  # by f0, then f1
    f0, f1 = loss[order, 0], loss[order, 1]
    # Start index of each group of equal f0 (the group's best f1 is its first element).
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = f0[1:] != f0[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    prefix_min = np.minimum.accumulate(f1)
    # best_before: best f1 among rows with strictly smaller f0 (none for the first group).
    first_group = group_start == 0
    best_before = prefix_min[np.maximum(group_start - 1, 0)]
    on_front = (f1 == f1[group_start]) & (first_group | (f1 < best_before))
    mask = np.zeros(n, dtype=bool)
    mask[order] = on_front
    return mask


def _mask_nd(loss: np.ndarray) -> np.ndarray:
    """Non-dominated mask for any k (optuna's ``_is_pareto_front_nd`` on unique rows)."""
    unique, inverse = np.unique(loss, axis=0, return_inverse=True)  # lexsorted unique rows
    inverse = inverse.reshape(-1)
    remaining = np.arange(len(unique))
    rest = unique
    on_front = np.zeros(len(unique), dtype=bool)
    while len(rest):
        # The lexicographically first remaining row is dominated by no remaining row.
        on_front[remaining[0]] = True
        # Keep rows better than it somewhere; rows never better (unique) are dominated.
        keep = np.any(rest < rest[0], axis=1)
        rest, remaining = rest[keep], remaining[keep]
    return on_front[inverse]


def nondominated_mask(values: np.ndarray | Sequence[Sequence[float]],
                      directions: Sequence[str]) -> np.ndarray:
    """Mark the rows of ``values`` that no other row dominates.

    Args:
        values: ``[n, k]`` objective values.
        directions: ``"max"`` or ``"min"`` per objective.

    Returns:
        ``[n]`` bool array; ``True`` on the first front. Rows with a NaN are ``False``.

    Raises:
        ValueError: bad shape or an unknown direction (named).

    Example:
        >>> nondominated_mask([[0.9, 0.4], [0.8, 0.5], [0.7, 0.3]], ("max", "max")).tolist()
        [True, True, False]
    """
    loss = _as_minimization(values, directions)
    n, k = loss.shape
    mask = np.zeros(n, dtype=bool)
    valid = ~np.isnan(loss).any(axis=1)
    if not valid.any():
        return mask
    sub = loss[valid]
    if k == 1:
        mask[valid] = sub[:, 0] == sub[:, 0].min()
    elif k == 2:
        mask[valid] = _mask_2d(sub)
    else:
        mask[valid] = _mask_nd(sub)
    return mask


def _ranks_2d(loss: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of ``[n, 2]`` minimization values in ``O(n log n)``.

    Rows are visited in lexicographic order, so every dominator of a row is visited before
    it. Each front keeps its last row; the fronts' last f1 values are non-decreasing, so a
    binary search finds the first front with no dominator of the row (a front's last row is
    its best in f1). A row equal to the last row of a front joins that front.
    """
    order = np.lexsort((loss[:, 1], loss[:, 0]))
    f0 = loss[order, 0].tolist()
    f1 = loss[order, 1].tolist()
    last0: list[float] = []
    last1: list[float] = []
    ranks_sorted = np.empty(len(order), dtype=np.int64)
    for i, (a, b) in enumerate(zip(f0, f1)):
        r = bisect.bisect_right(last1, b)
        if r > 0 and last1[r - 1] == b and last0[r - 1] == a:
            r -= 1  # duplicate of that front's last row: not dominated by it
        if r == len(last1):
            last0.append(a)
            last1.append(b)
        else:
            last0[r] = a
            last1[r] = b
        ranks_sorted[i] = r
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = ranks_sorted
    return ranks


def pareto_ranks(values: np.ndarray | Sequence[Sequence[float]],
                 directions: Sequence[str]) -> np.ndarray:
    """Non-dominated sorting: rank 0 is the front, rank 1 the front of the rest, and so on.

    Args:
        values: ``[n, k]`` objective values.
        directions: ``"max"`` or ``"min"`` per objective.

    Returns:
        ``[n]`` int64 ranks; :data:`NAN_RANK` (-1) for rows with a NaN.

    Example:
        >>> pareto_ranks([[0.9, 0.4], [0.8, 0.5], [0.7, 0.3]], ("max", "max")).tolist()
        [0, 0, 1]
    """
    loss = _as_minimization(values, directions)
    n, k = loss.shape
    ranks = np.full(n, NAN_RANK, dtype=np.int64)
    valid = np.flatnonzero(~np.isnan(loss).any(axis=1))
    if len(valid) == 0:
        return ranks
    sub = loss[valid]
    if k == 2:
        ranks[valid] = _ranks_2d(sub)
        return ranks
    unique, inverse = np.unique(sub, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    unique_ranks = np.full(len(unique), NAN_RANK, dtype=np.int64)
    remaining = np.arange(len(unique))
    rank = 0
    while len(remaining):
        if k == 1:
            front = unique[remaining, 0] == unique[remaining, 0].min()
        else:
            front = _mask_nd(unique[remaining])
        unique_ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    ranks[valid] = unique_ranks[inverse]
    return ranks


def crowding_distance(values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """NSGA-II crowding distance of the rows of one front (larger is more isolated).

    The extremes of each objective get ``inf``; an objective with no spread adds nothing.
    """
    arr = np.asarray(values, dtype=np.float64)
    n = len(arr)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(arr.shape[1]):
        order = np.argsort(arr[:, j], kind="stable")
        col = arr[order, j]
        span = col[-1] - col[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def _objective_values(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    missing = [c for c in objectives if c not in df.columns]
    if missing:
        raise _ObjectiveError(f"unknown objective column(s) {missing}; columns are "
                              f"{list(df.columns)}")
    cols = [pd.to_numeric(df[c], errors="coerce").astype("float64").to_numpy() for c in objectives]
    return np.stack(cols, axis=1) if cols else np.empty((len(df), 0))


def rank_rows(df: pd.DataFrame, objectives: Mapping[str, str],
              *, per_stage: bool = True) -> pd.DataFrame:
    """Return a copy of a results frame with ``pareto_rank`` filled in.

    Only rows with ``status == "finished"`` and all objectives present are ranked (per stage
    when ``per_stage``); every other row gets a null rank.
    """
    out = df.copy()
    ranks = pd.array([pd.NA] * len(out), dtype="Int64")
    finished = (out["status"] == "finished").to_numpy(dtype=bool) if "status" in out else (
        np.ones(len(out), dtype=bool))
    groups = out.groupby("stage", sort=False).indices if per_stage and "stage" in out else {
        None: np.arange(len(out))}
    for idx in groups.values():
        idx = np.asarray(idx)
        idx = idx[finished[idx]]
        if len(idx) == 0:
            continue
        r = pareto_ranks(_objective_values(out.iloc[idx], objectives), list(objectives.values()))
        ok = r >= 0
        ranks[idx[ok]] = r[ok]
    out["pareto_rank"] = ranks
    return out


def _canonical_json(text: object) -> object:
    if not isinstance(text, str):
        return None
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


def _check_front_args(df: pd.DataFrame, objectives: Mapping[str, str], top_k: int | None, tie_break: str) -> None:
    if not objectives:
        raise _ObjectiveError("objectives must name at least one column")
    if top_k is not None and top_k < 1:
        raise _ObjectiveError(f"`top_k >= 1` must hold, but got top_k={top_k!r}")
    if tie_break not in df.columns:
        raise _ObjectiveError(f"unknown tie_break column {tie_break!r}; columns are {list(df.columns)}")


def _dedup(front: pd.DataFrame, dedup_on: Sequence[str]) -> pd.DataFrame:
    """One row per architecture (the first in the front's order); null keys stay distinct."""
    missing = [c for c in dedup_on if c not in front.columns]
    if missing:
        raise _ObjectiveError(f"unknown dedup_on column(s) {missing}")
    keys = pd.DataFrame({c: front[c].map(_canonical_json) if c in ("genotype", "config")
                         else front[c].astype(object) for c in dedup_on}, index=front.index)
    # Rows with a null key are distinct architectures we know nothing about: keep them.
    null_key = keys.isna().any(axis=1)
    dup = keys.astype(str).duplicated(keep="first") & ~null_key
    return front[~dup]


def _most_spread(front: pd.DataFrame, objectives: Mapping[str, str], top_k: int) -> pd.DataFrame:
    """The ``top_k`` rows of largest crowding distance (the extremes first)."""
    directions = list(objectives.values())
    front = front.assign(_crowd=crowding_distance(_as_minimization(_objective_values(front, objectives),
                                                                   directions)))
    front = front.sort_values(["_crowd", "_first", "_tie"], ascending=[False, True, True],
                              na_position="last", kind="stable").head(top_k)
    return front.drop(columns="_crowd")


def select_front(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    top_k: int | None = None,
    tie_break: str = "params",
    *,
    dedup_on: Sequence[str] = ("genotype",),
) -> pd.DataFrame:
    """Select the non-dominated finished rows of a results frame.

    Steps: keep ``status == "finished"`` rows with every objective present (failed, running
    and pending rows are ignored); keep the non-dominated ones; among rows with the same
    ``dedup_on`` values (by default the same genotype JSON, compared after canonicalising the
    JSON) keep one, the one with the smaller ``tie_break`` value (fewer params), then the
    better first objective, then the smaller ``trial_id``; finally, if ``top_k`` is given
    and smaller than the front, keep the ``top_k`` rows of largest NSGA-II crowding distance
    (the extremes of each objective first), ties broken by the first objective, then
    ``tie_break`` ascending.

    The returned rows are ordered by the first objective, best first, then by ``tie_break``
    ascending (nulls last), then by ``trial_id``; ``pareto_rank`` is set to 0.

    Args:
        df: a results frame (one stage, usually).
        objectives: ordered mapping column -> ``"max"`` or ``"min"``, e.g.
            ``{"nat_acc": "max", "pgd_acc": "max"}``.
        top_k: at most this many rows (``None``: the whole front).
        tie_break: column where smaller wins ties (default ``"params"``).
        dedup_on: columns that identify the same architecture; ``()`` keeps duplicates.

    Returns:
        The selected rows (a copy, original index kept).

    Raises:
        ValueError: an unknown objective column or direction, ``top_k < 1``.
    """
    _check_front_args(df, objectives, top_k, tie_break)
    directions = list(objectives.values())
    names = list(objectives)
    finished = df[df["status"] == "finished"] if "status" in df.columns else df
    values = _objective_values(finished, objectives)
    front = finished[nondominated_mask(values, directions)].copy()
    if front.empty:
        return front.assign(pareto_rank=pd.array([], dtype="Int64"))
    sign = -1.0 if directions[0] == "max" else 1.0
    front["_first"] = sign * pd.to_numeric(front[names[0]], errors="coerce").astype("float64")
    front["_tie"] = pd.to_numeric(front[tie_break], errors="coerce").astype("float64")
    front = front.sort_values(["_tie", "_first", "trial_id"] if "trial_id" in front else
                              ["_tie", "_first"], na_position="last", kind="stable")
    if dedup_on:
        front = _dedup(front, dedup_on)
    if top_k is not None and len(front) > top_k:
        front = _most_spread(front, objectives, top_k)
    by = ["_first", "_tie"] + (["trial_id"] if "trial_id" in front else [])
    front = front.sort_values(by, na_position="last", kind="stable")
    front = front.drop(columns=["_first", "_tie"])
    front["pareto_rank"] = pd.array([0] * len(front), dtype="Int64")
    return front
