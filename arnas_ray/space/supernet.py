"""The DARTS-style supernet over a :class:`Layout`: one set of architecture weights per cell type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray.space import _groups as _g
from arnas_ray.space import _mixed
from arnas_ray.space._fused_cell import CellFusion
from arnas_ray.space._mixed import FUSABLE, FusedMixedOp
from arnas_ray.space._preprocess import preprocess
from arnas_ray.space.genotype import Genotype, derive_genotype
from arnas_ray.space.layout import Layout
from arnas_ray.space.ops import PRIMITIVES, FactorizedReduce, MixedOp, ReLUConvBN

__all__ = ["Supernet", "frozen_running_stats", "stem"]

ALPHA_PREFIX = "alphas."
frozen_running_stats = _g.frozen_updates  # passes inside leave the running statistics of fused batch norms alone


def stem(in_channels: int, C_stem: int) -> nn.Sequential:
    """3x3 conv to ``C_stem`` channels + BN (DARTS CIFAR stem)."""
    return nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))


class SearchCell(nn.Module):
    """A DARTS search cell: two preprocessed inputs, ``steps`` nodes, each the sum of mixed ops
    on all earlier states; output = concat of the last ``multiplier`` nodes."""

    def __init__(self, C_pp: int, C_p: int, C: int, *, reduction: bool, reduction_prev: bool,
                 primitives: Sequence[str], steps: int, multiplier: int, fused: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_pp, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_pp, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.steps, self.multiplier = steps, multiplier
        self.fused = fused
        op_cls = FusedMixedOp if fused else MixedOp
        self._ops = nn.ModuleList(
            op_cls(C, 2 if reduction and j < 2 else 1, primitives) for i in range(steps) for j in range(2 + i)
        )
        # training mode, fused, small states: the edges leaving each node computed together (no
        # state of its own); larger states go one edge at a time (CellFusion.pays)
        self.fusion = CellFusion(primitives, steps, C, reduction=reduction) if fused else None

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, groups: int = 1) -> torch.Tensor:
        g = groups
        if self.fusion is not None and self.training and self.fusion.pays(s1, g):
            return self.fusion.forward(self, s0, s1, weights, g, self.multiplier)
        states = [preprocess(self.preprocess0, s0, g), preprocess(self.preprocess1, s1, g)]
        caches: list[dict[str, object]] = [{}, {}]  # per source node, shared by its out-edges (fused ops)
        rows = weights.unbind(-2)  # per edge ([K], or [g, K] per batch block); one op, not a select per edge
        offset = 0
        for _ in range(self.steps):
            s = None
            for j, h in enumerate(states):
                op = self._ops[offset + j]
                t = op(h, rows[offset + j], caches[j], g) if self.fused else op(h, rows[offset + j])
                s = t if s is None else (s.add_(t) if self.fused and _mixed.INPLACE else s + t)  # fused ops' outputs are fresh
            offset += len(states)
            states.append(cast(torch.Tensor, s))  # states is never empty: not None
            caches.append({})
        return _g.gcat(states[-self.multiplier:], g)  # [N, g*multiplier*C, H, W]


class Supernet(nn.Module):
    """Weight-sharing supernet of an ARNAS search space.

    Architecture parameters live in ``self.alphas`` (an ``nn.ParameterDict``, one ``[E, K]``
    tensor per cell type of the layout, E = 14 edges for 4 nodes, K = number of primitives,
    init ``1e-3 * randn``); everything else is a weight. Ops are non-affine, as in DARTS.

    Args:
        layout: cell placement and channel ratios.
        C: base width (per-node channels of stage 0).
        num_classes: classifier outputs.
        cells: number of cells L (reductions at ``k L // S``).
        primitives: op names, the alpha columns (default: the 7 ARNAS ops).
        fused: when the primitives allow it, use :class:`FusedMixedOp` edges and, in training
            mode, evaluate each cell's edges together across edges
            (:mod:`arnas_ray.space._fused_cell`); same mathematics and state dict, faster.

    Example:
        >>> net = Supernet(Layout.preset("arnas"), C=4, num_classes=10, cells=3)
        >>> net(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 10])
        >>> sorted(net.arch_parameters())
        ['accurate', 'reduce', 'robust']
    """

    def __init__(self, layout: Layout, C: int, num_classes: int, cells: int, *,
                 primitives: Sequence[str] = PRIMITIVES, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, in_channels: int = 3, fused: bool = True):
        super().__init__()
        self.layout, self.C, self.num_classes, self.cells_n = layout, C, num_classes, cells
        self.primitives = tuple(primitives)
        self.steps, self.multiplier = steps, multiplier
        fused = fused and set(self.primitives) <= FUSABLE
        C_stem = stem_multiplier * C
        self.stem = stem(in_channels, C_stem)
        self.plan = layout.plan(cells, C)
        C_pp, C_p = C_stem, C_stem
        reduction_prev = False
        self.cells = nn.ModuleList()
        for p in self.plan:
            self.cells.append(SearchCell(C_pp, C_p, p.width, reduction=p.reduction, reduction_prev=reduction_prev,
                                         primitives=self.primitives, steps=steps, multiplier=multiplier, fused=fused))
            reduction_prev = p.reduction
            C_pp, C_p = C_p, multiplier * p.width
        self.classifier = nn.Linear(C_p, num_classes)
        n_edges = sum(2 + i for i in range(steps))
        self.alphas = nn.ParameterDict({
            t: nn.Parameter(1e-3 * torch.randn(n_edges, len(self.primitives))) for t in layout.cell_types
        })
        self._cell_types = [p.cell_type for p in self.plan]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self._features(x, 1))
        return out

    def forward_groups(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The logits of several same-shaped batches from one pass (training mode only).

        The batches are stacked along the channels (:mod:`arnas_ray.space._groups`): each keeps
        its own batch-norm statistics, so the logits and the input gradients equal those of
        separate ``forward`` calls, in fewer and wider kernels. Running statistics get the
        updates of the separate calls, in the order of ``xs``. The search uses it for its two
        PGD attacks (``SearchConfig.pair_attacks``).

        Raises:
            ValueError: shapes differ, the model is in eval mode or uses plain ``MixedOp``s.
        """
        g = len(xs)
        if g == 1:
            return [self(xs[0])]
        if any(x.shape != xs[0].shape for x in xs):
            raise ValueError(f"forward_groups needs batches of one shape, got {[tuple(x.shape) for x in xs]}")
        if not self.training:
            raise ValueError("forward_groups needs training mode (batch statistics)")
        if not all(c.fused for c in self.cells):
            raise ValueError("forward_groups needs fused mixed ops (fused=True and fusable primitives)")
        feats = self._features(torch.cat(list(xs), dim=1), g)  # batch i in channel block i
        return list(_g.linear(self.classifier, torch.unflatten(feats, 1, (g, -1)), g).unbind(1))  # [N, g, C_last]

    def _features(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Globally pooled features ``[N, g*C_last]`` of ``g`` batches stacked along the channels."""
        # each [E, K], or [g, E, K] where the batch blocks have their own alphas (_groups.block_params)
        weights = {t: _g.per_block(a, g, lambda u: F.softmax(u, dim=-1)) for t, a in self.alphas.items()}
        with _g.deferred_updates():  # running-statistic updates of shared BNs, applied at once
            s0 = s1 = _g.bn(cast(nn.BatchNorm2d, self.stem[1]), _g.conv(cast(nn.Conv2d, self.stem[0]), x, g), g)
            for cell, ctype in zip(self.cells, self._cell_types):
                s0, s1 = s1, cell(s0, s1, weights[ctype], g)
        return F.adaptive_avg_pool2d(s1, 1).flatten(1)

    @property
    def running_stats_freezable(self) -> bool:
        """Whether :func:`frozen_running_stats` keeps every running statistic of this supernet
        unchanged in training mode (every cell fused: all its batch norms, across edges or one
        edge at a time, update through :mod:`arnas_ray.space._groups`; plain ``MixedOp`` batch
        norms update their own)."""
        return all(cell.fusion is not None for cell in self.cells)

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """Architecture parameters by cell type name."""
        return dict(self.alphas.items())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(ALPHA_PREFIX)]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(ALPHA_PREFIX)]

    def genotype(self) -> Genotype:
        """The discrete genotype by the DARTS rule."""
        return derive_genotype(self.arch_parameters(), self.primitives, steps=self.steps,
                               multiplier=self.multiplier)
