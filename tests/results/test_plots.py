"""Pareto plots: valid image files, nulls tolerated, atomic writes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from arnas_ray.results import plots
from arnas_ray.results.plots import plot_pareto
from arnas_ray.results.table import normalize_rows

from ._fakes import fake_rows


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_valid_png(tmp_path: Path) -> None:
    df = normalize_rows(fake_rows())
    path = plot_pareto(df[df["stage"] == "retrain"], tmp_path / "pareto.png")
    data = path.read_bytes()
    width, height = _png_size(data)
    assert width > 100 and height > 100
    image = imread(path)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0.01  # something is drawn
    assert b"matplotlib.org" not in data  # no Software metadata with a URL


def test_search_stage_uses_pgd_acc_and_tolerates_null_columns(tmp_path: Path) -> None:
    df = normalize_rows(fake_rows())
    search = df[df["stage"] == "search"]
    assert search["pgd20_acc"].isna().all()
    path = plot_pareto(search, tmp_path / "search.png", y="pgd_acc")
    _png_size(path.read_bytes())
    # All-null y column (no data yet) still gives an image.
    empty = plot_pareto(search, tmp_path / "none.png", y="pgd20_acc")
    _png_size(empty.read_bytes())
    # Null params, placement and channel ratios in some rows.
    sparse = pd.DataFrame({"nat_acc": [0.9, 0.8, 0.7], "pgd20_acc": [0.3, 0.5, 0.2],
                           "params": [1e6, None, 3e5], "placement": ["arnas", None, "x"],
                           "channel_ratios": [None, "[1, 2, 2]", None]})
    _png_size(plot_pareto(sparse, tmp_path / "sparse.png").read_bytes())


def test_svg_output_by_suffix(tmp_path: Path) -> None:
    df = normalize_rows(fake_rows())
    path = plot_pareto(df, tmp_path / "p.svg", y="pgd_acc")
    text = path.read_text()
    assert "<svg" in text and text.rstrip().endswith("</svg>")


@pytest.mark.parametrize(
    ("directions", "front", "drawstyle"),
    [(("max", "max"), [(0.8, 0.5), (0.9, 0.3), (0.95, 0.05)], "steps-pre"),
     (("min", "min"), [(0.6, 0.1), (0.95, 0.05)], "steps-post")],
)
def test_front_is_joined_by_a_step_line(directions: tuple, front: list, drawstyle: str) -> None:
    df = pd.DataFrame({"nat_acc": [0.9, 0.8, 0.6, 0.95], "pgd20_acc": [0.3, 0.5, 0.1, 0.05]})
    fig = plots._pareto_figure(df, "nat_acc", "pgd20_acc", directions=directions, size=None,
                               color=None, marker=None, title=None, only_finished=True, dpi=50)
    (line,) = fig.axes[0].lines
    assert list(zip(line.get_xdata(), line.get_ydata())) == front  # front only, sorted by x
    assert line.get_drawstyle() == drawstyle


def test_unknown_axis_and_format_are_named(tmp_path: Path) -> None:
    df = normalize_rows(fake_rows())
    with pytest.raises(ValueError, match="y='robust_acc'"):
        plot_pareto(df, tmp_path / "x.png", y="robust_acc")
    with pytest.raises(ValueError, match="unknown fmt 'jpg'"):
        plot_pareto(df, tmp_path / "x.png", fmt="jpg")


def test_plot_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "pareto.png"
    target.write_bytes(b"old")

    def boom(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("render failed")

    monkeypatch.setattr(plots, "render_pareto", boom)
    with pytest.raises(RuntimeError):
        plot_pareto(pd.DataFrame({"nat_acc": [0.5], "pgd20_acc": [0.5]}), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"]


def test_identical_networks_do_not_hide_each_other() -> None:
    """Renamed twins (the same network twice) land at one point: they are spread on a small
    ring and labelled, so the plot shows both."""
    from arnas_ray.results.plots import spread_duplicates

    xv, yv = np.array([0.5, 0.5, 0.7, 0.5]), np.array([0.3, 0.3, 0.2, 0.3])
    px, py, groups = spread_duplicates(xv, yv, radius=0.01)
    assert groups == [(0.5, 0.3, 3)]
    twins = np.stack([px[[0, 1, 3]], py[[0, 1, 3]]], axis=1)
    assert len({tuple(np.round(p, 9)) for p in twins}) == 3  # three distinct places
    assert np.allclose(np.hypot(twins[:, 0] - 0.5, twins[:, 1] - 0.3), 0.01)  # near the true point
    assert (px[2], py[2]) == (0.7, 0.2)  # a single point stays where it is
