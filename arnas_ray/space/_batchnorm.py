"""Training-mode batch norm (batch statistics) through the compiled CPU kernels where they apply.

:func:`batch_norm_train` is ``torch.native_batch_norm(x, weight, bias, None, None, True, 0.0,
eps)``: the output, the batch mean and the batch inverse standard deviation (running
statistics are the caller's, :mod:`arnas_ray.space._groups`). For float32 channels_last CPU
tensors of a multiple of 8 and at most :data:`~arnas_ray.space._kernels.BN_MAX_CHANNELS`
channels it runs :func:`~arnas_ray.space._kernels.bn_forward` and, in the backward pass,
:func:`~arnas_ray.space._kernels.bn_backward` (2.5-4x PyTorch's kernels at 8-16 channels).
Everything else, and every backward pass that must itself be differentiable (a double
backward: grad mode on inside the backward), runs PyTorch's kernels, whose double backward is
exact. Same mathematics; sums in another order (tests compare the two).

``relu=True`` returns ``relu`` of the output, computed in the kernel's output pass, and its
backward applies the ReLU's mask inside the kernel's passes: one tensor pass and one
allocation fewer each way than a separate ``F.relu`` (a separable convolution's first batch
norm feeds a ReLU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from arnas_ray.space import _kernels

__all__ = ["batch_norm_train"]


def _forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, lib: Any,
             relu: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel's forward where ``lib`` is given and it applies, else PyTorch's (then ReLU)."""
    out = None if lib is None else _kernels.bn_forward(x, weight, bias, eps, lib, relu)
    if out is not None:
        return out
    y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
    return (torch.relu(y) if relu else y), mean, invstd


class _TrainBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                lib: Any, relu: bool) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, invstd = _forward(x, weight, bias, eps, lib, relu)
        ctx.save_for_backward(x, weight, mean, invstd, y if relu else None)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, invstd)
        ctx.set_materialize_grads(False)  # no zero tensors for the statistics' (absent) gradients
        return y, mean, invstd

    @staticmethod
    def backward(ctx: Any, gy: Tensor, *_: Any) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None, None]:
        x, weight, mean, invstd, y = ctx.saved_tensors
        mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        if gy is None:  # the output did not reach the loss
            return None, None, None, None, None, None
        grads = None if torch.is_grad_enabled() else _kernels.bn_backward(gy, x, mean, invstd, weight, mask, y)
        if grads is None:  # PyTorch's backward, differentiable (its double backward is exact)
            if y is not None:  # the ReLU's backward first
                gy = torch.ops.aten.threshold_backward(gy, y, 0)
            grads = torch.ops.aten.native_batch_norm_backward(gy, x, weight, None, None, mean, invstd, True, ctx.eps,
                                                              list(mask))
        gx, gw, gb = grads
        return (gx if mask[0] else None), (gw if mask[1] else None), (gb if mask[2] else None), None, None, None


def batch_norm_train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                     relu: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)``, with ``relu`` a
    ReLU of its output in the same pass; see the module docstring."""
    lib = _kernels.bn_library(x, weight, bias)
    if lib is not None and torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        out: tuple[Tensor, Tensor, Tensor] = _TrainBN.apply(x, weight, bias, eps, lib, relu)
        return out
    # no autograd node: nothing needs a gradient, or PyTorch's own (differentiable) ops run
    return _forward(x, weight, bias, eps, lib, relu)
