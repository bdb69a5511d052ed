"""A fused implementation of the supernet's mixed op (same parameters, same mathematics).

The plain :class:`~arnas_ray.space.ops.MixedOp` runs each primitive separately. Here the
primitives of one edge share work: one ReLU for all convolutions, the first pointwise
convolutions of all conv ops run as one grouped convolution, their batch norms as one, the pools'
batch norms as one, and the softmax weight of each op is folded into its (non-affine) batch
norm as a per-channel scale, so no separate multiply pass is needed. Parameter count and values
map one to one onto :class:`MixedOp` (``load_from_mixed``), and a test checks that outputs and
gradients agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray.space.ops import FactorizedReduce, MixedOp

__all__ = ["FUSABLE", "FusedMixedOp"]

# name -> (kernel, padding, dilation, is_sep)
_CONVS: dict[str, tuple[int, int, int, bool]] = {
    "sep_conv_3x3": (3, 1, 1, True),
    "sep_conv_5x5": (5, 2, 1, True),
    "dil_conv_3x3": (3, 2, 2, False),
    "dil_conv_5x5": (5, 4, 2, False),
}
_POOLS = ("max_pool_3x3", "avg_pool_3x3")
FUSABLE = frozenset({"none", "skip_connect", *_POOLS, *_CONVS})


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, scale: torch.Tensor | None) -> torch.Tensor:
    """Non-affine batch norm, optionally followed by a per-channel scale (folded in)."""
    return F.batch_norm(
        x, bn.running_mean, bn.running_var, scale, None,
        bn.training or not bn.track_running_stats, bn.momentum if bn.momentum is not None else 0.1, bn.eps,
    )


def _num_batches(bn: nn.BatchNorm2d) -> None:
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)


class FusedMixedOp(nn.Module):
    """Drop-in replacement of ``MixedOp(C, stride, primitives)`` for the DARTS/ARNAS primitives."""

    def __init__(self, C: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        unknown = set(primitives) - FUSABLE
        if unknown:
            raise ValueError(f"FusedMixedOp cannot fuse {sorted(unknown)}; fusable: {sorted(FUSABLE)}")
        self.C, self.stride = C, stride
        self.primitives = tuple(primitives)
        idx = {n: i for i, n in enumerate(self.primitives)}
        self.pools = [n for n in _POOLS if n in idx]
        seps = [n for n in _CONVS if n in idx and _CONVS[n][3]]
        dils = [n for n in _CONVS if n in idx and not _CONVS[n][3]]
        self.convs = seps + dils  # sep ops first: their pw1 outputs continue into the second block
        self.n_sep = len(seps)
        self.has_skip = "skip_connect" in idx
        # weight indices per group, registered as buffers so they follow .to(device)
        self.register_buffer("_pool_idx", torch.tensor([idx[n] for n in self.pools], dtype=torch.long), persistent=False)
        self.register_buffer("_conv_idx", torch.tensor([idx[n] for n in self.convs], dtype=torch.long), persistent=False)
        self._skip_i = idx.get("skip_connect", -1)
        if self.pools:
            self.bn_pool = nn.BatchNorm2d(len(self.pools) * C, affine=False)
        if self.has_skip and stride != 1:
            self.skip = FactorizedReduce(C, C, affine=False)
        if self.convs:
            self.dw1 = nn.ParameterList(
                [nn.Parameter(torch.empty(C, 1, _CONVS[n][0], _CONVS[n][0])) for n in self.convs])
            self.pw1 = nn.Parameter(torch.empty(len(self.convs) * C, C, 1, 1))
            self.bn1 = nn.BatchNorm2d(len(self.convs) * C, affine=False)
        if self.n_sep:
            self.dw2 = nn.ParameterList(
                [nn.Parameter(torch.empty(C, 1, _CONVS[n][0], _CONVS[n][0])) for n in seps])
            self.pw2 = nn.Parameter(torch.empty(self.n_sep * C, C, 1, 1))
            self.bn2 = nn.BatchNorm2d(self.n_sep * C, affine=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # same init as nn.Conv2d (kaiming uniform, a=sqrt(5))
        for p in self.parameters(recurse=False):
            nn.init.kaiming_uniform_(p, a=5 ** 0.5)
        for plist in (getattr(self, "dw1", []), getattr(self, "dw2", [])):
            for p in plist:
                nn.init.kaiming_uniform_(p, a=5 ** 0.5)
        if self.convs:
            # pw1 is n_conv stacked [C, C, 1, 1] convs: init each block with its own fan-in
            for blk in self.pw1.data.view(len(self.convs), self.C, self.C, 1, 1):
                nn.init.kaiming_uniform_(blk, a=5 ** 0.5)
        if self.n_sep:
            for blk in self.pw2.data.view(self.n_sep, self.C, self.C, 1, 1):
                nn.init.kaiming_uniform_(blk, a=5 ** 0.5)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        C, s = self.C, self.stride
        total: torch.Tensor | None = None

        def add(t: torch.Tensor, groups: int) -> None:
            nonlocal total
            if groups > 1:
                t = t.unflatten(1, (groups, C)).sum(1)  # [N, g*C, H, W] -> [N, C, H, W]
            total = t if total is None else total + t

        if self.pools:
            outs = [
                F.max_pool2d(x, 3, s, 1) if n == "max_pool_3x3"
                else F.avg_pool2d(x, 3, s, 1, count_include_pad=False)
                for n in self.pools
            ]
            pooled = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
            scale = weights[self._pool_idx].repeat_interleave(C)  # [g*C]
            add(_bn(pooled, self.bn_pool, scale), len(self.pools))
            _num_batches(self.bn_pool)
        if self.has_skip:
            w = weights[self._skip_i]
            add(w * (x if s == 1 else self.skip(x)), 1)
        if self.convs:
            r = F.relu(x)
            d = [
                F.conv2d(r, self.dw1[i], None, s, _CONVS[n][1], _CONVS[n][2], C)
                for i, n in enumerate(self.convs)
            ]
            h = d[0] if len(d) == 1 else torch.cat(d, 1)  # [N, n_conv*C, H', W']
            h = F.conv2d(h, self.pw1, None, 1, 0, 1, len(self.convs))
            w_conv = weights[self._conv_idx]
            n_sep = self.n_sep
            if n_sep:
                # sep ops: plain BN (their output continues), dil ops: BN with the op weight folded in
                ones = w_conv.new_ones(n_sep)
                scale = torch.cat([ones, w_conv[n_sep:]]).repeat_interleave(C)
            else:
                scale = w_conv.repeat_interleave(C)
            h = _bn(h, self.bn1, scale)
            _num_batches(self.bn1)
            if len(self.convs) > n_sep:
                add(h[:, n_sep * C:], len(self.convs) - n_sep)
            if n_sep:
                hs = F.relu(h[:, : n_sep * C])
                d2 = [
                    F.conv2d(hs[:, i * C:(i + 1) * C], self.dw2[i], None, 1, _CONVS[n][1], 1, C)
                    for i, n in enumerate(self.convs[:n_sep])
                ]
                h2 = d2[0] if n_sep == 1 else torch.cat(d2, 1)
                h2 = F.conv2d(h2, self.pw2, None, 1, 0, 1, n_sep)
                add(_bn(h2, self.bn2, w_conv[:n_sep].repeat_interleave(C)), n_sep)
                _num_batches(self.bn2)
        if total is None:  # only `none`
            N, _, H, W = x.shape
            total = x.new_zeros(N, C, (H + s - 1) // s, (W + s - 1) // s) * weights.sum()
        return total

    @torch.no_grad()
    def load_from_mixed(self, mixed: MixedOp) -> None:
        """Copy the parameters of an equivalent plain :class:`MixedOp` (for tests)."""
        ops = dict(zip(mixed.primitives, mixed._ops))
        C = self.C
        for i, n in enumerate(self.convs):
            seq = ops[n]
            self.dw1[i].copy_(seq[1].weight)
            self.pw1[i * C:(i + 1) * C].copy_(seq[2].weight)
            if i < self.n_sep:
                self.dw2[i].copy_(seq[5].weight)
                self.pw2[i * C:(i + 1) * C].copy_(seq[6].weight)
        if self.has_skip and self.stride != 1:
            self.skip.load_state_dict(ops["skip_connect"].state_dict())
