"""Drawings of the cells of a genotype (JSON dict) as DAGs.

A cell has the inputs ``c_{k-2}`` and ``c_{k-1}``, intermediate nodes ``0..n-1`` (two
incoming edges each, labelled with their op) and the output ``c_{k}``, the concatenation of
the ``concat`` states. In the genotype JSON, input index ``0`` is ``c_{k-2}``, ``1`` is
``c_{k-1}`` and ``j >= 2`` is intermediate node ``j - 2``::

    {"cells": {"accurate": {"edges": [["skip_connect", 0], ["skip_connect", 1], ...],
                            "concat": [2, 3, 4, 5]}, "reduce": {...}, "robust": {...}}}

The Graphviz ``dot`` program is used when it is on ``PATH`` (no Python package needed);
otherwise, or with ``backend="matplotlib"`` or ``ARNAS_RAY_CELL_BACKEND=matplotlib``, a
matplotlib drawing is made.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from arnas_ray._atomic import atomic_write_bytes
from arnas_ray._genotype import BaseGenotype, Edge

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "CELL_FORMATS",
    "cell_dot_source",
    "draw_cell",
    "draw_genotype",
    "render_cell",
]

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "dot", "matplotlib")
CELL_FORMATS: tuple[str, ...] = ("svg", "png")
BACKEND_ENV = "ARNAS_RAY_CELL_BACKEND"
"""Environment variable that overrides ``backend="auto"`` (e.g. ``matplotlib``)."""

_DOT_TIMEOUT_S = 30.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

GenotypeLike = Mapping[str, Any] | str | BaseGenotype
"""A genotype as a JSON dict, JSON text, or a genotype object."""


def _genotype(genotype: GenotypeLike) -> BaseGenotype:
    """The genotype, parsed and checked by the torch-free core (``SpecError`` naming the field)."""
    if isinstance(genotype, BaseGenotype):
        return genotype
    if isinstance(genotype, str):
        return BaseGenotype.from_json(genotype)
    return BaseGenotype.from_dict(genotype)


def _cell(genotype: GenotypeLike, cell_type: str) -> tuple[list[Edge], list[int]]:
    """Return the checked ``(edges, concat)`` of one cell."""
    cell = _genotype(genotype)[cell_type]  # KeyError naming the cell types it has
    return list(cell.edges), list(cell.concat)


def _state_name(index: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(index, str(index - 2))


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cell_dot_source(genotype: GenotypeLike, cell_type: str) -> str:
    """Return the Graphviz DOT source of one cell (layout left to right, DARTS style)."""
    edges, concat = _cell(genotype, cell_type)
    steps = len(edges) // 2
    q = _dot_quote
    lines = [
        f"digraph {q(cell_type)} {{",
        "  rankdir=LR;",
        '  edge [fontsize=12, fontname="Helvetica"];',
        '  node [style="rounded,filled", shape=rect, align=center, fontsize=14, height=0.5, '
        'width=0.5, penwidth=2, fontname="Helvetica"];',
        f"  {q('c_{k-2}')} [fillcolor=darkseagreen2];",
        f"  {q('c_{k-1}')} [fillcolor=darkseagreen2];",
    ]
    lines += [f"  {q(str(i))} [fillcolor=lightblue];" for i in range(steps)]
    for i, (op, src) in enumerate(edges):
        lines.append(f"  {q(_state_name(src))} -> {q(str(i // 2))} [label={q(op)}, "
                     "fillcolor=gray];")
    lines.append(f"  {q('c_{k}')} [fillcolor=palegoldenrod];")
    lines += [f"  {q(_state_name(c))} -> {q('c_{k}')} [fillcolor=gray];" for c in concat]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render_dot(source: str, fmt: str, dot: str) -> bytes:
    proc = subprocess.run([dot, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True,
                          timeout=_DOT_TIMEOUT_S, check=False)
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{dot} -T{fmt} failed with status {proc.returncode}: {err}")
    return proc.stdout


Point = tuple[float, float]


class _Canvas:
    """A matplotlib figure of one cell: inputs on the left, intermediate nodes on a zig-zag,
    the output on the right. One data unit is the same length on both axes, so the arc3
    label positions (computed in data units) match the curves matplotlib draws."""

    UNIT = 0.75  # inches per data unit

    def __init__(self, cell_type: str, steps: int) -> None:
        self.pos: dict[int | str, Point] = {0: (0.0, 1.2), 1: (0.0, -1.2)}
        for i in range(steps):
            self.pos[i + 2] = (1.6 * (i + 1), 0.9 if i % 2 == 0 else -0.9)
        width = 1.6 * (steps + 1)
        self.pos["out"] = (width, 0.0)
        self.fig = Figure(figsize=(self.UNIT * (width + 1.4), self.UNIT * 4.0 / 0.9), dpi=100)
        self.ax = self.fig.add_axes((0.0, 0.0, 1.0, 0.9))
        self.ax.set_xlim(-0.7, width + 0.7)
        self.ax.set_ylim(-2.0, 2.0)
        self.ax.axis("off")
        self.fig.suptitle(f"{cell_type} cell", fontsize=11)

    def box(self, key: int | str, label: str, color: str) -> None:
        x, y = self.pos[key]
        self.ax.text(x, y, label, ha="center", va="center", fontsize=10, zorder=4,
                     bbox={"boxstyle": "round,pad=0.35", "facecolor": color,
                           "edgecolor": "black", "linewidth": 1.5})

    def arrow(self, src: int | str, dst: int | str, rad: float, label: str | None,
              t: float = 0.5) -> None:
        (x0, y0), (x1, y1) = self.pos[src], self.pos[dst]
        self.ax.add_patch(FancyArrowPatch(
            (x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=10, shrinkA=14, shrinkB=14, color="dimgray", linewidth=1.0,
            zorder=2))
        if label:
            # Point t of the quadratic Bezier that arc3 draws (control point: the midpoint
            # moved by rad * (dy, -dx)); t alternates so labels of crossing edges separate.
            cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
            lx = (1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t**2 * x1
            ly = (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t**2 * y1
            self.ax.text(lx, ly, label, ha="center", va="center", fontsize=7, zorder=3,
                         bbox={"boxstyle": "round,pad=0.1", "facecolor": "white",
                               "edgecolor": "none", "alpha": 0.85})

    def save(self, fmt: str) -> bytes:
        buf = io.BytesIO()
        metadata = {"Software": None} if fmt == "png" else {"Creator": None, "Date": None}
        with rc_context({"svg.fonttype": "none"}):  # keep labels as text in SVG
            self.fig.savefig(buf, format=fmt, metadata=metadata)
        return buf.getvalue()


def _render_matplotlib(genotype: GenotypeLike, cell_type: str, fmt: str) -> bytes:
    edges, concat = _cell(genotype, cell_type)
    steps = len(edges) // 2
    canvas = _Canvas(cell_type, steps)
    canvas.box(0, "c_{k-2}", "#c1e1c1")
    canvas.box(1, "c_{k-1}", "#c1e1c1")
    for i in range(steps):
        canvas.box(i + 2, str(i), "#add8e6")
    canvas.box("out", "c_{k}", "#eee8aa")
    drawn: dict[tuple[int, int], int] = {}
    for i, (op, src) in enumerate(edges):
        dst = i // 2 + 2
        # Long edges bend away from the middle (up into the top row, down into the bottom
        # one) so they pass beside, not through, the nodes in between.
        rad = 0.0 if dst - src <= 1 or (src < 2 and dst == 2) else (
            -0.2 if (dst - 2) % 2 == 0 else 0.2)
        repeat = drawn.get((src, dst), 0)
        drawn[(src, dst)] = repeat + 1
        rad += 0.35 * repeat * (1 if rad >= 0 else -1)  # same pair twice: a wider arc
        canvas.arrow(src, dst, rad, op, 0.5 if dst == 2 else (0.4 if i % 2 == 0 else 0.6))
    for c in concat:
        canvas.arrow(c, "out", 0.0, None)
    return canvas.save(fmt)


def _choose_backend(backend: str) -> tuple[str, str | None]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        env = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        if env not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV}={env!r}; expected one of {BACKENDS}")
        backend = env
    dot = shutil.which("dot")
    if backend == "dot" and dot is None:
        raise FileNotFoundError("backend='dot' needs the Graphviz `dot` program on PATH")
    if backend == "auto":
        backend = "dot" if dot else "matplotlib"
    return backend, dot


def render_cell(genotype: GenotypeLike, cell_type: str, fmt: str = "svg", *,
                backend: str = "auto") -> bytes:
    """Return the drawing of one cell as SVG or PNG bytes (see :func:`draw_cell`)."""
    if fmt not in CELL_FORMATS:
        raise ValueError(f"unknown fmt {fmt!r}; expected one of {CELL_FORMATS}")
    chosen, dot = _choose_backend(backend)
    if chosen == "dot":
        assert dot is not None
        source = cell_dot_source(genotype, cell_type)
        try:
            return _render_dot(source, fmt, dot)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            if backend == "dot" or os.environ.get(BACKEND_ENV, "").strip().lower() == "dot":
                raise
            logger.warning("graphviz failed (%s); drawing %s cell with matplotlib", exc,
                           cell_type)
    return _render_matplotlib(genotype, cell_type, fmt)


def draw_cell(genotype: GenotypeLike, cell_type: str,
              path: str | os.PathLike[str], fmt: str | None = None, *,
              backend: str = "auto") -> Path:
    """Draw one cell of a genotype as a DAG and write it atomically.

    Args:
        genotype: genotype JSON as a dict (or JSON text), ``{"cells": {...}}``, or a
            genotype object.
        cell_type: the cell to draw (``"accurate"``, ``"robust"``, ``"reduce"``, ...).
        path: output file.
        fmt: ``"svg"`` or ``"png"``; default from the suffix of ``path``, else SVG.
        backend: ``"auto"`` (``dot`` when on PATH, unless ``ARNAS_RAY_CELL_BACKEND`` says
            otherwise), ``"dot"`` or ``"matplotlib"``.

    Returns:
        The path written.

    Raises:
        KeyError: ``cell_type`` is not in the genotype (the valid ones are named).
        SpecError: malformed genotype (a ``ValueError`` naming the field).
        ValueError: unknown format or backend.
        FileNotFoundError: ``backend="dot"`` without Graphviz.

    Example:
        >>> import tempfile
        >>> g = {"cells": {"normal": {"edges": [["sep_conv_3x3", 0], ["skip_connect", 1]],
        ...                           "concat": [2]}}}
        >>> draw_cell(g, "normal", tempfile.mkdtemp() + "/n.svg", backend="matplotlib").suffix
        '.svg'
    """
    target = Path(path)
    if fmt is None:
        suffix = target.suffix.lower().lstrip(".")
        fmt = suffix if suffix in CELL_FORMATS else "svg"
    return atomic_write_bytes(target, render_cell(genotype, cell_type, fmt, backend=backend))


def draw_genotype(genotype: GenotypeLike, out_dir: str | os.PathLike[str],
                  fmt: str = "svg", *, backend: str = "auto") -> dict[str, Path]:
    """Draw every cell type of a genotype into ``out_dir/<cell_type>.<fmt>``.

    Returns:
        Mapping cell type -> path written, in the genotype's order.
    """
    cells = _genotype(genotype).cells
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for cell_type in cells:
        name = _SAFE_NAME.sub("_", str(cell_type)).strip(".") or "cell"
        paths[cell_type] = draw_cell(genotype, cell_type, out / f"{name}.{fmt}", fmt,
                                     backend=backend)
    return paths
