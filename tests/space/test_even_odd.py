"""``even_odd``: the pixels of FactorizedReduce's two branches in one gather."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arnas_ray.space import _groups as _g
from arnas_ray.space.ops import FactorizedReduce, even_odd


def _slices(x: torch.Tensor, g: int) -> torch.Tensor:
    even, odd = x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]
    odd = F.pad(odd, (0, even.shape[-1] - odd.shape[-1], 0, even.shape[-2] - odd.shape[-2]))
    return _g.gcat([even, odd], g)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (8, 5)])
@pytest.mark.parametrize("g", [1, 2, 3])
@pytest.mark.parametrize("cl", [False, True])
def test_equals_strided_slices(size: tuple[int, int], g: int, cl: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4 * g, *size, dtype=torch.float64)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    za, zb = even_odd(a, g), _slices(b, g)
    assert za.shape == zb.shape
    assert torch.equal(za, zb)
    go = torch.randn_like(za)
    (ga,), (gb,) = torch.autograd.grad(za, a, go), torch.autograd.grad(zb, b, go)
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("cl", [False, True])
def test_gradient_keeps_the_memory_format(cl: bool) -> None:
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(2, 8, 8, 8).contiguous(memory_format=fmt).requires_grad_(True)
    z = even_odd(x, 2)
    assert z.is_contiguous(memory_format=fmt)
    (gx,) = torch.autograd.grad(z.sum(), x)
    assert gx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_matches_stride_two_convs(size: int) -> None:
    torch.manual_seed(1)
    fr = FactorizedReduce(6, 8).double()
    x = torch.rand(2, 6, size, size, dtype=torch.float64)
    shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    want = torch.cat([F.conv2d(x, fr.conv_1.weight, stride=2), F.conv2d(shifted, fr.conv_2.weight, stride=2)], 1)
    torch.testing.assert_close(fr.branches(x), want)
    # pixels given by the caller (shared by the edges leaving a node) give the same
    torch.testing.assert_close(fr.branches(x, 1, even_odd(x)), want)
