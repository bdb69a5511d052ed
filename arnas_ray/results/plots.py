"""Pareto plots of a results table (matplotlib, no pyplot state, no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly, so no backend is selected
and nothing global changes; files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from arnas_ray._atomic import atomic_write_bytes
from arnas_ray.results.pareto import DIRECTIONS, nondominated_mask

__all__ = [
    "FORMATS",
    "plot_pareto",
    "render_pareto",
]

FORMATS: tuple[str, ...] = ("png", "svg")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_NULL_LABEL = "n/a"
_LABELS = {
    "nat_acc": "natural accuracy",
    "pgd_acc": "PGD accuracy (supernet)",
    "pgd20_acc": "PGD-20 accuracy",
    "pgd100_acc": "PGD-100 accuracy",
    "fgsm_acc": "FGSM accuracy",
    "aa_acc": "AutoAttack accuracy",
    "params": "parameters",
    "flops": "MACs",
}


def _categories(series: pd.Series) -> tuple[list[str], np.ndarray]:
    labels = series.astype(object).where(series.notna(), _NULL_LABEL).astype(str).to_numpy()
    names = sorted(set(labels), key=lambda s: (s == _NULL_LABEL, s))
    index = {name: i for i, name in enumerate(names)}
    return names, np.array([index[s] for s in labels], dtype=int)


def _sizes(series: pd.Series | None, n: int) -> np.ndarray:
    """Marker areas 30..300 scaling with the square root of the parameter count."""
    if series is None:
        return np.full(n, 60.0)
    vals = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    finite = np.isfinite(vals) & (vals > 0)
    out = np.full(n, 60.0)
    if finite.any():
        root = np.sqrt(vals[finite])
        lo, hi = root.min(), root.max()
        out[finite] = 30.0 + 270.0 * ((root - lo) / (hi - lo) if hi > lo else 0.5)
    return out


def render_pareto(
    df: pd.DataFrame,
    x: str = "nat_acc",
    y: str = "pgd20_acc",
    *,
    directions: Sequence[str] = ("max", "max"),
    size: str | None = "params",
    color: str | None = "placement",
    marker: str | None = "channel_ratios",
    title: str | None = None,
    fmt: str = "png",
    only_finished: bool = True,
    dpi: int = 120,
) -> bytes:
    """Draw a Pareto scatter plot and return the encoded image.

    Marker area follows ``size`` (params), colour ``color`` (placement), marker shape
    ``marker`` (channel ratios); the non-dominated points are joined by the attainment step
    line. Rows with a null ``x`` or ``y`` are left out; with none left the figure says so.

    Args:
        df: a results frame (usually one stage).
        x: column on the horizontal axis.
        y: column on the vertical axis (``"pgd_acc"`` for the search stage).
        directions: ``"max"``/``"min"`` for ``x`` and ``y``, used for the front.
        size: column for the marker area, or None (also ignored when not a column).
        color: categorical column for the colour, or None (ditto).
        marker: categorical column for the marker shape, or None (ditto).
        title: figure title.
        fmt: ``"png"`` or ``"svg"``.
        only_finished: plot only ``status == "finished"`` rows when a status column exists.
        dpi: resolution of PNG output.

    Returns:
        The PNG or SVG bytes.

    Raises:
        ValueError: an unknown format, direction or column.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown fmt {fmt!r}; expected one of {FORMATS}")
    fig = _pareto_figure(df, x, y, directions=directions, size=size, color=color,
                         marker=marker, title=title, only_finished=only_finished, dpi=dpi)
    buf = io.BytesIO()
    # No "Software" metadata: the files carry no URL or version string.
    metadata = {"Software": None} if fmt == "png" else {"Creator": None, "Date": None}
    fig.savefig(buf, format=fmt, metadata=metadata)
    return buf.getvalue()


def _pareto_figure(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    directions: Sequence[str],
    size: str | None,
    color: str | None,
    marker: str | None,
    title: str | None,
    only_finished: bool,
    dpi: int,
) -> Figure:
    if len(directions) != 2 or any(d not in DIRECTIONS for d in directions):
        raise ValueError(f"directions must be two of {DIRECTIONS}, got {list(directions)}")
    for name, col in (("x", x), ("y", y)):
        if col not in df.columns:
            raise ValueError(f"{name}={col!r} is not a column; columns are {list(df.columns)}")
    # Optional encodings whose column is absent are dropped (a bare frame still plots).
    size = size if size in df.columns else None
    color = color if color in df.columns else None
    marker = marker if marker in df.columns else None
    data = df
    if only_finished and "status" in data.columns:
        data = data[data["status"] == "finished"]
    xs = pd.to_numeric(data[x], errors="coerce").astype("float64")
    ys = pd.to_numeric(data[y], errors="coerce").astype("float64")
    keep = (xs.notna() & ys.notna()).to_numpy()
    data, xv, yv = data[keep], xs.to_numpy()[keep], ys.to_numpy()[keep]
    n = len(data)

    fig = Figure(figsize=(6.4, 4.8), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if n == 0:
        ax.text(0.5, 0.5, f"no finished rows with {x} and {y}", ha="center", va="center",
                transform=ax.transAxes)
    else:
        colors_names, color_idx = (_categories(data[color]) if color else ([], np.zeros(n, int)))
        marker_names, marker_idx = (_categories(data[marker]) if marker else ([], np.zeros(n, int)))
        areas = _sizes(data[size] if size else None, n)
        tab10 = colormaps["tab10"]
        palette = [tab10(i % 10) for i in range(max(len(colors_names), 1))]
        for m in range(max(len(marker_names), 1)):
            sel = marker_idx == m
            if not sel.any():
                continue
            ax.scatter(xv[sel], yv[sel], s=areas[sel],
                       c=[palette[i] for i in color_idx[sel]],
                       marker=_MARKERS[m % len(_MARKERS)], alpha=0.8, edgecolors="black",
                       linewidths=0.5, zorder=3)
        front = nondominated_mask(np.stack([xv, yv], axis=1), directions)
        order = np.argsort(xv[front], kind="stable")
        fx, fy = xv[front][order], yv[front][order]
        where = "pre" if directions[0] == "max" else "post"
        ax.step(fx, fy, where=where, color="black", linewidth=1.2, zorder=2,
                label="Pareto front")
        handles: list[Line2D] = [Line2D([], [], color="black", label="Pareto front")]
        if color:
            handles += [Line2D([], [], linestyle="", marker="o", markersize=7,
                               markerfacecolor=palette[i], markeredgecolor="black",
                               label=f"{color}: {name}")
                        for i, name in enumerate(colors_names)]
        if marker:
            handles += [Line2D([], [], linestyle="", marker=_MARKERS[i % len(_MARKERS)],
                               markersize=7, markerfacecolor="white", markeredgecolor="black",
                               label=f"{marker}: {name}")
                        for i, name in enumerate(marker_names)]
        ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.8)
        if size:
            ax.annotate(f"marker area ~ sqrt({size})", xy=(1.0, -0.12),
                        xycoords="axes fraction", ha="right", fontsize="x-small")
    return fig


def plot_pareto(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    x: str = "nat_acc",
    y: str = "pgd20_acc",
    *,
    fmt: str | None = None,
    **kwargs: object,
) -> Path:
    """Write a Pareto plot (see :func:`render_pareto`) to ``path`` atomically.

    Args:
        df: a results frame.
        path: output file; the format comes from ``fmt`` or the suffix (``.png``/``.svg``).
        x: column on the horizontal axis.
        y: column on the vertical axis (the search stage has ``pgd_acc``).
        fmt: ``"png"`` or ``"svg"``; default from the suffix, else PNG.
        **kwargs: passed to :func:`render_pareto` (``directions``, ``size``, ``color``,
            ``marker``, ``title``, ``only_finished``, ``dpi``).

    Returns:
        The path written.

    Example:
        >>> import tempfile, pandas as pd
        >>> df = pd.DataFrame({"nat_acc": [0.9, 0.8], "pgd20_acc": [0.4, 0.5]})
        >>> plot_pareto(df, tempfile.mkdtemp() + "/p.png").suffix
        '.png'
    """
    target = Path(path)
    if fmt is None:
        suffix = target.suffix.lower().lstrip(".")
        fmt = suffix if suffix in FORMATS else "png"
    data = render_pareto(df, x, y, fmt=fmt, **kwargs)  # type: ignore[arg-type]
    return atomic_write_bytes(target, data)
