"""Fixtures of the results tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._fakes import make_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture(autouse=True)
def _matplotlib_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells are drawn with matplotlib in tests, whether or not Graphviz is installed."""
    monkeypatch.setenv("ARNAS_RAY_CELL_BACKEND", "matplotlib")
