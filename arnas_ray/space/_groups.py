"""Run one network on several batches at once, stacked along the channel axis.

``g`` batches of the same shape ``[N, C, H, W]`` are laid side by side as one ``[N, g*C, H, W]``
tensor (batch ``i`` in channels ``i*C .. (i+1)*C``). Every layer of the supernet acts on each
channel block alone when its convolutions get ``g`` times the groups (weights repeated), its
batch norms normalise per channel (so each batch keeps its own batch statistics, exactly as in
separate passes) and concatenations interleave per block. The outputs, and the gradients with
respect to each batch's input, are those of ``g`` separate passes; the work is done in half the
kernel calls on twice as many channels, which CPUs (vector width 16 floats) and GPUs (launch
bound at search widths) run markedly faster. Running statistics of batch norms are not updated
by such passes (see :meth:`arnas_ray.space.Supernet.forward_groups`).

With ``g == 1`` every helper is the plain module call, running statistics included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["bn", "conv", "gcat", "rep"]


def rep(t: Tensor, g: int) -> Tensor:
    """``t`` repeated ``g`` times along its first axis (a weight for ``g`` channel blocks)."""
    return t if g == 1 else t.repeat(g, *([1] * (t.dim() - 1)))


def conv(m: nn.Conv2d, x: Tensor, g: int) -> Tensor:
    """``m(x)`` on each of ``g`` channel blocks (no bias: the supernet's convs have none)."""
    if g == 1:
        return m(x)
    return F.conv2d(x, rep(m.weight, g), None, m.stride, m.padding, m.dilation, m.groups * g)


def bn(m: nn.BatchNorm2d, x: Tensor, g: int, weight: Tensor | None = None) -> Tensor:
    """``m(x)`` (optionally with a per-channel ``weight`` in place of the affine one, no shift
    then) on each of ``g`` channel blocks; ``g > 1`` needs training mode (batch statistics)."""
    if g == 1 and weight is None:
        return m(x)
    if g == 1:
        training = m.training or not m.track_running_stats
        if m.training and m.num_batches_tracked is not None:
            m.num_batches_tracked.add_(1)
        momentum = m.momentum if m.momentum is not None else 0.1
        return F.batch_norm(x, m.running_mean, m.running_var, weight, None, training, momentum, m.eps)
    if not m.training:
        raise RuntimeError("grouped passes need batch statistics: put the model in training mode")
    if weight is None and m.affine:
        return F.batch_norm(x, None, None, rep(m.weight, g), rep(m.bias, g), True, 0.0, m.eps)
    return F.batch_norm(x, None, None, weight, None, True, 0.0, m.eps)


def _channels_last(t: Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def gcat(ts: Sequence[Tensor], g: int) -> Tensor:
    """``torch.cat(ts, dim=1)`` done per channel block: block ``i`` of the result is the
    concatenation of block ``i`` of every tensor. Keeps channels_last memory."""
    if g == 1:
        return torch.cat(list(ts), dim=1)
    if all(_channels_last(t) for t in ts):  # [N, H, W, g, C_k] rows: concatenate the last axis
        parts = [t.permute(0, 2, 3, 1).unflatten(3, (g, -1)) for t in ts]
        return torch.cat(parts, dim=4).flatten(3).permute(0, 3, 1, 2)
    return torch.cat([t.unflatten(1, (g, -1)) for t in ts], dim=2).flatten(1, 2)
