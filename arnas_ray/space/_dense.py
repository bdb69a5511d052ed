"""``dense_grad``: an identity whose backward hands on a dense gradient.

Views (transposes, the slices of a stacked tensor) make strided gradients, and several CPU
kernels run far below memory speed on them: in a search step the batch-norm backward of the
fused cells' poolings took a strided gradient at 1.5 GB/s (13 GB/s dense), and the matrix
product that mixes them into the target nodes at about 1 GB/s (``benchmarks/RESULTS.md``).
A copy into the tensor's own layout costs a fraction of that.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["dense_grad"]


class _DenseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last if ctx.cl else torch.contiguous_format)


def dense_grad(x: Tensor) -> Tensor:
    """``x``, whose gradient arrives dense: channels_last where ``x`` is, else contiguous
    (differentiable twice: the backward is a copy)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x
    out: Tensor = _DenseGrad.apply(x)
    return out
