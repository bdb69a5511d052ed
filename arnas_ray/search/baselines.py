"""Random baseline genotypes from the search space, optionally matched in parameter count.

The standard sanity check of a NAS method (Li & Talwalkar 2019; Yu et al. 2020) compares the
searched networks with random ones from the same space, trained and evaluated alike. A random
genotype here follows the DARTS cell rules the search derives with: for each cell type of the
layout, each of the ``steps`` intermediate nodes (node ``j = 2 + i``) takes two *distinct*
inputs among the ``j`` earlier states (``0`` = ``c_{k-2}``, ``1`` = ``c_{k-1}``, then the
earlier nodes), one op per edge drawn uniformly from the search's primitives without
``none``; the cell concatenates its ``steps`` nodes. Inputs are drawn uniformly among the
pairs and listed in increasing order, so equal networks are equal genotypes.

Robustness grows with size, so an unmatched comparison measures size, not search:
:func:`matched_random_genotypes` draws until the retrained network's parameter count is within
``tolerance`` (default +-10%) of a target (rejection sampling: the result is uniform among the
genotypes in that window). :class:`ParamCounter` counts a genotype's
:class:`~arnas_ray.space.Network` parameters exactly without building it (the count is the
genotype-independent rest plus one cached term per edge).

Example:
    >>> from arnas_ray.space import Layout
    >>> lay = Layout.preset("arnas")
    >>> [g.cell_types for g in random_genotypes(2, lay.cell_types, seed=0)] == [lay.cell_types] * 2
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from arnas_ray.space import Genotype, Layout, Network, count_params, get_op
from arnas_ray.space.genotype import CellGenotype
from arnas_ray.space.ops import PRIMITIVES

__all__ = [
    "ParamCounter",
    "genotype_params",
    "matched_random_genotypes",
    "random_genotype",
    "random_genotypes",
]

Rng = np.random.Generator


def _ops(primitives: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(p for p in primitives if p != "none")
    if not ops:
        raise ValueError(f"primitives {tuple(primitives)!r} hold no op besides 'none'")
    return ops


def _random_cell(rng: Rng, ops: Sequence[str], steps: int) -> CellGenotype:
    edges: list[tuple[str, int]] = []
    for i in range(steps):
        inputs = sorted(int(j) for j in rng.choice(2 + i, size=2, replace=False))
        edges.extend((ops[int(rng.integers(len(ops)))], j) for j in inputs)
    return CellGenotype(tuple(edges), tuple(range(2, 2 + steps)))


def random_genotype(cell_types: Sequence[str], primitives: Sequence[str] = PRIMITIVES, *,
                    rng: Rng, steps: int = 4) -> Genotype:
    """One random genotype with a cell per type (module docstring: the DARTS cell rules).

    Args:
        cell_types: the layout's cell types (``Layout.cell_types``: e.g. accurate, robust,
            reduce; or normal, reduce).
        primitives: the op set (``SearchConfig.primitive_names()``); ``none`` is never drawn.
        rng: the numpy generator drawn from.
        steps: intermediate nodes per cell (DARTS: 4).
    """
    ops = _ops(primitives)
    if not cell_types:
        raise ValueError("cell_types must name at least one cell type")
    if steps < 1:
        raise ValueError(f"`steps >= 1` must hold, but got steps={steps!r}")
    return Genotype({t: _random_cell(rng, ops, steps) for t in cell_types})


def random_genotypes(n: int, cell_types: Sequence[str], primitives: Sequence[str] = PRIMITIVES, *,
                     seed: int, steps: int = 4, max_draws: int | None = None) -> list[Genotype]:
    """``n`` distinct random genotypes, reproducible from ``seed``.

    Raises:
        ValueError: ``n < 0``, or fewer than ``n`` distinct genotypes in ``max_draws`` draws
            (default ``100 * n + 100``; only a tiny op set can exhaust it).
    """
    if n < 0:
        raise ValueError(f"`n >= 0` must hold, but got n={n!r}")
    rng = np.random.default_rng(seed)
    out: list[Genotype] = []
    seen: set[Genotype] = set()
    budget = max_draws if max_draws is not None else 100 * n + 100
    for _ in range(budget):
        if len(out) == n:
            break
        g = random_genotype(cell_types, primitives, rng=rng, steps=steps)
        if g not in seen:
            seen.add(g)
            out.append(g)
    if len(out) < n:
        raise ValueError(f"found only {len(out)} distinct random genotypes of {n} in {budget} draws "
                         f"(op set {tuple(primitives)!r}, {steps} nodes)")
    return out


@lru_cache(maxsize=4096)
def _op_params(op: str, width: int, stride: int) -> int:
    return sum(p.numel() for p in get_op(op)(width, stride, True).parameters())


class ParamCounter:
    """Exact parameter count (:func:`~arnas_ray.space.count_params`) of the retrained
    ``Network(genotype, layout, C, num_classes, cells)`` without building it.

    Args:
        layout: the retrained network's layout; C: its base width; num_classes; cells: L;
            in_channels: input channels.

    Example:
        >>> from arnas_ray.space import GENOTYPES
        >>> lay = Layout.preset("arnas")
        >>> count = ParamCounter(lay, C=8, num_classes=10, cells=5)
        >>> count(GENOTYPES["ARNAS"]) == count_params(Network(GENOTYPES["ARNAS"], lay, 8, 10, 5))
        True
    """

    def __init__(self, layout: Layout, C: int, num_classes: int, cells: int, *, in_channels: int = 3):
        self.layout, self.C, self.num_classes, self.cells, self.in_channels = layout, C, num_classes, cells, in_channels
        self.plan = layout.plan(cells, C)
        reference = random_genotype(layout.cell_types, rng=np.random.default_rng(0))
        self._rest = self._build(reference) - self._edges(reference)

    def _build(self, genotype: Genotype) -> int:
        return count_params(Network(genotype, self.layout, self.C, self.num_classes, self.cells,
                                    in_channels=self.in_channels))

    def _edges(self, genotype: Genotype) -> int:
        total = 0
        for p in self.plan:
            for op, j in genotype[p.cell_type].edges:
                total += _op_params(op, p.width, 2 if p.reduction and j < 2 else 1)
        return total

    def __call__(self, genotype: Genotype) -> int:
        if any(len(genotype[t].concat) != 4 for t in self.layout.cell_types):
            return self._build(genotype)  # another cell output width: count it the slow way
        return self._rest + self._edges(genotype)

    def bounds(self, primitives: Sequence[str] = PRIMITIVES, steps: int = 4) -> tuple[int, int]:
        """The smallest and largest count of any genotype of the space (4-node cells)."""
        ops = _ops(primitives)
        lo = hi = self._rest
        for t in self.layout.cell_types:
            cells = [p for p in self.plan if p.cell_type == t]

            def cost(op: str, j: int, cells: list[Any] = cells) -> int:  # the edge over all cells of type t
                return sum(_op_params(op, p.width, 2 if p.reduction and j < 2 else 1) for p in cells)

            for i in range(steps):
                ends = [(min(cost(o, j) for o in ops), max(cost(o, j) for o in ops)) for j in range(2 + i)]
                pairs = [(a, b) for a in range(2 + i) for b in range(a + 1, 2 + i)]
                lo += min(ends[a][0] + ends[b][0] for a, b in pairs)
                hi += max(ends[a][1] + ends[b][1] for a, b in pairs)
        return lo, hi


def genotype_params(genotype: Genotype, layout: Layout, C: int, num_classes: int, cells: int, *,
                    in_channels: int = 3) -> int:
    """Parameter count of the retrained network of ``genotype`` (see :class:`ParamCounter`)."""
    return ParamCounter(layout, C, num_classes, cells, in_channels=in_channels)(genotype)


def matched_random_genotypes(n: int, target_params: int, *, layout: Layout, C: int, num_classes: int, cells: int,
                             seed: int, primitives: Sequence[str] = PRIMITIVES, in_channels: int = 3,
                             tolerance: float = 0.1, max_draws: int = 20_000) -> list[Genotype]:
    """``n`` distinct random genotypes whose retrained networks have ``target_params`` +- ``tolerance``.

    Args:
        n: how many.
        target_params: the parameter count to match (e.g. :func:`genotype_params` of a searched
            genotype in the retrain config's layout, C, cells and classes).
        layout, C, num_classes, cells, in_channels: the retrained network.
        seed: seeds the draws (same arguments, same genotypes).
        primitives: the search's op set (``none`` is never drawn).
        tolerance: relative window, ``|params / target - 1| <= tolerance``.
        max_draws: genotypes drawn at most.

    Raises:
        ValueError: bad arguments; no genotype of the space has a count in the window (the
            message gives the space's range); or fewer than ``n`` were found in ``max_draws``.
    """
    if n < 0 or target_params <= 0 or not 0 < tolerance < 1 or max_draws < 1:
        raise ValueError(f"need n >= 0, target_params > 0, 0 < tolerance < 1 and max_draws >= 1; got n={n}, "
                         f"target_params={target_params}, tolerance={tolerance}, max_draws={max_draws}")
    if n == 0:
        return []
    counter = ParamCounter(layout, C, num_classes, cells, in_channels=in_channels)
    lo, hi = target_params * (1 - tolerance), target_params * (1 + tolerance)
    smallest, largest = counter.bounds(primitives)
    if largest < lo or smallest > hi:
        raise ValueError(f"no genotype of this space has {target_params:,} +- {tolerance:.0%} parameters: at "
                         f"C={C}, {cells} cells and layout {layout.name!r} the counts span "
                         f"{smallest:,}..{largest:,}; match at another width or retrain config")
    rng = np.random.default_rng(seed)
    out: list[Genotype] = []
    drawn = (float("inf"), float("-inf"))
    for _ in range(max_draws):
        g = random_genotype(layout.cell_types, primitives, rng=rng)
        k = counter(g)
        drawn = (min(drawn[0], k), max(drawn[1], k))
        if lo <= k <= hi and g not in out:  # n is small: a list keeps the draw order
            out.append(g)
            if len(out) == n:
                return out
    raise ValueError(f"found {len(out)} of {n} random genotypes with {target_params:,} +- {tolerance:.0%} parameters "
                     f"in {max_draws} draws (drawn counts {drawn[0]:,}..{drawn[1]:,}; the space spans "
                     f"{smallest:,}..{largest:,}); raise max_draws or tolerance")
