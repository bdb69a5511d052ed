"""Per-block weights in stacked passes (``_groups.block_params``): one pass of ``g`` batches
stacked along the channels, block ``i`` through its own weight set (and alphas), equals ``g``
separate passes, one per set (logits and gradients, float64, both cell paths, every preset)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from arnas_ray.search._stacked import StackedPasses
from arnas_ray.space import LAYOUT_PRESETS, Layout, Supernet, _fused_cell, _groups, block_params
from arnas_ray.space.supernet import ALPHA_PREFIX, frozen_running_stats


@pytest.fixture(params=["cross-edge", "per-edge"])
def cell_path(request, monkeypatch):
    if request.param == "per-edge":
        monkeypatch.setattr(_fused_cell, "CROSS_EDGE_MAX", 0)
        monkeypatch.setattr(_fused_cell, "REDUCTION_MAX", 0)
    return request.param


def _weight_sets(net, g, seed=1):
    """``g`` different weight sets: the net's own, shifted by seeded noise per set."""
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, _ in net.named_parameters() if not n.startswith(ALPHA_PREFIX)]
    base = [p.detach() for n, p in net.named_parameters() if not n.startswith(ALPHA_PREFIX)]
    sets = [[w + 0.3 * torch.randn(w.shape, generator=gen, dtype=w.dtype) for w in base] for _ in range(g)]
    return names, sets


@pytest.mark.parametrize("own_alphas", [False, True], ids=["shared-alphas", "own-alphas"])
@pytest.mark.parametrize("preset", sorted(LAYOUT_PRESETS))
def test_stacked_pass_with_per_block_weights_equals_separate_passes(preset, own_alphas, cell_path):
    torch.manual_seed(0)
    net = Supernet(Layout.preset(preset), 4, 10, 4).double().train()
    a_names = [f"alphas.{t}" for t in net.arch_parameters()]
    a0 = list(net.arch_parameters().values())
    # block 1's alphas: shared, or a leaf of its own with other values (every op weight differs)
    a1 = [(a.detach() + 0.5 * torch.randn_like(a)).requires_grad_(True) for a in a0] if own_alphas else a0
    names, (w0, w1) = _weight_sets(net, 2)
    gen = torch.Generator().manual_seed(2)
    xs = [torch.rand(3, 3, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    y = torch.randint(0, 10, (3,), generator=gen)
    wrt = a0 + (a1 if own_alphas else []) + xs
    with frozen_running_stats():
        separate = [functional_call(net, {**dict(zip(names, ws)), **dict(zip(a_names, als))}, (x,))
                    for ws, als, x in zip((w0, w1), (a0, a1), xs)]
        loss_sep = F.cross_entropy(separate[0], y) - 2 * F.cross_entropy(separate[1], y)
        g_sep = torch.autograd.grad(loss_sep, wrt, allow_unused=True, materialize_grads=True)
        per_block = [(a, (a, b)) for a, b in zip(w0, w1)] + ([(a, (a, b)) for a, b in zip(a0, a1)] if own_alphas else [])
        with block_params(per_block):
            stacked = functional_call(StackedPasses(net, [], []), {f"net.{n}": w for n, w in zip(names + a_names, w0 + a0)}, (xs,))
        loss_st = F.cross_entropy(stacked[0], y) - 2 * F.cross_entropy(stacked[1], y)
        g_st = torch.autograd.grad(loss_st, wrt, allow_unused=True, materialize_grads=True)
    for a, b in zip(stacked, separate):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert (separate[0] - separate[1]).abs().max() > 1e-3  # the two weight sets do differ
    for a, b in zip(g_st, g_sep):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_blocks_match_by_identity_and_count():
    w, other = torch.ones(2, 3), torch.zeros(2, 3)
    same_values = w.clone()
    assert torch.equal(_groups.rep(w, 2), torch.ones(4, 3))
    with block_params([(w, (w, other))]):
        assert torch.equal(_groups.rep(w, 2), torch.cat([w, other]))
        assert torch.equal(_groups.rep(same_values, 2), torch.ones(4, 3))  # another tensor: repeated
        assert torch.equal(_groups.rep_cat([w, same_values], 2), torch.cat([w, same_values, other, same_values]))
        assert _groups.rep(w, 1) is w
        with pytest.raises(ValueError, match="holds 2 values of a weight, but the pass stacks 3"):
            _groups.rep(w, 3)
    assert torch.equal(_groups.rep(w, 2), torch.ones(4, 3))  # outside: the plain repeat again
