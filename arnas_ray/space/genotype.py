"""Genotypes of the search space: the op-checked :class:`Genotype`, DARTS derivation, known ones.

The data, the structural checks and the JSON form live in the torch-free core
:mod:`arnas_ray._genotype` (read by the results layer too); here the op names are checked
against :data:`~arnas_ray.space.ops.OPS` (``none`` is never part of a genotype).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from arnas_ray._genotype import BaseGenotype, CellGenotype, Edge
from arnas_ray.errors import SpecError
from arnas_ray.space.ops import OPS

__all__ = ["GENOTYPES", "CellGenotype", "Genotype", "derive_genotype"]


@dataclass(frozen=True, eq=False)
class Genotype(BaseGenotype):
    """Per cell type a :class:`CellGenotype`, every op a registered one; validated at construction.

    Example:
        >>> g = GENOTYPES["ARNAS"]
        >>> Genotype.from_json(g.to_json()) == g
        True
    """

    @classmethod
    def valid_ops(cls) -> Collection[str]:
        return sorted(n for n in OPS if n != "none")

    @classmethod
    def resolve(cls, name_or_path: str) -> Genotype:
        """A known genotype by name (``ARNAS``, ``DARTS_V2``...) or a JSON file path.

        Raises:
            SpecError: an unknown name, or a ``.json`` path that does not exist.
            FileFormatError: the file cannot be read or holds no valid genotype (a
                ``SpecError`` whose message starts with the file).
        """
        if name_or_path in GENOTYPES:
            return GENOTYPES[name_or_path]
        p = Path(name_or_path)
        if p.suffix == ".json" or p.exists():
            if not p.is_file():
                raise SpecError("genotype", f"genotype file {str(p)!r} does not exist")
            return cls.from_file(p)
        raise SpecError("genotype", f"unknown genotype {name_or_path!r}; known: "
                                    f"{sorted(GENOTYPES)} or a .json file")

    @classmethod
    def from_alphas(cls, alphas: Mapping[str, torch.Tensor], primitives: Sequence[str], *, steps: int = 4,
                    multiplier: int = 4) -> Genotype:
        return derive_genotype(alphas, primitives, steps=steps, multiplier=multiplier)


def derive_genotype(alphas: Mapping[str, torch.Tensor], primitives: Sequence[str], *, steps: int = 4,
                    multiplier: int = 4) -> Genotype:
    """The DARTS discretisation rule, as a pure function.

    For each cell type, softmax the alpha rows [E, K] (E = sum_{i<steps} (2 + i) edges); for node
    i keep the two incoming edges whose strongest non-``none`` op weight is largest, each with that
    op. Ties go to the lower edge / op index. Concat = the last ``multiplier`` nodes.

    Args:
        alphas: cell type -> Tensor[E, K] of architecture logits.
        primitives: the K op names, in column order.
    """
    prims = list(primitives)
    n_edges = sum(2 + i for i in range(steps))
    cells = {}
    for ctype, a in alphas.items():
        if tuple(a.shape) != (n_edges, len(prims)):
            raise SpecError(f"alphas.{ctype}", f"expected shape ({n_edges}, {len(prims)}), got {tuple(a.shape)}")
        w = torch.softmax(a.detach().double().cpu(), dim=-1)  # [E, K]
        if "none" in prims:
            w[:, prims.index("none")] = -1.0  # never chosen, never ranks an edge
        edges: list[Edge] = []
        start = 0
        for i in range(steps):
            W = w[start : start + 2 + i]  # [2+i, K]
            strength = W.max(dim=1).values
            order = sorted(range(2 + i), key=lambda j: (-float(strength[j]), j))[:2]
            for j in sorted(order, key=lambda j: (-float(strength[j]), j)):
                k = int(torch.argmax(W[j]))  # first maximum
                edges.append((prims[k], j))
            start += 2 + i
        cells[ctype] = CellGenotype(tuple(edges), tuple(range(2 + steps - multiplier, 2 + steps)))
    return Genotype(cells)


def _cell(pairs: str, concat: Sequence[int] = (2, 3, 4, 5)) -> CellGenotype:
    edges = []
    for token in pairs.split():
        op, idx = token.split(",")
        edges.append((op, int(idx)))
    return CellGenotype(tuple(edges), tuple(concat))


GENOTYPES: dict[str, Genotype] = {
    # Published ARNAS genotype (Ou et al., CVPR 2024; reference code genotypes.py).
    "ARNAS": Genotype({
        "accurate": _cell("skip_connect,0 skip_connect,1 sep_conv_5x5,0 sep_conv_3x3,1 "
                          "sep_conv_5x5,3 sep_conv_3x3,1 sep_conv_5x5,4 skip_connect,0"),
        "reduce": _cell("avg_pool_3x3,1 avg_pool_3x3,0 dil_conv_5x5,2 avg_pool_3x3,0 "
                        "dil_conv_5x5,3 dil_conv_5x5,2 dil_conv_5x5,4 dil_conv_5x5,3"),
        "robust": _cell("dil_conv_5x5,0 dil_conv_5x5,1 dil_conv_5x5,1 dil_conv_5x5,2 "
                        "dil_conv_3x3,3 dil_conv_5x5,2 dil_conv_3x3,4 dil_conv_3x3,3"),
    }),
    # DARTS (second order), Liu et al. ICLR 2019; `darts` layout (cell types normal, reduce).
    "DARTS_V2": Genotype({
        "normal": _cell("sep_conv_3x3,0 sep_conv_3x3,1 sep_conv_3x3,0 sep_conv_3x3,1 "
                        "sep_conv_3x3,1 skip_connect,0 skip_connect,0 dil_conv_3x3,2"),
        "reduce": _cell("max_pool_3x3,0 max_pool_3x3,1 skip_connect,2 max_pool_3x3,1 "
                        "max_pool_3x3,0 skip_connect,2 skip_connect,2 max_pool_3x3,1"),
    }),
}
