"""Property tests of the min-norm solvers (hypothesis, float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arnas_ray.search import mgda_weights, min_norm_2, min_norm_simplex
from arnas_ray.search.mgda import gradient_scales

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def vectors(draw, k: int = 2, dim_max: int = 6):
    """k float64 vectors of one random dimension, with a random scale each."""
    d = draw(st.integers(1, dim_max))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scales = [draw(st.sampled_from([1e-3, 1.0, 1e3])) for _ in range(k)]
    return [s * torch.randn(d, generator=g, dtype=torch.float64) for s in scales]


def _norm_at(g1, g2, gamma) -> float:
    return float((gamma * g1 + (1 - gamma) * g2).norm())


@SETTINGS
@given(vectors())
def test_min_norm_2_beats_vertices_and_a_fine_grid(gs):
    g1, g2 = gs
    gamma = min_norm_2(g1, g2)
    assert gamma.shape == () and 0.0 <= float(gamma) <= 1.0  # a convex combination
    best = _norm_at(g1, g2, gamma)
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]  # [2001, 1]
    grid_best = float((grid * g1 + (1 - grid) * g2).norm(dim=1).min())
    scale = max(float(g1.norm()), float(g2.norm()))
    assert best <= float(g1.norm()) * (1 + 1e-6) + 1e-12 * scale
    assert best <= float(g2.norm()) * (1 + 1e-6) + 1e-12 * scale
    assert best <= grid_best * (1 + 1e-6) + 1e-12 * scale


@SETTINGS
@given(vectors())
def test_gamma_is_0_or_1_exactly_when_one_gradient_dominates(gs):
    g1, g2 = gs
    a, b, c = g1 @ g1, g1 @ g2, g2 @ g2
    if float((g1 - g2) @ (g1 - g2)) <= 1e-10 * max(float(a), float(c)):
        return  # (numerically) identical gradients: the 0.5 convention, tested below
    gamma = float(min_norm_2(g1, g2))
    if b >= c:  # g2 is the min-norm point
        assert gamma == 0.0
    elif b >= a:  # g1 is
        assert gamma == 1.0
    else:
        assert 0.0 < gamma < 1.0 or min(float(c - b), float(a - b)) <= 1e-9 * max(float(a), float(c))


def test_dominance_examples():
    g = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert float(min_norm_2(3 * g, g)) == 0.0  # g1.g2 = 3 >= g2.g2 = 1
    assert float(min_norm_2(g, 3 * g)) == 1.0
    assert float(min_norm_2(g, torch.tensor([1.0, 1.0], dtype=torch.float64))) == 1.0  # b == a
    assert float(min_norm_2(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_gradients_give_a_finite_half(dtype):
    g = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for g1, g2 in [(g, g.clone()), (torch.zeros(10, dtype=dtype), torch.zeros(10, dtype=dtype))]:
        gamma = min_norm_2(g1, g2)
        assert math.isfinite(float(gamma)) and float(gamma) == 0.5
    # the reference formula divides by zero here
    assert math.isnan(float(torch.dot(g - g, g) / torch.dot(g - g, g - g)))


@SETTINGS
@given(st.integers(3, 5).flatmap(lambda k: vectors(k=k, dim_max=8)))
def test_frank_wolfe_beats_vertices_and_random_simplex_points(gs):
    G = torch.stack(gs)  # [k, d]
    k = G.shape[0]
    w = min_norm_simplex(G)
    assert w.shape == (k,)
    assert bool((w >= 0).all()) and float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    best = float((w @ G).norm())
    scale = float(G.norm(dim=1).max())
    assert best <= float(G.norm(dim=1).min()) * (1 + 1e-6) + 1e-12 * scale
    rng = torch.Generator().manual_seed(k)
    expo = -torch.log(torch.rand(2000, k, generator=rng, dtype=torch.float64))
    points = expo / expo.sum(1, keepdim=True)  # uniform on the simplex, [2000, k]
    points = torch.cat([points, torch.eye(k, dtype=torch.float64)])  # + the vertices
    assert best <= float((points @ G).norm(dim=1).min()) * (1 + 1e-6) + 1e-12 * scale


def test_frank_wolfe_finds_the_known_minimum():
    # three unit vectors at 120 degrees: the origin is in the hull, at equal weights
    G = torch.tensor([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]],
                     dtype=torch.float64)
    w = min_norm_simplex(G)
    assert float((w @ G).norm()) < 1e-6
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_two_objectives_in_simplex_solver_use_the_closed_form():
    g1, g2 = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])
    gamma = min_norm_2(g1, g2)
    assert torch.equal(min_norm_simplex(torch.stack([g1, g2])), torch.stack([gamma, 1 - gamma]))
    assert torch.equal(mgda_weights([g1, g2]), torch.stack([gamma, 1 - gamma]))


@SETTINGS
@given(vectors(), st.floats(1e-3, 1e3))
def test_l2_normalisation_is_invariant_to_rescaling_one_gradient(gs, s):
    g1, g2 = gs
    w = mgda_weights([g1, g2], normalization="l2")
    w_scaled = mgda_weights([g1, s * g2], normalization="l2")
    torch.testing.assert_close(w, w_scaled, atol=1e-9, rtol=0)


@SETTINGS
@given(vectors(), st.floats(1e-3, 1e3))
def test_loss_normalisation_is_invariant_to_rescaling_one_objective(gs, s):
    g1, g2 = gs
    l1, l2 = torch.tensor(0.7, dtype=torch.float64), torch.tensor(2.3, dtype=torch.float64)
    w = mgda_weights([g1, g2], losses=[l1, l2], normalization="loss")
    # objective 2 scaled by s: its gradient and its loss scale alike
    w_scaled = mgda_weights([g1, s * g2], losses=[l1, s * l2], normalization="loss")
    torch.testing.assert_close(w, w_scaled, atol=1e-9, rtol=0)


def test_none_normalisation_is_not_scale_invariant():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert float(mgda_weights([g1, g2])[0]) == 0.5
    assert float(mgda_weights([g1, 0.1 * g2])[0]) < 0.05  # ARNAS's 0.1 is a real weighting


def test_normalisation_scales_and_errors():
    g = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])]
    losses = [torch.tensor(2.0), torch.tensor(-0.5)]
    assert [float(s) for s in gradient_scales(g, None, "none")] == [1.0, 1.0]
    assert [float(s) for s in gradient_scales(g, None, "l2")] == [5.0, 2.0]
    assert [float(s) for s in gradient_scales(g, losses, "loss")] == [2.0, 0.5]
    assert [float(s) for s in gradient_scales(g, losses, "loss+")] == [10.0, 1.0]
    with pytest.raises(ValueError, match="needs one loss per gradient"):
        gradient_scales(g, None, "loss")
    with pytest.raises(ValueError, match="normalization"):
        gradient_scales(g, None, "l1")
