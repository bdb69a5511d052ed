"""Direct calls of aten operators that the search step makes tens of thousands of times.

``torch.nn.functional.conv2d`` dispatches ``aten::conv2d``, which only checks its arguments and
dispatches ``aten::convolution``: :func:`conv2d` calls the latter directly (same kernel, same
autograd formula), one dispatcher call fewer per convolution (the small benchmark's
second-order step makes ~28,000).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["conv2d"]

_Pair = int | Sequence[int]


def _pair(v: _Pair) -> Sequence[int]:
    return (v, v) if isinstance(v, int) else v


def conv2d(x: Tensor, w: Tensor, bias: Tensor | None = None, stride: _Pair = 1, padding: _Pair = 0,
           dilation: _Pair = 1, groups: int = 1) -> Tensor:
    """``F.conv2d(x, w, bias, stride, padding, dilation, groups)`` for a 4-D ``x`` and numeric padding."""
    return torch.convolution(x, w, bias, _pair(stride), _pair(padding), _pair(dilation), False, (0, 0), groups)
