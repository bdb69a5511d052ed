"""Primitive operations of the DARTS / ARNAS search space and their registry.

Each entry of :data:`OPS` is an ``OpFactory``: ``(C, stride, affine) -> nn.Module`` mapping
``[N, C, H, W]`` to ``[N, C, H/stride, W/stride]``. :data:`PRIMITIVES` lists the 7 ARNAS ops
(no ``none``) in the reference order; :data:`DARTS_PRIMITIVES` adds ``none`` first, as DARTS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray._registry import Registry
from arnas_ray.space import _groups as _g
from arnas_ray.space._aten import conv2d

__all__ = [
    "DARTS_PRIMITIVES",
    "OPS",
    "PRIMITIVES",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "MixedOp",
    "OpFactory",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "even_odd",
    "get_op",
]

OpFactory = Callable[[int, int, bool], nn.Module]
OPS: Registry[OpFactory] = Registry("op")


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k) -> BN, the cell's input preprocessing."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked (ReLU -> depthwise -> pointwise -> BN) blocks; stride on the first."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def even_odd(x: torch.Tensor, g: int = 1) -> torch.Tensor:
    """The pixels the two branches of :class:`FactorizedReduce` read, side by side per channel
    block: ``x[:, :, ::2, ::2]`` and ``x[:, :, 1::2, 1::2]`` (zero-padded to the first's size
    where H or W is odd) in the layout ``(g, [even | odd], c)`` of ``[N, g*2*C, H/2, W/2]``.

    For even sizes both are one diagonal of ``x`` cut into 2x2 blocks, gathered by one copy in
    ``x``'s memory format: its backward fills one zero tensor of ``x``'s size, in that format. Two strided slices fill two each, in NCHW memory, which the channels_last
    gradients of the other edges then add slowly."""
    N, C, H, W = x.shape
    if H % 2 or W % 2:
        even, odd = x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]
        odd = F.pad(odd, (0, even.shape[-1] - odd.shape[-1], 0, even.shape[-2] - odd.shape[-2]))
        return _g.gcat([even, odd], g)
    h, w = H // 2, W // 2
    if not _g.channels_last(x):  # NCHW: [N, C, h, 2, w, 2] is a view
        d = x.reshape(N, C, h, 2, w, 2).diagonal(dim1=3, dim2=5)  # [N, C, h, w, 2]
        return d.reshape(N, g, C // g, h, w, 2).permute(0, 1, 5, 2, 3, 4).reshape(N, 2 * C, h, w)
    v = x.permute(0, 2, 3, 1).reshape(N, h, 2, w, 2, C)  # a view
    d = v.diagonal(dim1=2, dim2=4).reshape(N, h, w, g, C // g, 2).transpose(-1, -2)  # [N, h, w, g, 2, C/g]
    out: torch.Tensor = d.reshape(N, h, w, 2 * C).permute(0, 3, 1, 2)
    return out


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated: [N,Ci,H,W] -> [N,Co,H/2,W/2]."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got C_out={C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def branches(self, x: torch.Tensor, groups: int = 1, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Both convolutions of the (already rectified) input, concatenated, before the BN
        (``groups``: batches stacked along the channels, see :mod:`arnas_ray.space._groups`).

        The second branch is a stride-2 1x1 conv of the input shifted by one pixel (odd sizes
        padded with zeros); it reads exactly the odd pixels, as the first reads the even ones.
        Both run as one grouped stride-1 1x1 conv of :func:`even_odd` (``pixels``, where the
        caller has it: every edge leaving a node reads the same): torch 2.14's CPU backward
        of a stride-2 1x1 conv on channels_last input with 4 or 6 input channels corrupts the
        heap (``tests/space/test_factorized_reduce_crash.py``)."""
        z = even_odd(x, groups) if pixels is None else pixels
        w = _g.rep_cat([self.conv_1.weight, self.conv_2.weight], groups)
        return conv2d(z, w, None, 1, 0, 1, 2 * groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.branches(self.relu(x)))
        return out


def _register(name: str, factory: OpFactory) -> None:
    OPS.add(name, factory)


# Order = the reference's PRIMITIVES order (it fixes the alpha columns).
_register("none", lambda C, stride, affine: Zero(stride))
_register("max_pool_3x3", lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1))
_register("avg_pool_3x3",
          lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
_register("skip_connect",
          lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine))
_register("sep_conv_3x3", lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine))
_register("sep_conv_5x5", lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine))
_register("dil_conv_3x3", lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine))
_register("dil_conv_5x5", lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine))

PRIMITIVES: tuple[str, ...] = tuple(n for n in OPS if n != "none")
DARTS_PRIMITIVES: tuple[str, ...] = tuple(OPS)


def get_op(name: str) -> OpFactory:
    """The factory of op ``name``; ``KeyError`` lists the valid names."""
    return OPS.get_or_raise(name)


class MixedOp(nn.Module):
    """Softmax-weighted sum of every primitive on one edge (DARTS), the plain reference version.

    Supernet ops are non-affine and each pooling op is followed by a non-affine BN (DARTS).
    ``none`` contributes exactly zero, so it is not computed.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        self.primitives = tuple(primitives)
        self._ops = nn.ModuleList()
        for name in self.primitives:
            op = get_op(name)(C, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        for w, name, op in zip(weights, self.primitives, self._ops):
            if name == "none":
                continue
            term = w * op(x)
            out = term if out is None else out + term
        if out is None:  # only `none`: a zero of the right shape
            out = self._ops[0](x)
        return out
