"""Discrete cell architectures (genotypes): JSON, validation, DARTS derivation, known genotypes.

A genotype holds, for each cell type, a list of ``(op, input)`` pairs (two per intermediate
node, nodes in order) and the list of states concatenated into the cell output. Inputs: ``0`` is
``c_{k-2}``, ``1`` is ``c_{k-1}``, ``j >= 2`` is intermediate node ``j``. Genotypes are data:
they round-trip through JSON and are never ``eval``-ed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from arnas_ray.errors import SpecError
from arnas_ray.space.ops import OPS

__all__ = ["GENOTYPES", "CellGenotype", "Genotype", "derive_genotype"]

Edge = tuple[str, int]


@dataclass(frozen=True)
class CellGenotype:
    edges: tuple[Edge, ...]
    concat: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.edges) // 2


@dataclass(frozen=True)
class Genotype:
    """Per cell type a :class:`CellGenotype`; validated at construction.

    Example:
        >>> g = GENOTYPES["ARNAS"]
        >>> Genotype.from_json(g.to_json()) == g
        True
    """

    cells: Mapping[str, CellGenotype]

    def __post_init__(self) -> None:
        if not isinstance(self.cells, Mapping) or not self.cells:
            raise SpecError("genotype.cells", f"expected a non-empty mapping of cell types, got {self.cells!r}")
        valid_ops = sorted(n for n in OPS if n != "none")
        for ctype, cell in self.cells.items():
            path = f"genotype.cells.{ctype}"
            if not isinstance(ctype, str) or not ctype:
                raise SpecError("genotype.cells", f"cell type names must be non-empty strings, got {ctype!r}")
            if not isinstance(cell, CellGenotype):
                raise SpecError(path, f"expected a CellGenotype, got {type(cell).__name__}")
            if len(cell.edges) == 0 or len(cell.edges) % 2:
                raise SpecError(f"{path}.edges", f"needs 2 edges per node (an even, non-zero count), got {len(cell.edges)}")
            for e, edge in enumerate(cell.edges):
                node = 2 + e // 2
                if not (isinstance(edge, tuple) and len(edge) == 2):
                    raise SpecError(f"{path}.edges[{e}]", f"expected [op, input], got {edge!r}")
                op, inp = edge
                if op not in valid_ops:
                    raise SpecError(f"{path}.edges[{e}]", f"unknown op {op!r}; valid: {valid_ops}")
                if isinstance(inp, bool) or not isinstance(inp, int) or not 0 <= inp < node:
                    raise SpecError(
                        f"{path}.edges[{e}]",
                        f"node {node} may only take inputs 0..{node - 1} (earlier states), got input {inp!r}",
                    )
            n_states = 2 + cell.steps
            if not cell.concat:
                raise SpecError(f"{path}.concat", "must list at least one state")
            for c in cell.concat:
                if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n_states:
                    raise SpecError(f"{path}.concat", f"states are 0..{n_states - 1}, got {c!r}")
            if len(set(cell.concat)) != len(cell.concat):
                raise SpecError(f"{path}.concat", f"repeats a state: {list(cell.concat)!r}")

    def __getitem__(self, cell_type: str) -> CellGenotype:
        try:
            return self.cells[cell_type]
        except KeyError:
            raise KeyError(f"genotype has no cell type {cell_type!r}; it has {sorted(self.cells)}") from None

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(self.cells)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genotype) and dict(self.cells) == dict(other.cells)

    def __hash__(self) -> int:
        return hash(self.to_json())

    # ---- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": {
                t: {"edges": [[op, i] for op, i in c.edges], "concat": list(c.concat)}
                for t, c in self.cells.items()
            }
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        """Strict parse of the JSON structure; every error is a ``SpecError`` naming the path."""
        if not isinstance(data, Mapping):
            raise SpecError("genotype", f"expected a mapping with key 'cells', got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in ("cells", "name"))  # keys may be 1, None
        if unknown:
            raise SpecError(f"genotype.{unknown[0]}", "unknown field; valid: ['cells', 'name']")
        cells_in = data.get("cells")
        if not isinstance(cells_in, Mapping) or not cells_in:
            raise SpecError("genotype.cells", f"expected a non-empty mapping of cell types, got {cells_in!r}")
        cells: dict[str, CellGenotype] = {}
        for ctype, cell in cells_in.items():
            path = f"genotype.cells.{ctype}"
            if not isinstance(ctype, str):
                raise SpecError("genotype.cells", f"cell type names must be strings, got {ctype!r}")
            if not isinstance(cell, Mapping) or set(cell) - {"edges", "concat"} or "edges" not in cell:
                raise SpecError(path, f"expected {{'edges': [[op, input], ...], 'concat': [...]}}, got {cell!r}")
            edges_in = cell["edges"]
            if isinstance(edges_in, (str, bytes)) or not isinstance(edges_in, Sequence):
                raise SpecError(f"{path}.edges", f"expected a list of [op, input] pairs, got {edges_in!r}")
            edges = []
            for e, pair in enumerate(edges_in):
                if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                    raise SpecError(f"{path}.edges[{e}]", f"expected [op, input], got {pair!r}")
                edges.append((pair[0], pair[1]))
            steps = len(edges) // 2
            concat_in = cell.get("concat", list(range(2, 2 + steps)))
            if isinstance(concat_in, (str, bytes)) or not isinstance(concat_in, Sequence):
                raise SpecError(f"{path}.concat", f"expected a list of state indices, got {concat_in!r}")
            cells[ctype] = CellGenotype(tuple(edges), tuple(concat_in))
        return cls(cells)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise SpecError("genotype", f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def resolve(cls, name_or_path: str) -> Genotype:
        """A known genotype by name (``ARNAS``, ``DARTS_V2``...) or a JSON file path."""
        if name_or_path in GENOTYPES:
            return GENOTYPES[name_or_path]
        from pathlib import Path

        p = Path(name_or_path)
        if p.suffix == ".json" or p.exists():
            if not p.is_file():
                raise SpecError("genotype", f"genotype file {str(p)!r} does not exist")
            return cls.from_json(p.read_text())
        raise SpecError("genotype", f"unknown genotype {name_or_path!r}; known: {sorted(GENOTYPES)} or a .json file")

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
