"""Faults in trials, concurrency and secrets with a real local Ray (issue 9, items 3-6).

One Ray instance (``num_cpus=2``) serves the whole module, to share its start-up cost:

- one sweep holds a healthy trial and three faulty ones (a corrupt data file read by user data
  code, a simulated out-of-memory, a diverging loss): each faulty trial ends ``failed`` with its
  reason in the table, the sweep completes, the Pareto ranking and selection skip failed rows;
- a driver is SIGKILLed mid-sweep, its trial checkpoints are corrupted, and ``resume_sweep``
  (which also takes over the dead driver's stale lock) ends that trial ``failed`` with a
  ``CheckpointError`` naming the file instead of crashing the sweep;
- two sweeps with different run directories run at the same time on the one instance and each
  table holds exactly its own rows;
- ``RAY_AUTH_TOKEN`` is set to a random marker for the instance and its workers; no file of any
  run directory (binary files included) contains it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from arnas_ray.results import read_table, select_front  # noqa: E402
from arnas_ray.sweep import SweepSpec, resume_sweep, run_sweep  # noqa: E402
from arnas_ray.sweep.faults import FAULTS_ENV  # noqa: E402
from tests.reliability import _faulty_data as faulty  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# the session's Ray token (tests/conftest.py): Ray caches the token per driver process, so a
# module-specific token would break every later ray.init of the session
MARKER = os.environ["RAY_AUTH_TOKEN"]
SEARCH = {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
          "eval_samples": 32, "order": "first", "attack": {"steps": 1}}


def _spec(name: str, storage: Path, **over) -> SweepSpec:
    data = {"name": name, "storage": str(storage),
            "dataset": {"name": "synthetic", "image_size": 8, "limit": 128},
            "search": dict(SEARCH), "grid": {"placement": ["arnas"], "seed": [2]},
            "skip_retrain": True, "max_failures": 1}
    data.update(over)
    return SweepSpec.from_dict(data)


def assert_no_secret(root: Path, marker: str = MARKER) -> int:
    """Fail if any file under ``root`` (binary or text) contains ``marker``; return files read."""
    needle = marker.encode()
    n = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            n += 1
            assert needle not in path.read_bytes(), f"the secret token was written to {path}"
    return n


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray with RAY_AUTH_TOKEN = MARKER in its environment and the ``faulty`` data set."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "PYTHONPATH")}
    assert os.environ["RAY_AUTH_TOKEN"] == MARKER
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "tests.reliability._faulty_data.register"})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_secret_reaches_the_workers(ray_cluster):
    """The marker is really in the trials' environment: a leak would be caught by the greps."""

    @ray.remote(num_cpus=0)
    def token() -> str | None:
        return os.environ.get("RAY_AUTH_TOKEN")

    assert ray.get(token.remote()) == MARKER


def test_secret_grep_finds_a_leak(tmp_path):
    """The grep helper itself works on binary files (so a leak cannot slip through it)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.bin").write_bytes(b"\x00\x01" + MARKER.encode() + b"\xff")
    with pytest.raises(AssertionError, match="secret token"):
        assert_no_secret(tmp_path)


def test_faulty_trials_fail_alone(ray_cluster, tmp_path, monkeypatch):
    root = tmp_path / "faulty_root"
    root.mkdir()
    (root / "train.npz").write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)  # corrupt file
    probe = _spec("probe", tmp_path, grid={"placement": ["arnas"], "seed": [faulty.SEED_DIVERGE]})
    diverge_key = probe.points()[0].key
    spec = _spec(
        "faults", tmp_path,
        dataset={"name": faulty.NAME, "root": str(root), "image_size": 8, "limit": 128},
        grid={"placement": ["arnas"],
              "seed": [faulty.SEED_OK, faulty.SEED_CORRUPT, faulty.SEED_OOM, faulty.SEED_DIVERGE]},
    )
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"diverge": [diverge_key]}))
    result = run_sweep(spec, report=False)
    assert not result.ok and result.message == "3 of 4 search trials failed: see sweep status"

    run_dir = result.run_dir.local_path()
    table = read_table(run_dir / "results.parquet")
    rows = {int(r.seed): r for r in table.itertuples()}
    assert sorted(rows) == [2, 3, 4, 5] and len(table) == 4, table[["trial_id", "status"]]
    assert rows[faulty.SEED_OK].status == "finished"
    assert rows[faulty.SEED_OK].pareto_rank == 0
    for seed, reason in ((faulty.SEED_CORRUPT, "zip"), (faulty.SEED_OOM, "can't allocate memory"),
                         (faulty.SEED_DIVERGE, "DivergenceError")):
        row = rows[seed]
        assert row.status == "failed", (seed, row.error)
        assert isinstance(row.error, str) and reason.lower() in row.error.lower(), (seed, row.error)
        assert pd.isna(row.pareto_rank), (seed, row.pareto_rank)
    assert result.summary["failed"] == 3
    # the errored trial's row names Tune's error file, which holds the traceback
    corrupt = rows[faulty.SEED_CORRUPT]
    assert corrupt.error_file and 'File "' in Path(corrupt.error_file).read_text()
    assert "\n" not in corrupt.error and corrupt.error.startswith("BadZipFile: "), corrupt.error
    assert all(pd.isna(rows[s].error_file) for s in (faulty.SEED_OOM, faulty.SEED_DIVERGE))
    # a divergence and an OOM are deterministic: reported once, not retried (no Tune error);
    # the data error is an ordinary exception: retried up to max_failures, then an error
    errored = {}
    for params in (run_dir / "tune" / "search").glob("*/params.json"):
        key = json.loads(params.read_text())["point"]["key"]
        errored[key] = (params.parent / "error.txt").exists()
    assert errored == {rows[s].trial_id: s == faulty.SEED_CORRUPT for s in rows}, errored

    # the selection ignores failed rows even when their (stale) metrics would dominate
    forged = table.copy()
    failed = forged["status"] == "failed"
    forged.loc[failed, ["nat_acc", "pgd_acc"]] = 1.0
    front = select_front(forged[forged["stage"] == "search"], spec.selection.objectives, top_k=5)
    assert list(front["trial_id"]) == [rows[faulty.SEED_OK].trial_id]
    assert_no_secret(run_dir)


def test_corrupt_trial_checkpoint_fails_only_that_trial(ray_cluster, tmp_path):
    """Kill the driver mid-trial, corrupt the trial's checkpoints, resume: the sweep completes."""
    spec = _spec("killed", tmp_path, search={**SEARCH, "epochs": 4, "steps_per_epoch": 25})
    driver = textwrap.dedent(f"""
        import sys, ray
        from arnas_ray.sweep import SweepSpec, run_sweep
        ray.init(address={ray_cluster!r}, log_to_driver=False)
        spec = SweepSpec.from_dict({spec.to_dict()!r})
        run_sweep(spec, report=False, progress=lambda s: print(s, flush=True))
    """)
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}  # experiment state saved every step
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_dir = tmp_path / "killed"
    lines: list[str] = []
    try:
        deadline = time.time() + 150
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "epoch 1/4" in line or time.time() > deadline:
                break
        checkpoints: list[Path] = []
        while time.time() < deadline and not checkpoints:
            checkpoints = list((run_dir / "tune" / "search").rglob("search.pt"))
            time.sleep(0.5)
        time.sleep(2.0)  # let Tune record the checkpoint in its experiment state
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert checkpoints, "".join(lines[-20:])
    assert (run_dir / "lease.json").exists()  # the dead driver's lease stays behind
    corrupted = list((run_dir / "tune" / "search").rglob("search.pt"))
    for ckpt in corrupted:
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 3])  # truncated

    result = resume_sweep(run_dir)

    table = read_table(run_dir / "results.parquet")
    assert len(table) == 1, table[["trial_id", "status", "error"]]
    row = table.iloc[0]
    assert row["status"] == "failed", row.to_dict()
    assert "CheckpointError" in row["error"] and "truncated or corrupt" in row["error"], row["error"]
    assert result.summary["failed"] == 1
    assert not (run_dir / "lease.json").exists()  # taken over (its pid is gone), then released
    assert_no_secret(run_dir)


def test_two_sweeps_on_one_ray_do_not_interfere(ray_cluster, tmp_path):
    """Two driver processes, started together, connected to the one instance.

    (Two ``run_sweep`` calls in threads of one process are not supported: Ray Tune's trainable
    registry is not thread-safe and raises "dictionary changed size during iteration".)"""
    a = _spec("sweep-a", tmp_path, grid={"placement": ["arnas"], "seed": [2, 7]})
    b = _spec("sweep-b", tmp_path, grid={"placement": ["robust-first"], "seed": [2]})
    procs = []
    for spec in (a, b):
        driver = textwrap.dedent(f"""
            import ray
            from arnas_ray.sweep import SweepSpec, run_sweep
            ray.init(address={ray_cluster!r}, log_to_driver=False)
            run_sweep(SweepSpec.from_dict({spec.to_dict()!r}), report=False)
        """)
        procs.append(subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    ta = read_table(tmp_path / "sweep-a" / "results.parquet")
    tb = read_table(tmp_path / "sweep-b" / "results.parquet")
    assert sorted(ta["trial_id"]) == sorted(p.key for p in a.points())
    assert sorted(tb["trial_id"]) == sorted(p.key for p in b.points())
    assert set(ta["sweep_id"]) == {"sweep-a"} and set(tb["sweep_id"]) == {"sweep-b"}
    assert (ta["status"] == "finished").all() and (tb["status"] == "finished").all()
    assert assert_no_secret(tmp_path) > 0
