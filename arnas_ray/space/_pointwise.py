"""Grouped 1x1 convolutions (stride 1, no padding, no bias) through the compiled CPU kernels.

The supernet's pointwise convolutions are narrow: 8-64 channels per group, a few groups (one
per fused edge and channel block). oneDNN runs them at a few GB/s: at batch 16 and 16-32
channels per call the kernels of :mod:`arnas_ray.space._kernels` (``pw_forward``,
``pw_grad_input``, ``pw_grad_weight``) took a third to two thirds of its time
(``benchmarks/pw_kernel.py``). :func:`pointwise_conv2d` is ``torch.convolution`` of such a
convolution; it runs the kernels for float32 channels_last CPU inputs whose groups have a
multiple of 8 output channels, and PyTorch's convolution otherwise. A backward pass that must
itself be differentiable (grad mode on inside it: a double backward, ``order: exact``) runs
``aten::convolution_backward``, whose double backward is PyTorch's. Same mathematics; sums in
another order for the weight gradient (tests compare the two).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from arnas_ray.space import _kernels

__all__ = ["pointwise_conv2d"]


def _native(x: Tensor, w: Tensor, groups: int) -> Tensor:
    return torch.convolution(x, w, None, (1, 1), (0, 0), (1, 1), False, (0, 0), groups)


def _forward(x: Tensor, w: Tensor, groups: int, lib: Any) -> Tensor:
    y = _kernels.pw_forward(x, w, groups, lib)
    return y if y is not None else _native(x, w, groups)


class _Pointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, groups: int, lib: Any) -> Tensor:
        # the input is only needed for the weight gradient (PGD passes ask for none)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w)
        ctx.conf = (groups, lib, x.shape, x.stride())
        return _forward(x, w, groups, lib)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, w = ctx.saved_tensors
        groups, lib, shape, strides = ctx.conf
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = None
        if not torch.is_grad_enabled():  # the kernels (None where they do not apply)
            gx = _kernels.pw_grad_input(gy, w, shape, groups, lib) if need_x else None
            gw = _kernels.pw_grad_weight(gy, x, w, groups, lib) if need_w else None
        if (need_x and gx is None) or (need_w and gw is None):  # PyTorch's, differentiable
            ref = x if x is not None else gy.new_empty_strided(shape, strides)  # only its shape is read
            nx, nw, _ = torch.ops.aten.convolution_backward(
                gy, ref, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups,
                [need_x and gx is None, need_w and gw is None, False])
            gx = nx if gx is None else gx
            gw = nw if gw is None else gw
        return gx, gw, None, None


def pointwise_conv2d(x: Tensor, w: Tensor, groups: int = 1) -> Tensor:
    """``torch.convolution(x, w, None, 1, 0, 1, False, 0, groups)`` for a 1x1 weight ``w``
    (``[G*Co, Ci, 1, 1]``), by the compiled kernels where they apply (module docstring)."""
    lib = _kernels.pw_library(x, w, groups)
    if lib is None:
        return _native(x, w, groups)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        out: Tensor = _Pointwise.apply(x, w, groups, lib)
        return out
    return _forward(x, w, groups, lib)
