"""Direct calls of aten operators that the search step makes tens of thousands of times.

``torch.nn.functional.conv2d`` dispatches ``aten::conv2d``, which only checks its arguments and
dispatches ``aten::convolution``: :func:`conv2d` calls the latter directly (same kernel, same
autograd formula), one dispatcher call fewer per convolution (the small benchmark's
second-order step makes ~28,000). 1x1 convolutions without stride, padding or bias go to
:func:`~arnas_ray.space._pointwise.pointwise_conv2d` (compiled kernels on CPU where they apply).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from arnas_ray.space._pointwise import pointwise_conv2d

__all__ = ["conv2d"]

_Pair = int | Sequence[int]
_ONE = (1, (1, 1), [1, 1])
_ZERO = (0, (0, 0), [0, 0])


def _pair(v: _Pair) -> Sequence[int]:
    return (v, v) if isinstance(v, int) else v


def conv2d(x: Tensor, w: Tensor, bias: Tensor | None = None, stride: _Pair = 1, padding: _Pair = 0,
           dilation: _Pair = 1, groups: int = 1) -> Tensor:
    """``F.conv2d(x, w, bias, stride, padding, dilation, groups)`` for a 4-D ``x`` and numeric
    padding; 1x1 convolutions without stride, padding or bias through :func:`pointwise_conv2d`."""
    if bias is None and w.shape[-1] == 1 and w.shape[-2] == 1 and stride in _ONE and padding in _ZERO \
            and x.device.type == "cpu":
        return pointwise_conv2d(x, w, groups)
    return torch.convolution(x, w, bias, _pair(stride), _pair(padding), _pair(dilation), False, (0, 0), groups)
