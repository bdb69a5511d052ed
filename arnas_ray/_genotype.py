"""The torch-free core of a genotype: cells as data, structural validation and JSON.

A genotype holds, for each cell type, a list of ``(op, input)`` pairs (two per intermediate
node, nodes in order) and the list of states concatenated into the cell output. Inputs: ``0`` is
``c_{k-2}``, ``1`` is ``c_{k-1}``, ``j >= 2`` is intermediate node ``j``. Genotypes are data:
they round-trip through JSON and are never ``eval``-ed::

    {"cells": {"accurate": {"edges": [["skip_connect", 0], ["skip_connect", 1], ...],
                            "concat": [2, 3, 4, 5]}, "reduce": {...}, "robust": {...}}}

:class:`BaseGenotype` checks the structure (two edges per node, inputs from earlier states,
concat indices) and that ops are non-empty names; the results layer (no torch) reads
genotypes with it. :class:`arnas_ray.space.Genotype` is the same data with the op names
checked against the op registry, and the DARTS derivation and the known genotypes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from arnas_ray.errors import FileFormatError, SpecError

__all__ = ["BaseGenotype", "CellGenotype", "Edge"]

Edge = tuple[str, int]
G = TypeVar("G", bound="BaseGenotype")
_FIELDS = ("cells", "name")
_MAX_REPR = 80


@dataclass(frozen=True)
class CellGenotype:
    """One cell: ``edges`` (two ``(op, input)`` per intermediate node) and ``concat``."""

    edges: tuple[Edge, ...]
    concat: tuple[int, ...]

    @property
    def steps(self) -> int:
        """The number of intermediate nodes."""
        return len(self.edges) // 2


def _short(value: Any) -> str:
    """``repr(value)`` cut to one readable line (a file may hold anything)."""
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _check_edges(path: str, edges: Any, valid_ops: Collection[str] | None) -> None:
    if not _is_list(edges) or len(edges) == 0 or len(edges) % 2:
        count = len(edges) if _is_list(edges) else _short(edges)
        raise SpecError(f"{path}.edges", f"needs 2 edges per node (an even, non-zero count), "
                                         f"got {count}")
    for e, edge in enumerate(edges):
        node = 2 + e // 2
        if not (isinstance(edge, tuple) and len(edge) == 2):
            raise SpecError(f"{path}.edges[{e}]", f"expected [op, input], got {_short(edge)}")
        op, inp = edge
        if not isinstance(op, str) or not op:
            raise SpecError(f"{path}.edges[{e}]", f"the op must be a non-empty name, got "
                                                  f"{_short(op)}")
        if valid_ops is not None and op not in valid_ops:
            raise SpecError(f"{path}.edges[{e}]", f"unknown op {_short(op)}; valid: "
                                                  f"{sorted(valid_ops)}")
        if not _is_index(inp) or not 0 <= inp < node:
            raise SpecError(f"{path}.edges[{e}]", f"node {node} may only take inputs "
                                                  f"0..{node - 1} (earlier states), got input "
                                                  f"{_short(inp)}")


def _check_concat(path: str, cell: CellGenotype) -> None:
    n_states = 2 + cell.steps
    if not _is_list(cell.concat) or not cell.concat:
        raise SpecError(f"{path}.concat", "must list at least one state")
    for c in cell.concat:
        if not _is_index(c) or not 0 <= c < n_states:
            raise SpecError(f"{path}.concat", f"states are 0..{n_states - 1}, got {_short(c)}")
    if len(set(cell.concat)) != len(cell.concat):
        raise SpecError(f"{path}.concat", f"repeats a state: {_short(list(cell.concat))}")


def _parse_cell(path: str, cell: Any) -> CellGenotype:
    """One cell of the JSON structure, as a :class:`CellGenotype` (checked afterwards)."""
    if not isinstance(cell, Mapping) or set(cell) - {"edges", "concat"} or "edges" not in cell:
        raise SpecError(path, f"expected {{'edges': [[op, input], ...], 'concat': [...]}}, "
                              f"got {_short(cell)}")
    edges_in = cell["edges"]
    if isinstance(edges_in, (str, bytes)) or not isinstance(edges_in, Sequence):
        raise SpecError(f"{path}.edges", f"expected a list of [op, input] pairs, got {_short(edges_in)}")
    edges = []
    for e, pair in enumerate(edges_in):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise SpecError(f"{path}.edges[{e}]", f"expected [op, input], got {_short(pair)}")
        edges.append((pair[0], pair[1]))
    concat_in = cell.get("concat", list(range(2, 2 + len(edges) // 2)))
    if isinstance(concat_in, (str, bytes)) or not isinstance(concat_in, Sequence):
        raise SpecError(f"{path}.concat", f"expected a list of state indices, got {_short(concat_in)}")
    return CellGenotype(tuple(edges), tuple(concat_in))


@dataclass(frozen=True, eq=False)
class BaseGenotype:
    """Per cell type a :class:`CellGenotype`; the structure is validated at construction.

    Subclasses name the valid ops by overriding :meth:`valid_ops` (``None``: any name).

    Example:
        >>> g = BaseGenotype.from_json('{"cells": {"n": {"edges": [["a", 0], ["b", 1]]}}}')
        >>> g["n"].edges, g["n"].concat
        ((('a', 0), ('b', 1)), (2,))
        >>> BaseGenotype.from_json(g.to_json()) == g
        True
    """

    cells: Mapping[str, CellGenotype]

    @classmethod
    def valid_ops(cls) -> Collection[str] | None:
        """The op names a cell may use; ``None`` accepts any non-empty name."""
        return None

    def __post_init__(self) -> None:
        if not isinstance(self.cells, Mapping) or not self.cells:
            raise SpecError("genotype.cells",
                            f"expected a non-empty mapping of cell types, got {_short(self.cells)}")
        valid_ops = self.valid_ops()
        for ctype, cell in self.cells.items():
            if not isinstance(ctype, str) or not ctype:
                raise SpecError("genotype.cells",
                                f"cell type names must be non-empty strings, got {_short(ctype)}")
            path = f"genotype.cells.{ctype}"
            if not isinstance(cell, CellGenotype):
                raise SpecError(path, f"expected a CellGenotype, got {type(cell).__name__}")
            _check_edges(path, cell.edges, valid_ops)
            _check_concat(path, cell)

    def __getitem__(self, cell_type: str) -> CellGenotype:
        try:
            return self.cells[cell_type]
        except (KeyError, TypeError):
            raise KeyError(f"genotype has no cell type {cell_type!r}; it has "
                           f"{sorted(self.cells)}") from None

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(self.cells)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseGenotype) and dict(self.cells) == dict(other.cells)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # ---- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"cells": {t: {"edges": [[op, i] for op, i in c.edges], "concat": list(c.concat)}
                          for t, c in self.cells.items()}}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is not None)

    @classmethod
    def from_dict(cls: type[G], data: Any) -> G:
        """Strict parse of the JSON structure; every error is a ``SpecError`` naming the path."""
        if not isinstance(data, Mapping):
            raise SpecError("genotype",
                            f"expected a mapping with key 'cells', got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _FIELDS)  # keys may be 1, None
        if unknown:
            raise SpecError(f"genotype.{unknown[0]}", f"unknown field; valid: {list(_FIELDS)}")
        cells_in = data.get("cells")
        if not isinstance(cells_in, Mapping) or not cells_in:
            raise SpecError("genotype.cells",
                            f"expected a non-empty mapping of cell types, got {_short(cells_in)}")
        cells: dict[str, CellGenotype] = {}
        for ctype, cell in cells_in.items():
            if not isinstance(ctype, str) or not ctype:
                raise SpecError("genotype.cells",
                                f"cell type names must be strings, got {_short(ctype)}")
            cells[ctype] = _parse_cell(f"genotype.cells.{ctype}", cell)
        return cls(cells)

    @classmethod
    def from_json(cls: type[G], text: str | bytes) -> G:
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
            raise SpecError("genotype", f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls: type[G], path: str | os.PathLike[str]) -> G:
        """Read a genotype JSON file; every error names the file.

        Raises:
            FileFormatError: the file is missing, unreadable, not JSON, or not a valid
                genotype (the message adds the field and what is allowed).
        """
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as exc:
            raise FileFormatError(str(p), f"cannot be read ({exc.strerror or exc}); expected "
                                          "a genotype JSON file") from None
        try:
            return cls.from_json(text)
        except SpecError as exc:
            raise FileFormatError(str(p), f"not a valid genotype: {exc}") from None
