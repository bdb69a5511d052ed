"""Resume after the driver dies: ``arnas-ray sweep run`` in a subprocess is SIGKILLed during the
search stage, then ``arnas-ray sweep resume RUN_DIR`` finishes the sweep, with the run directory
on a local disk and on a real S3-compatible server (``sweep resume URI``).

The subprocess drivers start their own local Ray under a private ``RAY_TMPDIR``; after the kill
the test removes only the processes of that Ray session (found by the private directory in their
command line), never anything else (no ``ray stop``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from arnas_ray.results.rundir import LEASE, TABLE, RunDir

from ._specs import tiny_spec, write_spec
from .conftest import _kill_session, _session_pids

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# Trials run one at a time with several epochs, so that once a trial has finished the next one
# spends two whole epochs in the kill window (with two concurrent 2-epoch trials an idle
# machine finished the sweep before the window was ever observed)
EPOCHS = 3
#: two trials, one after the other: the first one finishes, the second is killed mid-way
GRID = {"placement": ["arnas", "robust-first"], "channel_ratios": [[1, 2, 2]]}
KEYS = ("arnas_1-2-2_mgda_s2", "robust-first_1-2-2_mgda_s2")


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


def _trials(text: str) -> dict[str, dict[str, Any]]:
    """Tune's experiment snapshot: trial dir name -> status, last result (what restore sees)."""
    data = json.loads(text)
    out = {}
    for trial_json, meta_json in data["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        out[trial["relative_logdir"]] = {"status": trial["status"], "last": meta.get("last_result") or {}}
    return out


EXP = "tune/search"


def _snapshot(rd: RunDir) -> dict[str, dict[str, Any]] | None:
    files = [f for f in rd.list(EXP) if f.rsplit("/", 1)[-1].startswith("experiment_state-")]
    if not files:
        return None
    try:
        return _trials(rd.read_text(sorted(files)[-1]))
    except (OSError, ValueError, KeyError):
        return None  # being written


def _result_lines(rd: RunDir, trial: str) -> list[str]:
    try:
        return rd.read_text(f"{EXP}/{trial}/result.json").splitlines()
    except FileNotFoundError:
        return []


def _ready_to_kill(trials: dict[str, dict[str, Any]] | None, rd: RunDir) -> bool:
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
        if len(_result_lines(rd, name)) != int(t["last"].get("training_iteration", 0)):
            return False
    return True


def _results(rd: RunDir, trial: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _result_lines(rd, trial) if line.strip()]


def test_sigkilled_driver_resumes_from_checkpoints(tmp_path: Path, ray_tmpdir: str) -> None:
    check_sigkilled_driver_resumes(tmp_path, ray_tmpdir, str(tmp_path / "runs"))


def check_sigkilled_driver_resumes(tmp_path: Path, ray_tmpdir: str, storage: str) -> None:
    """The scenario on one storage (a local folder here; an S3 bucket in test_resume_s3.py, its
    own module so that pytest-xdist runs the two side by side)."""
    data = tiny_spec("resume", storage, skip_retrain=True, max_concurrent=1, grid=GRID,
                     search={"epochs": EPOCHS, "steps_per_epoch": 6})
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    rd = RunDir.for_sweep(storage, "resume")
    location = rd.show() if rd.is_local else storage.replace("?", "/resume?", 1)
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
            trials = _snapshot(rd)
            if _ready_to_kill(trials, rd):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no finished + checkpointed running trial in the snapshot within 240 s: {trials}")
        # what must survive the resume untouched: the finished trials' Tune results and table rows
        finished = {name for name, t in trials.items() if t["status"] == "TERMINATED"}
        interrupted = {name: int(t["last"]["epoch"]) for name, t in trials.items()
                       if t["status"] == "RUNNING" and t["last"].get("checkpoint_dir_name")
                       and t["last"].get("status") == "running"}
        result_bytes = {name: rd.read_bytes(f"{EXP}/{name}/result.json") for name in finished}
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
    rows_before = rd.read_table().set_index("trial_id") if rd.exists(TABLE) else None
    lease = json.loads(rd.read_text(LEASE))
    assert lease["pid"] == driver.pid  # the dead driver's lease is left behind: resume takes it over

    # the resume may change what does not define the trials: resources and concurrency
    changed = write_spec(tmp_path / "changed.yaml", {**data, "resources": {"cpu": 2, "gpu": 0},
                                                     "max_concurrent": 2})
    resumed = subprocess.run([sys.executable, "-m", "arnas_ray", "sweep", "resume", location, "--spec",
                              str(changed)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the Tune experiment" in resumed.stderr
    assert "[search]" in resumed.stderr  # the restored table callback reports progress
    assert "View detailed results here" not in resumed.stdout + resumed.stderr
    assert not rd.exists(LEASE)

    table = rd.read_table()
    assert len(table) == len(KEYS) and table["trial_id"].is_unique
    assert sorted(table["trial_id"]) == sorted(KEYS) and (table["stage"] == "search").all()
    assert (table["status"] == "finished").all(), table[["trial_id", "status", "error"]]
    assert (table["epochs"] == EPOCHS).all()
    assert table["pareto_rank"].notna().all()

    # finished trials were not rerun: Tune's result files and the table rows are unchanged
    for name in finished:
        assert rd.read_bytes(f"{EXP}/{name}/result.json") == result_bytes[name], name
        key = name.split("_", 2)[2]
        if rows_before is not None and key in rows_before.index:
            before, after = rows_before.loc[key], table.set_index("trial_id").loc[key]
            assert before["status"] == "finished"
            for col in ("wall_s", "finished_at", "nat_acc", "pgd_acc", "genotype"):
                assert before[col] == after[col], (key, col)

    # each interrupted trial continued from its checkpoint: its epochs go on, they do not restart at 1
    assert interrupted
    for name, epoch in interrupted.items():
        results = _results(rd, name)
        epochs = [r["epoch"] for r in results if r.get("status") == "running"]
        assert epochs.count(1) == 1, (name, epochs)  # epoch 1 ran once, before the kill
        restarts = [i for i, r in enumerate(results) if i > 0 and r["iterations_since_restore"] == 1]
        assert restarts, (name, epochs)
        after = results[restarts[-1]:]
        assert after[0]["epoch"] == epoch + 1, (name, epoch, epochs)
        assert [r["epoch"] for r in after] == list(range(epoch + 1, EPOCHS + 1))  # the last one reports the end
        assert after[-1]["status"] == "finished"
        assert after[0]["training_iteration"] > after[0]["iterations_since_restore"]
        assert {r["cpus"] for r in after} == {2.0} and {r["cpus"] for r in results[:restarts[-1]]} == {1.0}
    # no trial was run twice from the start
    trial_names = {f.split("/")[2] for f in rd.list(EXP) if f.count("/") >= 3}
    assert trial_names >= set(trials)
    for name in trial_names:
        epochs = [r["epoch"] for r in _results(rd, name) if r.get("status") == "running"]
        assert epochs.count(1) == 1, (name, epochs)
    deadline = time.time() + 15  # workers exit shortly after the driver's ray.shutdown()
    while _session_pids(ray_tmpdir) and time.time() < deadline:
        time.sleep(0.5)
    assert not _session_pids(ray_tmpdir), "the resumed driver left Ray processes behind"
