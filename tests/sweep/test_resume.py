"""Resume after the driver dies: ``arnas-ray sweep run`` in a subprocess is SIGKILLed during the
search stage, then ``arnas-ray sweep resume RUN_DIR`` finishes the sweep.

The subprocess drivers start their own local Ray under a private ``RAY_TMPDIR``; after the kill
the test removes only the processes of that Ray session (found by the private directory in their
command line), never anything else (no ``ray stop``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arnas_ray.results import read_table

from ._specs import GRID_KEYS, tiny_spec, write_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# Trials run one at a time with several epochs, so that once a trial has finished the next one
# spends two whole epochs in the kill window (with two concurrent 2-epoch trials an idle
# machine finished the sweep before the window was ever observed)
EPOCHS = 3


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


def _env(ray_tmpdir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the driver must start its own local Ray
    env["RAY_TMPDIR"] = ray_tmpdir
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["ARNAS_RAY_CELL_BACKEND"] = "matplotlib"
    # Tune snapshots its experiment state every >= 10 s by default; a 1 s period lets the test
    # see each reported epoch in the snapshot before the next one (the kill window)
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"
    return env


def _trials(state_file: Path) -> dict[str, dict[str, Any]]:
    """Tune's experiment snapshot: trial dir name -> status, last result (what restore sees)."""
    data = json.loads(state_file.read_text())
    out = {}
    for trial_json, meta_json in data["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        out[trial["relative_logdir"]] = {"status": trial["status"], "last": meta.get("last_result") or {}}
    return out


def _snapshot(exp_dir: Path) -> dict[str, dict[str, Any]] | None:
    files = sorted(exp_dir.glob("experiment_state-*.json"))
    if not files:
        return None
    try:
        return _trials(files[-1])
    except (OSError, ValueError, KeyError):
        return None  # being written


def _ready_to_kill(trials: dict[str, dict[str, Any]] | None, exp_dir: Path) -> bool:
    """One trial finished, another one mid-way with a checkpoint, both in Tune's snapshot, and
    the snapshot up to date (every trial's result file holds exactly the results it knows)."""
    if not trials:
        return False
    done = [t for t in trials.values() if t["status"] == "TERMINATED" and t["last"].get("status") == "finished"]
    mid = [t for t in trials.values() if t["status"] == "RUNNING" and t["last"].get("status") == "running"
           and 1 <= int(t["last"].get("epoch", 0)) < EPOCHS and t["last"].get("checkpoint_dir_name")]
    if not (done and mid):
        return False
    for name, t in trials.items():
        path = exp_dir / name / "result.json"
        lines = len(path.read_text().splitlines()) if path.exists() else 0
        if lines != int(t["last"].get("training_iteration", 0)):
            return False
    return True


def _results(trial_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def test_sigkilled_driver_resumes_from_checkpoints(tmp_path: Path, ray_tmpdir: str) -> None:
    storage = tmp_path / "runs"
    data = tiny_spec("resume", storage, skip_retrain=True, max_concurrent=1,
                     search={"epochs": EPOCHS, "steps_per_epoch": 6})
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    run_dir = storage / "resume"
    exp_dir = run_dir / "tune" / "search"
    env = _env(ray_tmpdir)
    log1 = (tmp_path / "run.out").open("w"), (tmp_path / "run.err").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "arnas_ray", "sweep", "run", str(spec_path)], cwd=REPO,
                              env=env, stdout=log1[0], stderr=log1[1], start_new_session=True)
    try:
        deadline = time.time() + 240
        trials = None
        while time.time() < deadline:
            assert driver.poll() is None, "the driver ended before it could be killed:\n" + (
                tmp_path / "run.err").read_text()[-3000:]
            trials = _snapshot(exp_dir)
            if _ready_to_kill(trials, exp_dir):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no finished + checkpointed running trial in the snapshot within 240 s: {trials}")
        # what must survive the resume untouched: the finished trials' Tune results and table rows
        finished = {name for name, t in trials.items() if t["status"] == "TERMINATED"}
        interrupted = {name: int(t["last"]["epoch"]) for name, t in trials.items()
                       if t["status"] == "RUNNING" and t["last"].get("checkpoint_dir_name")
                       and t["last"].get("status") == "running"}
        result_bytes = {name: (exp_dir / name / "result.json").read_bytes() for name in finished}
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        for f in log1:
            f.close()
    assert driver.returncode == -signal.SIGKILL
    # Ray's processes share the driver's fate (they are gone within ~2 s); remove any straggler
    deadline = time.time() + 5
    while _session_pids(ray_tmpdir) and time.time() < deadline:
        time.sleep(0.5)
    _kill_session(ray_tmpdir)
    table_path = run_dir / "results.parquet"
    rows_before = read_table(table_path).set_index("trial_id") if table_path.exists() else None
    lock = json.loads((run_dir / ".lock").read_text())
    assert lock["pid"] == driver.pid  # the dead driver's lock is left behind: resume takes it over

    resumed = subprocess.run([sys.executable, "-m", "arnas_ray", "sweep", "resume", str(run_dir)], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the Tune experiment" in resumed.stderr
    assert "[search]" in resumed.stderr  # the restored table callback reports progress
    assert "View detailed results here" not in resumed.stdout + resumed.stderr
    assert not (run_dir / ".lock").exists()

    table = read_table(table_path)
    assert len(table) == len(GRID_KEYS) and table["trial_id"].is_unique
    assert sorted(table["trial_id"]) == sorted(GRID_KEYS) and (table["stage"] == "search").all()
    assert (table["status"] == "finished").all(), table[["trial_id", "status", "error"]]
    assert (table["epochs"] == EPOCHS).all()
    assert table["pareto_rank"].notna().all()

    # finished trials were not rerun: Tune's result files and the table rows are unchanged
    for name in finished:
        assert (exp_dir / name / "result.json").read_bytes() == result_bytes[name], name
        key = name.split("_", 2)[2]
        if rows_before is not None and key in rows_before.index:
            before, after = rows_before.loc[key], table.set_index("trial_id").loc[key]
            assert before["status"] == "finished"
            for col in ("wall_s", "finished_at", "nat_acc", "pgd_acc", "genotype"):
                assert before[col] == after[col], (key, col)

    # each interrupted trial continued from its checkpoint: its epochs go on, they do not restart at 1
    assert interrupted
    for name, epoch in interrupted.items():
        results = _results(exp_dir / name)
        epochs = [r["epoch"] for r in results if r.get("status") == "running"]
        assert epochs.count(1) == 1, (name, epochs)  # epoch 1 ran once, before the kill
        restarts = [i for i, r in enumerate(results) if i > 0 and r["iterations_since_restore"] == 1]
        assert restarts, (name, epochs)
        after = results[restarts[-1]:]
        assert after[0]["epoch"] == epoch + 1, (name, epoch, epochs)
        assert [r["epoch"] for r in after if r.get("status") == "running"] == list(range(epoch + 1, EPOCHS + 1))
        assert after[-1]["status"] == "finished"
        assert after[0]["training_iteration"] > after[0]["iterations_since_restore"]
    # no trial was run twice from the start
    for trial_dir in (p for p in exp_dir.iterdir() if p.is_dir()):
        epochs = [r["epoch"] for r in _results(trial_dir) if r.get("status") == "running"]
        assert epochs.count(1) == 1, (trial_dir.name, epochs)
    deadline = time.time() + 15  # workers exit shortly after the driver's ray.shutdown()
    while _session_pids(ray_tmpdir) and time.time() < deadline:
        time.sleep(0.5)
    assert not _session_pids(ray_tmpdir), "the resumed driver left Ray processes behind"
