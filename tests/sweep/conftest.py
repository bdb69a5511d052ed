"""Fixtures of the sweep tests: one local Ray instance shared by the Ray tests of a module, and a
private Ray temp dir for drivers in subprocesses (removed with whatever is left of their Ray)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


def _session_pids(marker: str) -> list[int]:
    """PIDs of one Ray session, this process excluded: the private Ray temp dir ``marker`` is in
    the command line (driver, GCS, raylet, monitors) or in the environment (``RAY_TMPDIR``,
    inherited by the workers, whose command line Ray renames to ``ray::...``)."""
    needle = marker.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _kill_session(marker: str) -> list[int]:
    """SIGKILL what is left of one Ray session; returns the PIDs that were still alive."""
    left = _session_pids(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    # short: Ray's unix sockets live below it and their paths must stay under 107 bytes
    path = tempfile.mkdtemp(prefix="arnas-rs-", dir="/tmp")
    try:
        yield path
    finally:
        _kill_session(path)
        shutil.rmtree(path, ignore_errors=True)
