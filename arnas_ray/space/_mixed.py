"""A faster mixed op with the same parameters and the same mathematics as :class:`MixedOp`.

:class:`FusedMixedOp` has exactly the submodules (and state dict) of ``MixedOp`` and only
changes how they are evaluated on one edge:

* one ReLU of the edge input is shared by every convolution op (each op starts with ReLU);
  the ReLU inside a separable convolution runs in its first batch norm's pass
  (:func:`~arnas_ray.space._batchnorm.batch_norm_train` with ``relu``);
* the softmax weight ``w_k`` of each op is folded into its final non-affine batch norm as a
  per-channel scale, ``w_k * BN(h) == BN(h; weight = w_k)``, which saves a multiply pass and
  its backward for every op on every edge;
* ``none`` (exactly zero) is skipped;
* depthwise convolutions go through :func:`arnas_ray.space._dwconv.dw_conv` (a faster CPU
  backward, same mathematics);
* across the edges that leave the same node (a search cell passes one ``cache`` dict per
  source node): the ReLU of the input and each pooling are computed once, and in training
  mode so is the non-affine batch norm after a pooling (its output depends only on the
  batch): the first edge normalises, every other edge takes the same normalised tensor and
  its own running statistics get the same updates (``_groups.bn_groups`` and
  ``apply_updates``). In eval mode every edge normalises with its own running statistics;
* ``groups > 1`` evaluates several batches stacked along the channels in one call
  (:mod:`arnas_ray.space._groups`; used by ``Supernet.forward_groups``).

Grouping the convolutions of an edge into one grouped convolution was measured too and was
slower on CPU (the concatenations cost more than the saved kernel launches), so it is not
used. A test checks outputs, gradients and running statistics against ``MixedOp``.

In a :class:`~arnas_ray.space.supernet.Supernet` this per-edge evaluation serves eval mode;
in training mode a fused cell evaluates all its edges together across edges
(:mod:`arnas_ray.space._fused_cell`), reading the same modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray.space import _groups as _g
from arnas_ray.space._dwconv import dw_conv
from arnas_ray.space.ops import DilConv, FactorizedReduce, Identity, MixedOp, SepConv, even_odd

__all__ = ["FUSABLE", "FusedMixedOp"]

#: add each op's output into the edge's total (and each edge's into its node's state) in place:
#: they are fresh tensors that no backward formula saves, and an in-place add writes memory
#: that is already in cache. In-process A/B, first-order steps at the small shape (1 thread,
#: AMD EPYC): median 4.53 s in place against 4.70 s (6 pairs, 5 faster). A benchmark knob.
INPLACE = True

FUSABLE = frozenset({
    "none", "skip_connect", "max_pool_3x3", "avg_pool_3x3",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
})


def _bn_scaled(x: torch.Tensor, bn: nn.BatchNorm2d, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``w * bn(x)`` for a non-affine ``bn``, as one batch-norm call."""
    return _g.bn(bn, x, groups, weight=w.expand(x.shape[1]).contiguous())


def _pool_bn(name: str, op: nn.Sequential, x: torch.Tensor, w: torch.Tensor,
             cache: dict[str, object], groups: int = 1) -> torch.Tensor:
    """``w * BN(pool(x))`` with the pooling (and, in training mode, the normalisation) shared
    through ``cache`` by all edges leaving the node ``x``."""
    pooled = cast("torch.Tensor | None", cache.get(name))
    if pooled is None:
        pooled = cache[name] = op[0](x)
    bn = cast(nn.BatchNorm2d, op[1])
    if not bn.training:  # eval mode: every edge normalises with its own running statistics
        return _bn_scaled(pooled, bn, w, groups)
    hit = cast("tuple[torch.Tensor, _g.Token | None] | None", cache.get(name + ".bn"))
    if hit is None:  # batch statistics (per channel block); this edge's running statistics updated
        hit = cache[name + ".bn"] = _g.bn_groups(bn, pooled, groups)
    else:  # the same normalised tensor; this edge's running statistics get the same updates
        _g.apply_updates(bn, hit[1])
    return w * hit[0]


class FusedMixedOp(MixedOp):
    """Drop-in replacement of ``MixedOp(C, stride, primitives)``; see the module docstring."""

    def __init__(self, C: int, stride: int, primitives: Sequence[str]):
        unknown = set(primitives) - FUSABLE
        if unknown:
            raise ValueError(f"FusedMixedOp cannot fuse {sorted(unknown)}; fusable: {sorted(FUSABLE)}")
        super().__init__(C, stride, primitives)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                cache: dict[str, object] | None = None, groups: int = 1) -> torch.Tensor:
        """``sum_k weights[k] * op_k(x)``; ``cache`` is shared by the edges leaving the node ``x``;
        ``groups`` batches stacked along the channels (:mod:`arnas_ray.space._groups`)."""
        g = groups
        if cache is None:
            cache = {}
        relu_x: torch.Tensor | None = cache.get("relu")  # type: ignore[assignment]
        total: torch.Tensor | None = None
        rows, ws = self._scales(weights, x.shape[1], g)
        for k, (name, op) in enumerate(zip(self.primitives, self._ops)):
            if name == "none":
                continue
            if isinstance(op, SepConv):
                if relu_x is None:
                    relu_x = F.relu(x)
                h = _g.bn(cast(nn.BatchNorm2d, op[3]),
                          _g.conv(cast(nn.Conv2d, op[2]), dw_conv(cast(nn.Conv2d, op[1]), relu_x, g), g), g, relu=True)
                h = _g.conv(cast(nn.Conv2d, op[6]), dw_conv(cast(nn.Conv2d, op[5]), h, g), g)
                t = _g.bn(cast(nn.BatchNorm2d, op[7]), h, g, weight=rows[k])
            elif isinstance(op, DilConv):
                if relu_x is None:
                    relu_x = F.relu(x)
                h = _g.conv(cast(nn.Conv2d, op[2]), dw_conv(cast(nn.Conv2d, op[1]), relu_x, g), g)
                t = _g.bn(cast(nn.BatchNorm2d, op[3]), h, g, weight=rows[k])
            elif isinstance(op, nn.Sequential):  # pool -> BN(affine=False)
                t = _pool_bn(name, op, x, ws[k], cache, g)
            elif isinstance(op, Identity):
                t = ws[k] * x
            elif isinstance(op, FactorizedReduce):
                if relu_x is None:
                    relu_x = F.relu(x)
                pixels = cache.get("pixels")
                if pixels is None:  # shared by the edges leaving x
                    pixels = cache["pixels"] = even_odd(relu_x, g)
                t = _g.bn(op.bn, op.branches(relu_x, g, cast(torch.Tensor, pixels)), g, weight=rows[k])
            else:  # pragma: no cover - FUSABLE guards this
                t = ws[k] * op(x)
            # in place: every op's output is a fresh tensor that no backward formula saves
            total = t if total is None else (total.add_(t) if INPLACE else total + t)
        if relu_x is not None:
            cache["relu"] = relu_x
        if total is None:  # only `none`
            total = self._ops[0](x) * weights.sum()
        return total

    def _scales(self, weights: torch.Tensor, channels: int, g: int
                ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Per op column: the per-channel scale ``[channels]`` of its final batch norm (conv
        ops, FactorizedReduce) and the factor of the others (poolings, identity), a scalar or,
        for per-block op weights ``[g, K]`` (:func:`~arnas_ray.space._groups.block_params`), a
        ``[1, channels, 1, 1]`` per-block vector. Only the columns used are gathered, so the
        backward materialises no zero gradients for ``none`` and the unused entries."""
        cols = getattr(self, "_cols", None)  # built on first use, per device (not state)
        if cols is None or cols[0] != weights.device:
            scaled = [k for k, op in enumerate(self._ops) if isinstance(op, (SepConv, DilConv, FactorizedReduce))]
            plain = [k for k, name in enumerate(self.primitives) if name != "none" and k not in scaled]
            cols = self._cols = (weights.device, scaled, plain, torch.tensor(scaled, device=weights.device),
                                             torch.tensor(plain, device=weights.device))
        _, scaled, plain, i_scaled, i_plain = cols
        rows: dict[int, torch.Tensor] = {}
        ws: dict[int, torch.Tensor] = {}
        if weights.dim() == 1:
            if scaled:
                rows = dict(zip(scaled, weights.index_select(0, i_scaled).unsqueeze(1).expand(-1, channels)
                                .contiguous().unbind(0)))
            if plain:
                ws = dict(zip(plain, weights.index_select(0, i_plain).unbind(0)))
        else:  # [g, K]: each batch block its own op weights
            if scaled:
                rows = dict(zip(scaled, weights.index_select(1, i_scaled).t()
                                .repeat_interleave(channels // g, dim=1).unbind(0)))
            if plain:
                ws = {k: r.view(1, -1, 1, 1) for k, r in zip(plain, weights.index_select(1, i_plain).t()
                                                              .repeat_interleave(channels // g, dim=1).unbind(0))}
        return rows, ws

    @torch.no_grad()
    def load_from_mixed(self, mixed: MixedOp) -> None:
        """Copy parameters and buffers of an equivalent plain :class:`MixedOp`."""
        self.load_state_dict(mixed.state_dict())
