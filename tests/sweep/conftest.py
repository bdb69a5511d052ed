"""Fixtures of the sweep tests: one local Ray instance shared by the Ray tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _matplotlib_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports draw cells with matplotlib in tests, whether or not Graphviz is installed."""
    monkeypatch.setenv("ARNAS_RAY_CELL_BACKEND", "matplotlib")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One local Ray instance (2 CPUs) for all Ray tests of a module.

    ``address="local"`` starts a new instance even when a `ray start` cluster of another
    process is recorded in /tmp/ray (plain ``ray.init()`` would join that one).
    """
    import ray

    if ray.is_initialized():  # pragma: no cover - a previous module leaked its instance
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
