"""Exact hypervolume of a point set, for any number of objectives.

The hypervolume is the measure of the region dominated by the points and bounded by a
reference point. Two objectives use a sort and a sweep (``O(n log n)``); more objectives use
HSO-style slicing along the last objective, recursing down to the 2-D sweep (exact;
``O(n^(k-1) log n)``, fine for Pareto fronts of hundreds of points).

Default reference point: for objectives that are all maximised (accuracies in ``[0, 1]``),
``reference=None`` means the origin, ``(0, 0, ...)``. Minimised objectives have no natural
bound, so a reference must then be given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arnas_ray.results.pareto import _as_minimization, nondominated_mask

__all__ = [
    "hypervolume",
]


def _hv_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by ``[n, 2]`` minimisation points that all strictly dominate ``ref``."""
    order = np.lexsort((points[:, 1], points[:, 0]))  # x ascending, then y
    x, y = points[order, 0], points[order, 1]
    # Each point adds the strip [x, ref_x] x [y, lowest y seen so far].
    prev = np.minimum.accumulate(np.concatenate(([ref[1]], y)))[:-1]
    return float(np.sum((ref[0] - x) * np.clip(prev - y, 0.0, None)))


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    n, k = points.shape
    if n == 0:
        return 0.0
    if k == 1:
        return float(ref[0] - points[:, 0].min())
    if k == 2:
        return _hv_2d(points, ref)
    points = points[nondominated_mask(points, ["min"] * k)]
    points = np.unique(points, axis=0)
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    z = points[:, -1]
    total = 0.0
    for i in range(len(points)):
        top = z[i + 1] if i + 1 < len(points) else ref[-1]
        depth = top - z[i]
        if depth <= 0:
            continue  # the next point has the same last coordinate: slice later
        # Slab [z_i, top): every point with last coordinate <= z_i is active.
        total += _hv(points[: i + 1, :-1], ref[:-1]) * depth
    return total


def hypervolume(
    values: np.ndarray | Sequence[Sequence[float]],
    directions: Sequence[str],
    reference: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Exact hypervolume dominated by ``values`` with respect to ``reference``.

    Rows with a NaN are ignored, and so are rows that do not strictly beat the reference in
    every objective (they add no volume).

    Args:
        values: ``[n, k]`` objective values.
        directions: ``"max"`` or ``"min"`` per objective.
        reference: the bounding point in the original units. ``None`` is allowed only when
            every objective is maximised and then means the origin (accuracies in ``[0, 1]``:
            reference ``(0, 0)``, the largest possible volume being 1).

    Returns:
        The hypervolume (``0.0`` for an empty set).

    Raises:
        ValueError: bad shapes or directions, a missing or non-finite reference.

    Example:
        >>> hypervolume([[0.5, 0.25], [0.25, 0.5]], ("max", "max"))
        0.1875
    """
    loss = _as_minimization(values, directions)
    k = loss.shape[1]
    if reference is None:
        if any(d != "max" for d in directions):
            raise ValueError(
                "reference is required when an objective is minimised; the default (origin) "
                f"only applies when every direction is 'max', got directions={list(directions)}"
            )
        ref_values = np.zeros(k)
    else:
        ref_values = np.asarray(reference, dtype=np.float64).reshape(-1)
        if ref_values.shape != (k,):
            raise ValueError(f"reference must have {k} value(s), got {list(ref_values)}")
        if not np.isfinite(ref_values).all():
            raise ValueError(f"reference must be finite, got {list(ref_values)}")
    ref = _as_minimization(ref_values[None, :], directions)[0]
    valid = ~np.isnan(loss).any(axis=1)
    loss = loss[valid]
    loss = loss[(loss < ref).all(axis=1)]
    if np.isinf(loss).any():
        return float("inf")
    return _hv(loss, ref) if k else 0.0
