"""Cell drawings: matplotlib fallback (SVG/PNG), the Graphviz path, validation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from arnas_ray._genotype import BaseGenotype
from arnas_ray.errors import SpecError
from arnas_ray.results.cells import (
    BACKEND_ENV,
    cell_dot_source,
    draw_cell,
    draw_genotype,
    render_cell,
)

from ._fakes import ARNAS_GENOTYPE


def test_matplotlib_svg_has_nodes_and_labelled_edges(tmp_path: Path) -> None:
    path = draw_cell(ARNAS_GENOTYPE, "accurate", tmp_path / "accurate.svg",
                     backend="matplotlib")
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for label in ("c_{k-2}", "c_{k-1}", "c_{k}", "sep_conv_5x5", "sep_conv_3x3",
                  "skip_connect", ">3<"):
        assert label in text, label
    assert "dil_conv" not in text  # another cell's ops


def test_matplotlib_png_by_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "matplotlib")
    path = draw_cell(ARNAS_GENOTYPE, "robust", tmp_path / "robust.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_genotype_writes_every_cell_type(tmp_path: Path) -> None:
    paths = draw_genotype(ARNAS_GENOTYPE, tmp_path / "cells", "svg", backend="matplotlib")
    assert list(paths) == ["accurate", "reduce", "robust"]
    for cell_type, path in paths.items():
        assert path == tmp_path / "cells" / f"{cell_type}.svg"
        assert "<svg" in path.read_text()


def test_genotype_as_json_text_and_repeated_edges(tmp_path: Path) -> None:
    text = '{"cells": {"n": {"edges": [["sep_conv_3x3", 0], ["skip_connect", 0]]}}}'
    svg = render_cell(text, "n", "svg", backend="matplotlib").decode()
    assert "sep_conv_3x3" in svg and "skip_connect" in svg


@pytest.mark.parametrize(
    ("genotype", "cell_type", "error", "pattern"),
    [
        (ARNAS_GENOTYPE, "normal", KeyError, r"no cell type 'normal'; it has \['accurate'"),
        ({"cells": {"n": {"edges": [["skip_connect", 2], ["skip_connect", 0]]}}}, "n",
         SpecError, r"edges\[0\]: node 2 may only take inputs 0\.\.1"),
        ({"cells": {"n": {"edges": [["skip_connect", 0]]}}}, "n", SpecError, "2 edges per node"),
        ({"cells": {"n": {"edges": [["a", 0], ["b", 1]], "concat": [7]}}}, "n", SpecError,
         r"n\.concat: states are 0\.\.2, got 7"),
        ({"genes": {}}, "n", SpecError, "genotype.genes: unknown field"),
        ("{not json", "n", SpecError, "not valid JSON"),
    ],
)
def test_bad_genotypes_are_named(genotype: object, cell_type: str, error: type,
                                 pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        render_cell(genotype, cell_type, backend="matplotlib")  # type: ignore[arg-type]


def test_cells_read_genotypes_with_the_core_and_accept_genotype_objects() -> None:
    core = BaseGenotype.from_dict(ARNAS_GENOTYPE)
    assert cell_dot_source(core, "reduce") == cell_dot_source(ARNAS_GENOTYPE, "reduce")
    bad = {"cells": {"n": {"edges": [["skip_connect", 0], ["skip_connect", 5]]}}}
    with pytest.raises(SpecError) as core_error:
        BaseGenotype.from_dict(bad)
    with pytest.raises(SpecError) as drawing_error:
        cell_dot_source(bad, "n")
    assert str(drawing_error.value) == str(core_error.value)  # one validation, one message


def test_dot_source_lists_every_edge() -> None:
    source = cell_dot_source(ARNAS_GENOTYPE, "reduce")
    assert source.startswith('digraph "reduce" {')
    assert '"c_{k-1}" -> "0" [label="avg_pool_3x3"' in source
    assert '"2" -> "3" [label="dil_conv_5x5"' in source  # input 4 is node 2
    assert source.count("->") == 8 + 4  # 8 edges + 4 concat edges


def _fake_dot(bin_dir: Path, record: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "dot"
    script.write_text(
        "#!/bin/sh\n"
        f'cat > "{record}"\n'
        'echo "<svg xmlns=\'x\'><!-- fake dot $1 --></svg>"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_graphviz_dot_is_used_when_on_path(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "stdin.dot"
    _fake_dot(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(BACKEND_ENV)
    path = draw_cell(ARNAS_GENOTYPE, "accurate", tmp_path / "a.svg")
    assert "fake dot -Tsvg" in path.read_text()
    assert record.read_text() == cell_dot_source(ARNAS_GENOTYPE, "accurate")
    # The env var (or backend=) forces the matplotlib fallback even with dot present.
    monkeypatch.setenv(BACKEND_ENV, "matplotlib")
    assert "fake dot" not in draw_cell(ARNAS_GENOTYPE, "accurate", tmp_path / "b.svg").read_text()


def test_dot_backend_without_graphviz_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="Graphviz"):
        render_cell(ARNAS_GENOTYPE, "accurate", backend="dot")
    with pytest.raises(ValueError, match="unknown backend"):
        render_cell(ARNAS_GENOTYPE, "accurate", backend="tikz")
