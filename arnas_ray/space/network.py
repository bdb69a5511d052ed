"""The discrete network built from a :class:`Genotype` over a :class:`Layout`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray.space.genotype import CellGenotype, Genotype
from arnas_ray.space.layout import Layout
from arnas_ray.space.ops import FactorizedReduce, Identity, ReLUConvBN, get_op
from arnas_ray.space.supernet import stem

__all__ = ["AuxiliaryHead", "Network", "drop_path"]


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole examples of a branch with probability ``drop_prob`` and rescale the rest."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    def __init__(self, cell: CellGenotype, C_pp: int, C_p: int, C: int, *, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        self._indices = [i for _, i in cell.edges]
        self._concat = list(cell.concat)
        self.multiplier = len(cell.concat)
        self._ops = nn.ModuleList(
            get_op(name)(C, 2 if reduction and idx < 2 else 1, True) for name, idx in cell.edges
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            hs = []
            for k in (2 * i, 2 * i + 1):
                op = self._ops[k]
                h = op(states[self._indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS CIFAR auxiliary classifier on the cell at 2L/3 (excluded from parameter counts).

    The reference pools 8x8 features with a 5x5/3 average pool to 2x2; for other feature sizes
    (e.g. 16x16 digits -> 4x4) an adaptive pool to 2x2 is used (the pools have no parameters).
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if x.shape[-1] == 8 and x.shape[-2] == 8:
            x = F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)  # [N, C, 2, 2]
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        out: torch.Tensor = self.classifier(self.features(x).flatten(1))
        return out


class Network(nn.Module):
    """A discrete ARNAS/DARTS network for CIFAR-sized inputs.

    ``forward(x)`` returns logits (so attacks and evaluation see one tensor);
    ``forward(x, with_aux=True)`` returns ``(logits, aux_logits_or_None)`` for training.

    Args:
        genotype: must have every cell type the layout uses (and ``reduce``).
        layout: cell placement and channel ratios.
        C: base width; num_classes: outputs; cells: number of cells L.
        auxiliary: add the auxiliary head on the cell at ``2L // 3``.
        drop_path_prob: drop-path rate (set per epoch by the trainer).

    Example:
        >>> from arnas_ray.space.genotype import GENOTYPES
        >>> net = Network(GENOTYPES["ARNAS"], Layout.preset("arnas"), C=4, num_classes=10, cells=5)
        >>> net(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, genotype: Genotype, layout: Layout, C: int, num_classes: int, cells: int, *,
                 auxiliary: bool = False, drop_path_prob: float = 0.0, stem_multiplier: int = 3,
                 in_channels: int = 3):
        super().__init__()
        self.genotype, self.layout, self.cells_n = genotype, layout, cells
        self.drop_path_prob = drop_path_prob
        missing = [t for t in layout.cell_types if t not in genotype.cells]
        if missing:
            from arnas_ray.errors import SpecError

            raise SpecError("genotype", f"lacks cell type(s) {missing} needed by layout {layout.name!r}; "
                                        f"it has {sorted(genotype.cells)}")
        C_stem = stem_multiplier * C
        self.stem = stem(in_channels, C_stem)
        C_pp, C_p = C_stem, C_stem
        reduction_prev = False
        self.cells = nn.ModuleList()
        self._aux_index = 2 * cells // 3
        C_aux = C_p
        for p in layout.plan(cells, C):
            cell = Cell(genotype[p.cell_type], C_pp, C_p, p.width, reduction=p.reduction,
                        reduction_prev=reduction_prev)
            self.cells.append(cell)
            reduction_prev = p.reduction
            C_pp, C_p = C_p, cell.multiplier * p.width
            if p.index == self._aux_index:
                C_aux = C_p
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: torch.Tensor, *, with_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and with_aux and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return (logits, aux) if with_aux else logits
