"""``_groups.reused_reps``: frozen weights repeated (and flipped) once per attack, not per pass."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F

from arnas_ray.attacks import frozen_parameters
from arnas_ray.space import Layout, Supernet, _fused_cell, _groups, reused_reps
from arnas_ray.space._groups import rep, reused
from arnas_ray.space.supernet import frozen_running_stats


def test_rep_is_reused_only_for_unchanged_tensors_without_grad():
    w = torch.randn(4, 1, 3, 3)
    assert rep(w, 2) is not rep(w, 2)  # outside the context: computed every time
    with reused_reps():
        a = rep(w, 2)
        assert rep(w, 2) is a and rep(w, 3) is not a  # per (tensor, g)
        torch.testing.assert_close(a, torch.cat([w, w]), rtol=0, atol=0)
        w.add_(1.0)  # changed in place: the version counter moves, the repeat is recomputed
        b = rep(w, 2)
        assert b is not a
        torch.testing.assert_close(b, torch.cat([w, w]), rtol=0, atol=0)
        flips = [reused(w, "flip", lambda u: u.flip(-1, -2)) for _ in range(2)]
        assert flips[0] is flips[1] and flips[0] is not b  # tags are separate entries
        v = torch.randn(4, 1, 3, 3, requires_grad=True)
        r1, r2 = rep(v, 2), rep(v, 2)
        assert r1 is not r2 and r1.grad_fn is not None  # a tensor that needs grad is never cached
    with reused_reps():
        assert rep(w, 2) is not b  # a new context starts empty


def test_pgd_like_passes_are_unchanged_by_reused_reps(monkeypatch):
    """Repeated input-gradient passes of stacked batches with frozen weights (as PGD runs them),
    one edge at a time (where every convolution repeats its weight): identical results."""
    monkeypatch.setattr(_fused_cell, "CROSS_EDGE_MAX", 0)
    monkeypatch.setattr(_fused_cell, "REDUCTION_MAX", 0)
    torch.manual_seed(0)
    net = Supernet(Layout.preset("arnas"), C=4, num_classes=10, cells=3).double().train()
    gen = torch.Generator().manual_seed(1)
    xs = [torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=gen) for _ in range(2)]
    ys = [torch.randint(0, 10, (3,), generator=gen) for _ in range(2)]

    def passes(model: Supernet, reuse: bool) -> list[torch.Tensor]:
        out = []
        ctx = reused_reps() if reuse else contextlib.nullcontext()
        with frozen_parameters(list(model.parameters())), frozen_running_stats(), ctx:
            x = [t.clone().requires_grad_(True) for t in xs]
            for _ in range(3):  # the attack's steps
                logits = model.forward_groups(x)
                loss = sum(F.cross_entropy(lo, y) for lo, y in zip(logits, ys))
                grads = torch.autograd.grad(loss, x)
                out += list(grads)
                x = [(t + 0.01 * g.sign()).detach().requires_grad_(True) for t, g in zip(x, grads)]
            if reuse:  # the frozen weights' repeats (and flipped kernels) were kept for the next steps
                assert len(_groups._REPS.get() or {}) > 20
        return out

    plain = passes(copy.deepcopy(net), reuse=False)
    again = passes(net, reuse=True)
    for a, b in zip(plain, again):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
