
import pytest
import torch

from arnas_ray.space import (
    DARTS_PRIMITIVES,
    GENOTYPES,
    LAYOUT_PRESETS,
    OPS,
    PRIMITIVES,
    Layout,
    MixedOp,
    Network,
    Supernet,
)
from arnas_ray.space._mixed import FusedMixedOp


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_or_halves_shape_and_passes_gradients(name, stride):
    torch.manual_seed(0)
    op = OPS[name](4, stride, True)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 4, 8 // stride, 8 // stride)
    y.square().sum().backward()
    if name != "none":
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_op_lists_valid_names():
    with pytest.raises(KeyError, match="sep_conv_3x3"):
        OPS["conv_9x9"]


@pytest.mark.parametrize("prims", [PRIMITIVES, DARTS_PRIMITIVES, ("skip_connect", "dil_conv_3x3")])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_mixed_op_equals_plain_mixed_op(prims, stride):
    torch.manual_seed(0)
    C = 4
    plain = MixedOp(C, stride, prims).double()
    fused = FusedMixedOp(C, stride, prims).double()
    fused.load_from_mixed(plain)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in fused.parameters())
    x = torch.randn(3, C, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(len(prims), dtype=torch.float64), 0).requires_grad_()
    y1, y2 = plain(x, w), fused(x, w)
    assert torch.allclose(y1, y2, atol=1e-10)
    g1 = torch.autograd.grad(y1.square().sum(), [x, w])
    g2 = torch.autograd.grad(y2.square().sum(), [x, w])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-9)
    # running statistics are tracked identically
    bn_plain = [m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert sum(int(m.num_batches_tracked) for m in bn_plain) > 0
    plain.eval(), fused.eval()
    assert torch.allclose(plain(x, w), fused(x, w), atol=1e-10)


@pytest.mark.parametrize("preset", sorted(LAYOUT_PRESETS))
@pytest.mark.parametrize("size", [8, 16])
def test_supernet_forward_backward_every_preset(preset, size):
    torch.manual_seed(0)
    net = Supernet(Layout.preset(preset), C=4, num_classes=10, cells=3)
    x = torch.rand(2, 3, size, size)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([1, 2]))
    loss.backward()
    alphas = net.arch_parameters()
    assert set(alphas) == set(Layout.preset(preset).cell_types)
    used = {p.cell_type for p in net.plan}
    for t in used:
        assert alphas[t].grad is not None and alphas[t].grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.weight_parameters() if p.requires_grad)


def test_supernet_alpha_count_per_layout():
    assert len(Supernet(Layout.preset("darts"), 4, 10, 5, primitives=DARTS_PRIMITIVES).arch_parameters()) == 2
    net = Supernet(Layout.preset("arnas"), 4, 10, 5)
    assert len(net.arch_parameters()) == 3
    assert all(a.shape == (14, 7) for a in net.arch_parameters().values())
    assert str(net.genotype().to_json()).count("accurate") == 1


def test_fused_supernet_equals_plain_supernet():
    torch.manual_seed(0)
    plain = Supernet(Layout.preset("arnas"), 4, 10, 5, fused=False).double()
    fused = Supernet(Layout.preset("arnas"), 4, 10, 5, fused=True).double()
    fused.load_state_dict({k: v for k, v in plain.state_dict().items() if "_ops" not in k}, strict=False)
    for cp, cf in zip(plain.cells, fused.cells):
        for mp, mf in zip(cp._ops, cf._ops):
            mf.load_from_mixed(mp)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    for _ in range(2):  # two training passes: shared pooling/BN across edges, running stats
        y1, y2 = plain(x), fused(x)
        assert torch.allclose(y1, y2, atol=1e-9)
        params1 = [x, *plain.arch_parameters().values(), *plain.weight_parameters()]
        params2 = [x, *fused.arch_parameters().values(), *fused.weight_parameters()]
        g1 = torch.autograd.grad(y1.square().sum(), params1)
        g2 = torch.autograd.grad(y2.square().sum(), params2)
        for a, b in zip(g1, g2):
            assert torch.allclose(a, b, atol=1e-8)
    b1, b2 = dict(plain.named_buffers()), dict(fused.named_buffers())
    assert b1.keys() == b2.keys()
    for k in b1:
        assert torch.allclose(b1[k].double(), b2[k].double(), atol=1e-10), k
    plain.eval(), fused.eval()
    assert torch.allclose(plain(x), fused(x), atol=1e-9)


def test_fused_cell_float32_channels_last_matches_plain():
    """The CPU fast paths (depthwise backward, shared pooling) in the benchmarked format."""
    torch.manual_seed(1)
    plain = Supernet(Layout.preset("arnas"), 8, 10, 5, fused=False)
    fused = Supernet(Layout.preset("arnas"), 8, 10, 5, fused=True)
    fused.load_state_dict(plain.state_dict())
    plain, fused = (m.to(memory_format=torch.channels_last) for m in (plain, fused))
    x = torch.rand(6, 3, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    y1, y2 = plain(x), fused(x)
    assert torch.allclose(y1, y2, atol=1e-5)
    p1 = [x, *plain.arch_parameters().values(), *plain.weight_parameters()]
    p2 = [x, *fused.arch_parameters().values(), *fused.weight_parameters()]
    for a, b in zip(torch.autograd.grad(y1.logsumexp(1).sum(), p1), torch.autograd.grad(y2.logsumexp(1).sum(), p2)):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_network_with_aux_drop_path_and_every_genotype():
    torch.manual_seed(0)
    net = Network(GENOTYPES["ARNAS"], Layout.preset("arnas"), C=4, num_classes=10, cells=5, auxiliary=True,
                  drop_path_prob=0.2)
    net.train()
    logits, aux = net(torch.rand(3, 3, 16, 16), with_aux=True)
    assert logits.shape == aux.shape == (3, 10)
    net.eval()
    assert isinstance(net(torch.rand(2, 3, 16, 16)), torch.Tensor)
    assert net(torch.rand(2, 3, 16, 16), with_aux=True)[1] is None
    d = Network(GENOTYPES["DARTS_V2"], Layout.preset("darts"), C=4, num_classes=10, cells=5, auxiliary=True)
    d.train()
    assert d(torch.rand(2, 3, 32, 32), with_aux=True)[1].shape == (2, 10)


def test_network_rejects_genotype_missing_cell_type():
    from arnas_ray.errors import SpecError

    with pytest.raises(SpecError, match="robust"):
        Network(GENOTYPES["DARTS_V2"], Layout.preset("arnas"), C=4, num_classes=10, cells=5)


def test_no_ray_import_in_space_and_core(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import arnas_ray.space, arnas_ray.checkpoint, arnas_ray._config\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("preset", ["arnas", "darts"])
@pytest.mark.parametrize("size", [8, 9])
def test_forward_groups_equals_separate_passes(preset, size):
    """Batches stacked along the channels: same logits and input gradients as separate passes."""
    import copy

    torch.manual_seed(0)
    net = Supernet(Layout.preset(preset), C=4, num_classes=10, cells=4).double().train()
    twin = copy.deepcopy(net)
    xs = [torch.rand(3, 3, size, size, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    sep = [net(x) for x in xs]
    g_sep = torch.autograd.grad(sum(lo.logsumexp(1).sum() for lo in sep), xs)
    grouped = twin.forward_groups(xs)
    g_grp = torch.autograd.grad(sum(lo.logsumexp(1).sum() for lo in grouped), xs)
    for a, b in zip(sep, grouped):
        assert torch.allclose(a, b, atol=1e-12)
    for a, b in zip(g_sep, g_grp):
        assert torch.allclose(a, b, atol=1e-12)
    # running statistics: the updates of the three separate passes, in order
    b_sep, b_grp = dict(net.named_buffers()), dict(twin.named_buffers())
    for k, v in b_sep.items():
        assert torch.allclose(v.double(), b_grp[k].double(), atol=1e-12), k
    assert any(k.endswith("num_batches_tracked") and int(v) == 3 for k, v in b_grp.items())


def test_forward_groups_channels_last_float32():
    torch.manual_seed(0)
    net = Supernet(Layout.preset("arnas"), C=8, num_classes=10, cells=5).to(memory_format=torch.channels_last)
    xs = [torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_() for _ in range(2)]
    sep = [net(x) for x in xs]
    grouped = net.forward_groups(xs)
    g1 = torch.autograd.grad(sum(lo.logsumexp(1).sum() for lo in sep), xs)
    g2 = torch.autograd.grad(sum(lo.logsumexp(1).sum() for lo in grouped), xs)
    for a, b in zip(sep, grouped):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_forward_groups_refuses_what_it_cannot_do():
    net = Supernet(Layout.preset("arnas"), C=4, num_classes=10, cells=3)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="one shape"):
        net.forward_groups([x, torch.rand(3, 3, 8, 8)])
    net.eval()
    with pytest.raises(ValueError, match="training mode"):
        net.forward_groups([x, x])
    plain = Supernet(Layout.preset("arnas"), C=4, num_classes=10, cells=3, fused=False)
    with pytest.raises(ValueError, match="fused"):
        plain.forward_groups([x, x])
    assert torch.equal(net.forward_groups([x])[0], net(x))
