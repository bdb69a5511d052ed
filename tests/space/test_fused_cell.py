"""Cross-edge fusion (``_fused_cell``) against the plain ``MixedOp`` supernet: outputs, gradients,
double backward, running statistics, float64 and channels_last, every primitive set and layout
preset, and the architect's hypergradients of every order."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from arnas_ray.search import ArchBatch, Architect
from arnas_ray.space import (
    DARTS_PRIMITIVES,
    LAYOUT_PRESETS,
    PRIMITIVES,
    Layout,
    Supernet,
    _fused_cell,
)
from arnas_ray.space._fused_cell import plan_rounds
from arnas_ray.space.supernet import frozen_running_stats

PRIMITIVE_SETS = {"arnas": PRIMITIVES, "darts": DARTS_PRIMITIVES}


@pytest.fixture(params=["cross-edge", "per-edge"])
def cell_path(request, monkeypatch):
    """Both training-mode paths of a fused cell: every edge together (the tests' tiny states
    always qualify) or, with ``CROSS_EDGE_MAX`` and ``REDUCTION_MAX`` at 0, one ``FusedMixedOp``
    edge at a time."""
    if request.param == "per-edge":
        monkeypatch.setattr(_fused_cell, "CROSS_EDGE_MAX", 0)
        monkeypatch.setattr(_fused_cell, "REDUCTION_MAX", 0)
    return request.param


def _pair(preset: str, prims, *, C: int = 4, cells: int = 4, dtype=torch.float64, seed: int = 0):
    """A plain and a fused supernet with the same parameters and spread-out alphas."""
    torch.manual_seed(seed)
    plain = Supernet(Layout.preset(preset), C, 10, cells, primitives=prims, fused=False).to(dtype)
    with torch.no_grad():
        for a in plain.alphas.values():
            a.normal_(0.0, 0.5)
    fused = Supernet(Layout.preset(preset), C, 10, cells, primitives=prims, fused=True).to(dtype)
    fused.load_state_dict(plain.state_dict())
    assert all(c.fusion is not None for c in fused.cells) and fused.running_stats_freezable
    return plain.train(), fused.train()


def _params(net, x):
    return [x, *net.arch_parameters().values(), *net.weight_parameters()]


def _grads(y, params, **kw):
    return torch.autograd.grad(y, params, allow_unused=True, materialize_grads=True, **kw)


def _assert_buffers_equal(a, b, atol):
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    assert ba.keys() == bb.keys()
    for k in ba:
        torch.testing.assert_close(ba[k].double(), bb[k].double(), rtol=0, atol=atol, msg=k)


def test_rounds_cover_every_edge_once():
    for steps in (1, 2, 3, 4, 5):
        rounds = plan_rounds(steps)
        edges = [e for r in rounds for e in r.edges]
        assert sorted(edges) == list(range(sum(2 + i for i in range(steps))))
        for r in rounds:
            assert len(r.edges) == len(r.sources) * len(r.targets)


@pytest.mark.parametrize("prims", sorted(PRIMITIVE_SETS))
@pytest.mark.parametrize("preset", sorted(LAYOUT_PRESETS))
def test_fused_supernet_equals_plain_every_preset(preset, prims, cell_path):
    plain, fused = _pair(preset, PRIMITIVE_SETS[prims])
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    for _ in range(2):  # two training passes: running statistics accumulate
        y1, y2 = plain(x), fused(x)
        torch.testing.assert_close(y2, y1, rtol=0, atol=1e-10)
        for a, b in zip(_grads(y1.square().sum(), _params(plain, x)), _grads(y2.square().sum(), _params(fused, x))):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)
    _assert_buffers_equal(plain, fused, atol=1e-12)
    plain.eval(), fused.eval()
    torch.testing.assert_close(fused(x), plain(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("prims", sorted(PRIMITIVE_SETS))
def test_fused_without_3x3_embedding_equals_plain(prims, monkeypatch):
    """3x3 kernels at their own size (four depthwise calls per stage): same results."""
    monkeypatch.setattr(_fused_cell, "EMBED_3X3", False)
    plain, fused = _pair("arnas", PRIMITIVE_SETS[prims])
    assert all(not c.fusion.embed for c in fused.cells)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y1, y2 = plain(x), fused(x)
    torch.testing.assert_close(y2, y1, rtol=0, atol=1e-10)
    g1 = _grads(y1.square().sum(), _params(plain, x), create_graph=True)
    g2 = _grads(y2.square().sum(), _params(fused, x), create_graph=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)
    h1 = torch.autograd.grad(sum(g.square().sum() for g in g1[1:3]), x)[0]  # double backward (exact order)
    h2 = torch.autograd.grad(sum(g.square().sum() for g in g2[1:3]), x)[0]
    torch.testing.assert_close(h2, h1, rtol=1e-8, atol=1e-10)
    _assert_buffers_equal(plain, fused, atol=1e-12)


@pytest.mark.parametrize("prims", [("skip_connect", "dil_conv_3x3"), ("none", "max_pool_3x3", "sep_conv_5x5"),
                                   ("dil_conv_5x5", "sep_conv_3x3"), ("none",)])
def test_fused_supernet_equals_plain_primitive_subsets_odd_size(prims):
    plain, fused = _pair("arnas", prims)
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    y1, y2 = plain(x), fused(x)
    torch.testing.assert_close(y2, y1, rtol=0, atol=1e-10)
    for a, b in zip(_grads(y1.logsumexp(1).sum(), _params(plain, x)), _grads(y2.logsumexp(1).sum(), _params(fused, x))):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)
    _assert_buffers_equal(plain, fused, atol=1e-12)


@pytest.mark.parametrize("prims", sorted(PRIMITIVE_SETS))
def test_fused_double_backward_equals_plain(prims, cell_path):
    """What the ``exact`` order differentiates: a gradient, differentiated again."""
    plain, fused = _pair("arnas", PRIMITIVE_SETS[prims], cells=4)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    out = []
    for net in (plain, fused):
        ws, alphas = net.weight_parameters(), list(net.arch_parameters().values())
        gw = _grads(F.cross_entropy(net(x), torch.tensor([1, 2])), ws, create_graph=True)
        penalty = sum(g.square().sum() for g in gw)
        out.append(_grads(penalty, alphas + ws[:6]))
    for a, b in zip(*out):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("prims", sorted(PRIMITIVE_SETS))
def test_fused_float32_channels_last_and_groups_match_plain(prims, cell_path):
    plain, fused = _pair("arnas", PRIMITIVE_SETS[prims], C=8, cells=5, dtype=torch.float32, seed=1)
    plain, fused = (m.to(memory_format=torch.channels_last) for m in (plain, fused))
    xs = [torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_() for _ in range(2)]
    twin = copy.deepcopy(fused)
    sep = [plain(x) for x in xs]
    grouped = twin.forward_groups(xs)
    formats = []
    hook = fused.cells[0].register_forward_hook(
        lambda m, a, out: formats.append(out.is_contiguous(memory_format=torch.channels_last)))
    single = fused(xs[0])
    hook.remove()
    assert formats == [True]  # the fused cell keeps channels_last memory
    torch.testing.assert_close(single, sep[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(sep, grouped):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    g1 = _grads(sum(lo.logsumexp(1).sum() for lo in sep), xs)
    g2 = _grads(sum(lo.logsumexp(1).sum() for lo in grouped), xs)
    for a, b in zip(g1, g2):  # float32 over 5 cells: compared as vectors (a ReLU or max-pool tie may flip)
        assert float((a - b).norm() / a.norm()) < 1e-3
    # the grouped pass updated the running statistics like the two separate passes
    _assert_buffers_equal(plain, twin, atol=1e-5)


def test_running_statistics_stay_module_buffers(cell_path):
    """The fused pass keeps the running statistics as views of flat tensors: they stay the
    modules' buffers (state dict, loading, conversion) and keep receiving the updates."""
    plain, fused = _pair("darts", DARTS_PRIMITIVES, cells=3)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    plain(x), fused(x)
    state = fused.state_dict()
    assert state.keys() == plain.state_dict().keys()
    reloaded = Supernet(Layout.preset("darts"), 4, 10, 3, primitives=DARTS_PRIMITIVES).double()
    reloaded.load_state_dict(state)
    _assert_buffers_equal(reloaded, fused, atol=0)
    # conversions replace the buffers (here: rounded to float32 and back, both models alike):
    # the next fused pass rebinds them
    plain, fused = plain.float().double(), fused.float().double()
    plain(x), fused(x)
    _assert_buffers_equal(plain, fused, atol=1e-12)
    before = {k: v.clone() for k, v in fused.named_buffers()}
    with frozen_running_stats():
        fused(x)
    for k, v in fused.named_buffers():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("order", ["first", "second", "exact"])
def test_hypergradients_fused_equal_plain(order, cell_path):
    plain, fused = _pair("arnas", PRIMITIVES)
    g = torch.Generator().manual_seed(3)
    xs = [torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    ys = [torch.randint(0, 10, (4,), generator=g) for _ in range(2)]
    batch = ArchBatch(xs[0], ys[0], xs[1], ys[1], xs[2])
    out = []
    for net in (plain, fused):
        buffers = {k: v.clone() for k, v in net.named_buffers()}
        us, losses = Architect(net, order=order).hypergradients(batch, eta=0.1)
        out.append((us, losses))
        for k, v in net.named_buffers():  # the passes leave the running statistics alone
            assert torch.equal(v, buffers[k]), k
    (u_plain, l_plain), (u_fused, l_fused) = out
    for a, b in zip(l_plain, l_fused):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for ua, ub in zip(u_plain, u_fused):
        for a, b in zip(ua, ub):
            torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-10)


def test_cells_choose_the_path_by_state_size(monkeypatch):
    """Cross-edge fusion for states of at most CROSS_EDGE_MAX elements (REDUCTION_MAX in a
    reduction cell; at the input resolution, stacked batches counted), one edge at a time
    above; both give the same pass."""
    fusion = _fused_cell.CellFusion(PRIMITIVES, 4, 8, reduction=False)
    reduce = _fused_cell.CellFusion(PRIMITIVES, 4, 8, reduction=True)
    assert (_fused_cell.CROSS_EDGE_MAX, _fused_cell.REDUCTION_MAX) == (1 << 16, 1 << 18)
    x = torch.empty(16, 24, 32, 32)  # 16 * 32 * 32 * 8 = 131,072 elements per state
    assert not fusion.pays(x, 1)  # the search's first cell goes per edge
    x16 = torch.empty(16, 24, 16, 16)  # 32,768 per state: fused alone and as the PGD pair, not three
    assert fusion.pays(x16, 2) and not fusion.pays(x16, 3)
    # the second (reduction) cell reads 32x32 inputs: alone fused, the PGD pairs per edge
    assert reduce.pays(x, 2) and not reduce.pays(x, 3)
    assert reduce.pays(torch.empty(16, 24, 33, 33), 1) and not reduce.pays(torch.empty(16, 24, 33, 33), 2)
    calls = []
    original = _fused_cell.CellFusion.forward
    monkeypatch.setattr(_fused_cell.CellFusion, "forward", lambda self, *a: calls.append(1) or original(self, *a))
    plain, fused = _pair("arnas", PRIMITIVES, C=4, cells=3)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    monkeypatch.setattr(_fused_cell, "CROSS_EDGE_MAX", 2 * 6 * 6 * 8)  # the normal cells at 6x6 and below
    monkeypatch.setattr(_fused_cell, "REDUCTION_MAX", 2 * 12 * 12 * 8)  # the reduction cell (12x12 inputs)
    y = fused(x)
    assert len(calls) == 2  # the first cell (12x12, C=4: 1,152 elements) ran per edge
    torch.testing.assert_close(y, plain(x), rtol=0, atol=1e-10)
