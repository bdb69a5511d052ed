"""Hypergradients of the architect: first = autograd, second ~ exact, exact = d/da of the
unrolled objective; strategies; one shared unrolled step; fused == plain supernet.

The alpha gradient of a ReLU / max-pool network is only piecewise smooth in the weights, so a
finite-difference Hessian-vector product at the DARTS radius (a weight step of norm 0.01)
carries an O(1) error from every kink it crosses; on a tiny network that error dominates. The
comparisons at the DARTS radius therefore run on the same supernet made smooth (softplus for
ReLU, average for max pooling, by monkeypatching torch.nn.functional), where the
finite-difference error is only the O(r^2) truncation; on the real supernet the
finite-difference path is checked at a radius below the kinks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from arnas_ray.search import ArchBatch, Architect
from arnas_ray.search.architect import FD_RADIUS
from arnas_ray.space.supernet import ALPHA_PREFIX
from tests.search.conftest import tiny_batch, tiny_supernet

ETA = 0.1
MU, WD = 0.9, 3e-4


def _flat(gs) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in gs])


def _rel(a, b) -> float:
    a, b = _flat(a), _flat(b)
    return float((a - b).norm() / b.norm())


def _sgd_with_momentum(model: torch.nn.Module, batch: ArchBatch) -> torch.optim.SGD:
    """An SGD optimiser over the weights with non-zero momentum buffers (one step taken)."""
    weights = [p for n, p in model.named_parameters() if not n.startswith(ALPHA_PREFIX)]
    opt = torch.optim.SGD(weights, lr=1e-3, momentum=MU, weight_decay=WD)
    loss = F.cross_entropy(model(batch.x_train), batch.y_train)
    for p, g in zip(weights, torch.autograd.grad(loss, weights)):
        p.grad = g
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def _architect(model, order, strategy="mgda", **kw) -> Architect:
    return Architect(model, order=order, strategy=strategy, w_momentum=MU, w_weight_decay=WD, **kw)


def _unrolled_objective(model, alphas, batch: ArchBatch, opt, x_obj, coef) -> torch.Tensor:
    """L_val(w'(a), a) with w'(a) = w - eta (mu buf + dL_train(w, a)/dw + wd w), written
    independently of the architect (train-mode BN: batch statistics)."""
    names = [n for n, _ in model.named_parameters() if not n.startswith(ALPHA_PREFIX)]
    ws = [p for n, p in model.named_parameters() if not n.startswith(ALPHA_PREFIX)]
    a_names = [n for n, _ in model.named_parameters() if n.startswith(ALPHA_PREFIX)]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    leaves = [p.detach().clone().requires_grad_(True) for p in ws]
    p = {**dict(zip(names, leaves)), **dict(zip(a_names, alphas)), **buffers}
    loss_tr = F.cross_entropy(functional_call(model, p, (batch.x_train,)), batch.y_train)
    g = torch.autograd.grad(loss_tr, leaves, allow_unused=True, materialize_grads=True)
    unrolled = []
    for w, gw, orig in zip(leaves, g, ws):
        buf = opt.state[orig].get("momentum_buffer") if orig in opt.state else None
        m = MU * buf if buf is not None else torch.zeros_like(w)
        unrolled.append(w.detach() - ETA * (m + gw + WD * w.detach()))
    p = {**dict(zip(names, unrolled)), **dict(zip(a_names, alphas)), **buffers}
    return coef * F.cross_entropy(functional_call(model, p, (x_obj,)), batch.y_val)


def _smooth_max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                     return_indices=False):
    return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=False)


def _make_smooth(mp: pytest.MonkeyPatch) -> None:
    """Softplus for ReLU and average for max pooling (every op calls torch.nn.functional)."""
    softplus = F.softplus
    mp.setattr(F, "relu", lambda x, inplace=False: softplus(x))
    mp.setattr(F, "max_pool2d", _smooth_max_pool)


@pytest.fixture(scope="module")
def hypergrads():
    """Hypergradients of every order on one tiny smooth float64 supernet (computed once)."""
    with pytest.MonkeyPatch.context() as mp:
        _make_smooth(mp)
        model, batch = tiny_supernet(), tiny_batch(n=16)
        opt = _sgd_with_momentum(model, batch)
        out, losses = {}, {}
        for order in ("first", "second", "exact"):
            out[order], losses[order] = _architect(model, order).hypergradients(
                batch, eta=ETA, w_optimizer=opt)
    return model, batch, opt, out, losses


@pytest.mark.parametrize("stack", [False, True], ids=["separate", "stacked"])
def test_first_order_is_autograd_grad_of_validation_loss(stack):
    """Bit for bit: first order runs one pass per objective even with stack_passes."""
    model, batch = tiny_supernet(), tiny_batch()
    us, _ = _architect(model, "first", stack_passes=stack).hypergradients(batch, eta=ETA)
    alphas = list(model.alphas.values())
    for i, (x, coef) in enumerate([(batch.x_val, 1.0), (batch.x_val_adv, 0.1)]):
        loss = F.cross_entropy(model(x), batch.y_val) * coef
        expected = torch.autograd.grad(loss, alphas, allow_unused=True, materialize_grads=True)
        for got, want in zip(us[i], expected):
            assert torch.equal(got, want)


def test_second_order_on_the_relu_supernet_matches_exact_below_the_kinks():
    model, batch = tiny_supernet(), tiny_batch()
    opt = _sgd_with_momentum(model, batch)
    exact, _ = _architect(model, "exact").hypergradients(batch, eta=ETA, w_optimizer=opt)
    fine, _ = _architect(model, "second", fd_radius=1e-6).hypergradients(batch, eta=ETA, w_optimizer=opt)
    first, _ = _architect(model, "first").hypergradients(batch, eta=ETA, w_optimizer=opt)
    for i in range(2):
        assert _rel(fine[i], exact[i]) < 1e-6
        assert _rel(first[i], exact[i]) > 1e-2


@pytest.mark.parametrize("objective", [0, 1], ids=["natural", "adversarial"])
def test_second_order_matches_exact_double_backward(hypergrads, objective):
    _, _, _, out, _ = hypergrads
    second, exact, first = (out[o][objective] for o in ("second", "exact", "first"))
    err = _rel(second, exact)  # at the DARTS radius
    assert FD_RADIUS == 0.01
    assert err < 1e-3, err
    # the implicit (Hessian) term matters here: first order is far from exact
    assert _rel(first, exact) > 20 * max(err, 1e-6)


@pytest.mark.parametrize("objective", [0, 1], ids=["natural", "adversarial"])
def test_exact_is_derivative_of_unrolled_objective(hypergrads, objective, monkeypatch):
    model, batch, opt, out, _ = hypergrads
    _make_smooth(monkeypatch)
    x_obj, coef = [(batch.x_val, 1.0), (batch.x_val_adv, 0.1)][objective]
    alphas = [a.detach() for a in model.alphas.values()]
    g = torch.Generator().manual_seed(7)
    h = 1e-4
    for _ in range(2):
        d = [torch.randn(a.shape, generator=g, dtype=a.dtype) for a in alphas]
        plus = _unrolled_objective(model, [a + h * di for a, di in zip(alphas, d)], batch, opt,
                                   x_obj, coef)
        minus = _unrolled_objective(model, [a - h * di for a, di in zip(alphas, d)], batch, opt,
                                    x_obj, coef)
        fd = float((plus - minus) / (2 * h))
        analytic = float(_flat(out["exact"][objective]) @ _flat(d))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_fused_and_plain_supernet_give_the_same_hypergradients():
    batch = tiny_batch()
    results = []
    for fused in (True, False):
        model = tiny_supernet(fused=fused)
        us, _ = _architect(model, "second").hypergradients(batch, eta=ETA)
        results.append(us)
    for u_fused, u_plain in zip(*results):
        for a, b in zip(u_fused, u_plain):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(("weights", "single"), [((1.0, 0.0), "natural"), ((0.0, 1.0), "adversarial")])
@pytest.mark.parametrize("order", ["first", "second"])
def test_fixed_one_hot_weights_equal_single_objective(weights, single, order):
    batch = tiny_batch()
    results = []
    for strategy in ("fixed", single):
        model = tiny_supernet()
        arch = _architect(model, order, strategy, fixed_weights=weights)
        arch.step(batch, eta=ETA)
        results.append([a.detach().clone() for a in model.alphas.values()])
    before = [a.detach() for a in tiny_supernet().alphas.values()]
    for got, want in zip(*results):
        assert torch.equal(got, want)
    assert any(not torch.equal(g, o) for g, o in zip(results[0], before))


def test_mgda_step_uses_min_norm_combination(hypergrads):
    model, _, _, out, losses = hypergrads
    us = out["second"]
    direction, gamma = _architect(model, "second").combine(us, losses["second"])
    assert 0.0 <= float(gamma) <= 1.0
    d = _flat(direction)
    for g in torch.linspace(0, 1, 201, dtype=torch.float64):
        other = _flat([g * a + (1 - g) * b for a, b in zip(*us)])
        assert float(d.norm()) <= float(other.norm()) * (1 + 1e-9)


@pytest.mark.parametrize(("order", "strategy", "passes", "stacked"), [
    # shared unrolled + 2 validation + 2x2 Hessian-vector passes; stacked (stack_passes): the
    # two validation passes as one, each objective's two Hessian-vector passes as one
    ("second", "mgda", 1, 1 + 2),
    ("second", "natural", 1 + 1, 1),
    ("first", "mgda", 2, 0),  # first order: separate passes
    ("exact", "mgda", 1 + 2, 0),
])
def test_forward_passes_per_step(order, strategy, passes, stacked, monkeypatch):
    model, batch = tiny_supernet(), tiny_batch()
    calls, groups = [], []
    original = type(model).forward_groups
    monkeypatch.setattr(type(model), "forward_groups", lambda self, xs: groups.append(len(xs)) or original(self, xs))
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        _architect(model, order, strategy).step(batch, eta=ETA)
        assert (len(calls), groups) == (passes, [2] * stacked)
        calls.clear(), groups.clear()
        _architect(model, order, strategy, stack_passes=False).step(batch, eta=ETA)  # two passes each
        assert (len(calls), groups) == (passes + 2 * stacked, [])
    finally:
        handle.remove()


def test_step_leaves_weights_buffers_and_grads_untouched():
    model, batch = tiny_supernet(), tiny_batch()
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(ALPHA_PREFIX)}
    arch = _architect(model, "second")
    stats = arch.step(batch, eta=ETA)
    for k, v in model.state_dict().items():
        if not k.startswith(ALPHA_PREFIX):
            assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in arch.weights)
    assert bool(torch.isfinite(stats.grad_norm)) and float(stats.grad_norm) > 0
    assert stats.loss_nat is not None and stats.loss_adv is not None


def test_adversarial_objective_needs_adversarial_batch():
    model, batch = tiny_supernet(), tiny_batch()
    batch.x_val_adv = None
    with pytest.raises(ValueError, match="x_val_adv"):
        _architect(model, "first").step(batch, eta=ETA)
    _architect(model, "first", "natural").step(batch, eta=ETA)  # not needed there


def test_unknown_order_names_the_field():
    with pytest.raises(ValueError, match="order"):
        Architect(tiny_supernet(), order="third")


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_stacked_passes_give_the_same_hypergradients(order, fused, monkeypatch):
    """``stack_passes`` (second order): the two objectives' validation passes as one stacked
    pass, and both finite-difference passes of each Hessian-vector product as one (w + rv in
    one block, w - rv in the other), where the supernet can stack batches (fused, training
    mode); the same hypergradients and objectives as separate passes. A plain supernet never
    stacks, nor does first order."""
    model, batch = tiny_supernet(fused=fused), tiny_batch()
    opt = _sgd_with_momentum(model, batch)
    groups = []
    original = type(model).forward_groups
    monkeypatch.setattr(type(model), "forward_groups", lambda self, xs: groups.append(len(xs)) or original(self, xs))
    out, losses = {}, {}
    for stack in (True, False):
        arch = _architect(model, order, stack_passes=stack)
        assert arch._stackable() is fused
        out[stack], losses[stack] = arch.hypergradients(batch, eta=ETA, w_optimizer=opt)
        if stack:  # one stacked validation pass, and one stacked pass per Hessian-vector product
            assert groups == ([2] * 3 if fused and order == "second" else [])
    assert len(groups) == (3 if fused and order == "second" else 0)  # none without stacking
    for objective in range(2):
        for a, b in zip(out[True][objective], out[False][objective]):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
        assert _rel(out[True][objective], out[False][objective]) < 1e-8
        torch.testing.assert_close(losses[True][objective], losses[False][objective], rtol=1e-12, atol=0)
    model.eval()  # eval mode: batch statistics are gone, so no stacking
    assert not _architect(model, "second")._stackable()
