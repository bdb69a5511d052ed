"""A search cell's input preprocessing on ``g`` stacked batch blocks (:mod:`arnas_ray.space._groups`)."""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from arnas_ray.space import _groups as _g
from arnas_ray.space._aten import conv2d
from arnas_ray.space.ops import FactorizedReduce, ReLUConvBN

__all__ = ["preprocess", "preprocess_pair"]


def preprocess_pair(cell: nn.Module, s0: Tensor, s1: Tensor, g: int) -> Tensor:
    """Both preprocessed cell inputs stacked: ``[N, g*2*C, H, W]``, layout ``(g, s, c)``; one
    ReLU, convolution and batch norm for both when both are ReLUConvBN of same-shaped inputs."""
    p0, p1 = cast(nn.Module, cell.preprocess0), cast(nn.Module, cell.preprocess1)
    if isinstance(p0, ReLUConvBN) and s0.shape == s1.shape:  # preprocess1 is always a ReLUConvBN
        # [(g, s, c), C_in, 1, 1]
        w = _g.rep_cat([cast(nn.Conv2d, p0[1]).weight, cast(nn.Conv2d, cast(ReLUConvBN, p1)[1]).weight], g)
        if s0 is s1:  # the first cell: both read the stem
            h = conv2d(F.relu(s0), w, None, 1, 0, 1, g)
        else:
            h = conv2d(F.relu(_g.gcat([s0, s1], g)), w, None, 1, 0, 1, 2 * g)
        return _g.bn_slots(h, [[cast(nn.BatchNorm2d, p0[2])], [cast(nn.BatchNorm2d, cast(ReLUConvBN, p1)[2])]], g)
    return _g.gcat([preprocess(p0, s0, g), preprocess(p1, s1, g)], g)


def preprocess(m: nn.Module, x: Tensor, g: int) -> Tensor:
    """A cell's input preprocessing ``m`` (ReLUConvBN or FactorizedReduce) on ``g`` channel blocks
    (running statistics through :func:`arnas_ray.space._groups.bn`)."""
    if isinstance(m, FactorizedReduce):
        return _g.bn(m.bn, m.branches(F.relu(x), g), g)
    return _g.bn(cast(nn.BatchNorm2d, cast(ReLUConvBN, m)[2]),  # ReLUConvBN
                 _g.conv(cast(nn.Conv2d, cast(ReLUConvBN, m)[1]), F.relu(x), g), g)
