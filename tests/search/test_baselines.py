"""Random baseline genotypes: the DARTS cell rules, seeding, layouts and widths, exact parameter
counts and parameter matching within +-10%."""

from __future__ import annotations

import pytest
import torch

from arnas_ray.search.baselines import (
    ParamCounter,
    genotype_params,
    matched_random_genotypes,
    random_genotype,
    random_genotypes,
)
from arnas_ray.space import (
    DARTS_PRIMITIVES,
    GENOTYPES,
    PRIMITIVES,
    Genotype,
    Layout,
    Network,
    count_params,
)
from arnas_ray.space.genotype import CellGenotype


def _check_rules(g: Genotype, cell_types, primitives) -> None:
    assert g.cell_types == tuple(cell_types)
    for ctype in cell_types:
        cell = g[ctype]
        assert cell.steps == 4 and cell.concat == (2, 3, 4, 5)
        for i in range(4):
            (op_a, a), (op_b, b) = cell.edges[2 * i: 2 * i + 2]
            assert 0 <= a < b < 2 + i  # two distinct earlier states, in increasing order
            assert op_a in primitives and op_b in primitives and "none" not in (op_a, op_b)


@pytest.mark.parametrize("preset", ["arnas", "darts", "all-robust"])
def test_random_genotypes_follow_the_cell_rules_of_the_layout(preset):
    layout = Layout.preset(preset)
    genotypes = random_genotypes(20, layout.cell_types, seed=5)
    assert len(set(genotypes)) == 20
    for g in genotypes:
        _check_rules(g, layout.cell_types, PRIMITIVES)
    ops = {op for g in genotypes for t in g.cell_types for op, _ in g[t].edges}
    assert ops == set(PRIMITIVES)  # every op of the set is drawn, none other
    inputs = {j for g in genotypes for op, j in g["reduce"].edges[6:]}
    assert inputs == {0, 1, 2, 3, 4}  # the last node draws from every earlier state
    net = Network(genotypes[0], layout, C=4, num_classes=10, cells=5)
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 10)


def test_the_darts_op_set_never_draws_none():
    genotypes = random_genotypes(30, ("normal", "reduce"), DARTS_PRIMITIVES, seed=0)
    for g in genotypes:
        _check_rules(g, ("normal", "reduce"), DARTS_PRIMITIVES)
    with pytest.raises(ValueError, match="no op besides 'none'"):
        random_genotypes(1, ("normal",), ("none",), seed=0)


def test_random_genotypes_are_reproducible_from_the_seed():
    types = Layout.preset("arnas").cell_types
    assert random_genotypes(4, types, seed=11) == random_genotypes(4, types, seed=11)
    assert random_genotypes(4, types, seed=11) != random_genotypes(4, types, seed=12)
    assert random_genotypes(6, types, seed=11)[:4] == random_genotypes(4, types, seed=11)  # a prefix
    with pytest.raises(ValueError, match="distinct"):  # one op, one node: 1 distinct cell
        random_genotypes(2, ("normal",), ("skip_connect",), seed=0, steps=1)


@pytest.mark.parametrize(("preset", "C", "cells"), [("arnas", 8, 5), ("arnas", 4, 3), ("darts", 6, 4),
                                                    ("robust-first", 8, 8)])
def test_param_counter_is_exact(preset, C, cells):
    layout = Layout.preset(preset)
    count = ParamCounter(layout, C, 10, cells, in_channels=1)
    named = [g for g in GENOTYPES.values() if set(layout.cell_types) <= set(g.cell_types)]
    for g in random_genotypes(6, layout.cell_types, seed=C) + named:
        assert count(g) == count_params(Network(g, layout, C, 10, cells, in_channels=1))
    lo, hi = count.bounds()
    light = Genotype({t: CellGenotype(tuple(("max_pool_3x3", j) for j in (0, 1) * 4), (2, 3, 4, 5))
                      for t in layout.cell_types})
    heavy = Genotype({t: CellGenotype(tuple(("sep_conv_5x5", j) for j in (0, 1) * 4), (2, 3, 4, 5))
                      for t in layout.cell_types})
    assert (count(light), count(heavy)) == (lo, hi)  # pools weigh nothing; sep_conv_5x5 is the heaviest
    short = Genotype({t: CellGenotype(light[t].edges, (4, 5)) for t in layout.cell_types})
    assert count(short) == count_params(Network(short, layout, C, 10, cells, in_channels=1))


def test_matched_random_genotypes_are_within_ten_percent_and_seeded():
    layout = Layout.preset("arnas")
    target = genotype_params(GENOTYPES["ARNAS"], layout, 8, 10, 5)
    kw = dict(layout=layout, C=8, num_classes=10, cells=5)
    matched = matched_random_genotypes(6, target, seed=3, **kw)
    assert len(set(matched)) == 6
    for g in matched:
        _check_rules(g, layout.cell_types, PRIMITIVES)
        assert abs(count_params(Network(g, layout, 8, 10, 5)) / target - 1) <= 0.1
    assert matched == matched_random_genotypes(6, target, seed=3, **kw)
    assert matched != matched_random_genotypes(6, target, seed=4, **kw)
    assert matched_random_genotypes(0, target, seed=3, **kw) == []
    narrow = matched_random_genotypes(2, target, seed=3, tolerance=0.02, **kw)
    assert all(abs(genotype_params(g, layout, 8, 10, 5) / target - 1) <= 0.02 for g in narrow)


def test_matching_an_impossible_count_fails_clearly():
    kw = dict(layout=Layout.preset("arnas"), C=8, num_classes=10, cells=5, seed=0)
    with pytest.raises(ValueError, match=r"no genotype of this space has 10,000,000 \+- 10% parameters.*span"):
        matched_random_genotypes(1, 10_000_000, **kw)
    with pytest.raises(ValueError, match="no genotype"):
        matched_random_genotypes(1, 1_000, **kw)
    lo, hi = ParamCounter(kw["layout"], 8, 10, 5).bounds()
    with pytest.raises(ValueError, match=r"found 0 of 1 .* in 20 draws.*raise max_draws"):
        matched_random_genotypes(1, hi, tolerance=1e-6, max_draws=20, **kw)  # reachable, but not in 20 draws
    with pytest.raises(ValueError, match="tolerance"):
        matched_random_genotypes(1, lo, tolerance=1.5, **kw)


def test_random_genotype_uses_the_given_generator():
    import numpy as np

    a = random_genotype(("normal", "reduce"), rng=np.random.default_rng(9))
    b = random_genotype(("normal", "reduce"), rng=np.random.default_rng(9))
    assert a == b and a.cell_types == ("normal", "reduce")
