"""Pareto plots of a results table (matplotlib, no pyplot state, no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly, so no backend is selected
and nothing global changes; files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from arnas_ray._atomic import atomic_write_bytes
from arnas_ray.results.pareto import DIRECTIONS, nondominated_mask

__all__ = [
    "FORMATS",
    "plot_pareto",
    "render_pareto",
    "render_search_diagnostics",
    "spread_duplicates",
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


def spread_duplicates(xv: np.ndarray, yv: np.ndarray,
                      radius: float) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, int]]]:
    """Points that coincide (e.g. the renamed twins of one network) moved apart on a small ring
    around their common place, so none hides another; also returns ``(x, y, count)`` of every
    group of two or more, for a ``xN`` label."""
    xo, yo = xv.astype("float64").copy(), yv.astype("float64").copy()
    groups: dict[tuple[float, float], list[int]] = {}
    for i, key in enumerate(zip(np.round(xv, 9), np.round(yv, 9))):
        groups.setdefault(key, []).append(i)
    labels = []
    for (x0, y0), idx in groups.items():
        if len(idx) < 2:
            continue
        angles = np.linspace(0.0, 2 * np.pi, len(idx), endpoint=False) + np.pi / 4
        xo[idx] = x0 + radius * np.cos(angles)
        yo[idx] = y0 + radius * np.sin(angles)
        labels.append((x0, y0, len(idx)))
    return xo, yo, labels


def _plotted(df: pd.DataFrame, x: str, y: str, status: str | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    data = df if status is None or "status" not in df.columns else df[df["status"] == status]
    xs = pd.to_numeric(data[x], errors="coerce").astype("float64")
    ys = pd.to_numeric(data[y], errors="coerce").astype("float64")
    keep = (xs.notna() & ys.notna()).to_numpy()
    return data[keep], xs.to_numpy()[keep], ys.to_numpy()[keep]


def _scatter(ax: Axes, data: pd.DataFrame, xv: np.ndarray, yv: np.ndarray, size: str | None, color: str | None,
             marker: str | None) -> list[Line2D]:
    """The finished points (colour, marker shape, area encodings); returns legend handles."""
    n = len(data)
    colors_names, color_idx = (_categories(data[color]) if color else ([], np.zeros(n, int)))
    marker_names, marker_idx = (_categories(data[marker]) if marker else ([], np.zeros(n, int)))
    areas = _sizes(data[size] if size else None, n)
    tab10 = colormaps["tab10"]
    palette = [tab10(i % 10) for i in range(max(len(colors_names), 1))]
    span = max(float(np.ptp(xv)) if n else 0.0, float(np.ptp(yv)) if n else 0.0, 0.02)
    px, py, twins = spread_duplicates(xv, yv, radius=0.012 * span)
    for m in range(max(len(marker_names), 1)):
        sel = marker_idx == m
        if sel.any():
            ax.scatter(px[sel], py[sel], s=areas[sel], c=[palette[i] for i in color_idx[sel]],
                       marker=_MARKERS[m % len(_MARKERS)], alpha=0.8, edgecolors="black", linewidths=0.5, zorder=3)
    for x0, y0, count in twins:
        ax.annotate(f"x{count}", xy=(x0, y0), xytext=(6, 6), textcoords="offset points", fontsize="x-small",
                    zorder=4)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, markerfacecolor=palette[i],
                      markeredgecolor="black", label=f"{color}: {name}") for i, name in enumerate(colors_names)]
    handles += [Line2D([], [], linestyle="", marker=_MARKERS[i % len(_MARKERS)], markersize=7,
                       markerfacecolor="white", markeredgecolor="black", label=f"{marker}: {name}")
                for i, name in enumerate(marker_names)]
    return handles


def _front(ax: Axes, xv: np.ndarray, yv: np.ndarray, directions: Sequence[str]) -> None:
    front = nondominated_mask(np.stack([xv, yv], axis=1), directions)
    order = np.argsort(xv[front], kind="stable")
    where: Literal["pre", "post"] = "pre" if directions[0] == "max" else "post"
    ax.step(xv[front][order], yv[front][order], where=where, color="black", linewidth=1.2, zorder=2,
            label="Pareto front")


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
    size, color, marker = (c if c in df.columns else None for c in (size, color, marker))
    data, xv, yv = _plotted(df, x, y, "finished" if only_finished else None)
    fig = Figure(figsize=(6.4, 4.8), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(data) == 0:
        ax.text(0.5, 0.5, f"no finished rows with {x} and {y}", ha="center", va="center", transform=ax.transAxes)
        return fig
    handles = [Line2D([], [], color="black", label="Pareto front")]
    handles += _scatter(ax, data, xv, yv, size, color, marker)
    _front(ax, xv, yv, directions)
    _, sx, sy = _plotted(df, x, y, "stopped") if only_finished else (None, np.array([]), np.array([]))
    if len(sx):  # stopped early by a scheduler or a budget: shown apart, never on the front
        ax.scatter(sx, sy, s=40, marker="x", color="grey", zorder=2)
        handles.append(Line2D([], [], linestyle="", marker="x", color="grey", label="stopped early"))
    ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.8)
    if size:
        ax.annotate(f"marker area ~ sqrt({size})", xy=(1.0, -0.12), xycoords="axes fraction", ha="right",
                    fontsize="x-small")
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


def render_search_diagnostics(steps: dict[str, list[dict[str, Any]]], *, dpi: int = 110) -> bytes:
    """Gamma (weight of the natural objective) and the op-weight entropy over the search steps,
    one line per trial (``steps``: trial -> its per-step records, see
    :mod:`arnas_ray._diagnostics`); a PNG."""
    fig = Figure(figsize=(7.0, 5.2), dpi=dpi, layout="constrained")
    ax_g, ax_e = fig.subplots(2, 1, sharex=True)
    tab10 = colormaps["tab10"]
    for i, (trial, records) in enumerate(sorted(steps.items())):
        xs = np.arange(1, len(records) + 1)
        for ax, name in ((ax_g, "gamma"), (ax_e, "entropy")):
            ys = np.array([np.nan if r.get(name) is None else float(r[name]) for r in records])
            if np.isfinite(ys).any():
                ax.plot(xs, ys, color=tab10(i % 10), linewidth=1.0, label=trial if ax is ax_g else None)
    ax_g.set_ylabel("gamma (natural weight)")
    ax_g.set_ylim(-0.05, 1.05)
    ax_e.set_ylabel("op-weight entropy (nats)")
    ax_e.set_xlabel("architecture step")
    for ax in (ax_g, ax_e):
        ax.grid(True, alpha=0.3)
    if steps:
        ax_g.legend(fontsize="x-small", loc="best", framealpha=0.8)
    else:
        ax_g.text(0.5, 0.5, "no per-step records", ha="center", va="center", transform=ax_g.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
