"""``dense_grad``: identity forward, the same gradient, handed on dense."""

from __future__ import annotations

import pytest
import torch

from arnas_ray.space._dense import dense_grad

CL = torch.channels_last


def _grad(x: torch.Tensor, wrap: bool) -> torch.Tensor:
    """The gradient reaching the non-leaf ``y = x * 1`` through a transpose (a strided view)."""
    y = x * 1
    z = (dense_grad(y) if wrap else y).transpose(-1, -2)
    weight = torch.arange(z.numel(), dtype=z.dtype).view_as(z)
    (gy,) = torch.autograd.grad((z * weight).sum(), y)
    return gy


@pytest.mark.parametrize("cl", [False, True])
def test_same_gradient_dense(cl: bool) -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    if cl:
        x = x.contiguous(memory_format=CL)
    x.requires_grad_(True)
    assert torch.equal(dense_grad(x * 1), x)
    plain, dense = _grad(x, False), _grad(x, True)
    assert torch.equal(plain, dense)
    # without it the transpose hands on a strided view; with it the gradient is dense, in y's layout
    assert not plain.is_contiguous() and not plain.is_contiguous(memory_format=CL)
    assert dense.is_contiguous(memory_format=CL if cl else torch.contiguous_format)


def test_double_backward() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dense_grad(t).t() ** 2, (x,))
    assert torch.autograd.gradgradcheck(lambda t: (dense_grad(t).t() ** 3).sum(), (x,))


def test_no_grad_passthrough() -> None:
    x = torch.randn(3, 4)
    assert dense_grad(x) is x
