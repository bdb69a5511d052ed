import pytest
import torch
import torch.nn.functional as F

from arnas_ray.space._dwconv import depthwise_conv2d

CASES = [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 2), (5, 1, 2), (3, 2, 2), (5, 2, 2)]


@pytest.mark.parametrize("k,dilation,stride", CASES)
@pytest.mark.parametrize("size", [7, 8])
def test_depthwise_gradients_match_autograd_of_conv2d(k, dilation, stride, size):
    torch.manual_seed(0)
    pad = dilation * (k - 1) // 2
    x = torch.randn(3, 4, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, k, k, dtype=torch.float64, requires_grad=True)
    y = depthwise_conv2d(x, w, stride, pad, dilation)
    ref = F.conv2d(x, w, None, stride, pad, dilation, 4)
    assert torch.allclose(y, ref, atol=1e-12)
    go = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, w), go, create_graph=True)
    theirs = torch.autograd.grad(ref, (x, w), go, create_graph=True)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-10)
    # double backward (the architect's `exact` order differentiates through these gradients)
    s1 = sum((g * torch.cos(g)).sum() for g in ours)
    s2 = sum((g * torch.cos(g)).sum() for g in theirs)
    for a, b in zip(torch.autograd.grad(s1, (x, w)), torch.autograd.grad(s2, (x, w))):
        assert torch.allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("k,dilation,stride", CASES)
def test_depthwise_float32_channels_last(k, dilation, stride):
    torch.manual_seed(1)
    pad = dilation * (k - 1) // 2
    x = torch.randn(4, 8, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(8, 1, k, k, requires_grad=True)
    y = depthwise_conv2d(x, w, stride, pad, dilation)
    ref = F.conv2d(x, w, None, stride, pad, dilation, 8)
    go = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, (x, w), go), torch.autograd.grad(ref, (x, w), go)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_input_only_gradient_leaves_weight_alone():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 1, 3, 3)  # frozen, as in a PGD pass
    (gx,) = torch.autograd.grad(depthwise_conv2d(x, w, 1, 2, 2).sum(), x)
    (ref,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 2, 2, 4).sum(), x)
    assert torch.allclose(gx, ref, atol=1e-5)
