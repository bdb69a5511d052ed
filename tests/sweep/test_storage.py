"""Sweeps whose run directory lives on object storage: a real S3-compatible server on 127.0.0.1
(moto), pyarrow's own S3 client, real Ray. The whole run (spec, table, summary, report, plots,
Tune's experiments with checkpoints) is objects in the bucket; nothing lands on the local disk;
the CLI and the notebooks' loader read the run from its URI; an outage of the storage is ridden
out or ends with a clear error, and ``sweep resume`` completes the table without losing a row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from arnas_ray.cli import main
from arnas_ray.results import load_run
from arnas_ray.results.rundir import TABLE, RunDir

from ._specs import tiny_spec, write_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TWO = {"placement": ["arnas", "robust-first"], "channel_ratios": [[1, 2, 2]]}
KEYS = ["arnas_1-2-2_mgda_s2", "robust-first_1-2-2_mgda_s2"]


@pytest.fixture(scope="module")
def ray_s3(s3):
    """A local Ray started after the S3 fixture set the credentials (its workers inherit them)."""
    import ray

    if ray.is_initialized():  # pragma: no cover - a previous module leaked its instance
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield s3
    finally:
        ray.shutdown()


def _run_uri(s3, prefix: str, name: str) -> str:
    return s3.uri(f"{prefix}/{name}")


def test_sweep_on_s3_end_to_end(ray_s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    s3 = ray_s3
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    local_storage = tmp_path / "local-runs"  # the spec's storage: --storage replaces it
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_spec("s3e2e", local_storage, grid=TWO))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["sweep", "run", str(spec_path), "--storage", s3.uri(prefix), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"run directory: s3://{s3.BUCKET}/{prefix}/s3e2e" in out
    keys = s3.keys(f"{prefix}/s3e2e")
    for name in ("spec.yaml", TABLE, "summary.json", "report.html", "pareto.png", "pareto_search.png",
                 "tune/search/tuner.pkl", "tune/retrain/tuner.pkl"):
        assert name in keys, (name, keys)
    for stage in ("search", "retrain"):
        assert any(k.startswith(f"tune/{stage}/") and "/checkpoint_" in k and k.endswith(".pt") for k in keys)
    assert "lease.json" not in keys  # released
    assert list(cwd.iterdir()) == [] and not local_storage.exists()

    uri = _run_uri(s3, prefix, "s3e2e")
    assert main(["sweep", "status", uri]) == 0
    status = capsys.readouterr().out
    assert "driver: not running" in status and "search: 2 finished" in status and "retrain: " in status
    assert main(["pareto", uri, "--stage", "search"]) == 0
    front = capsys.readouterr().out
    assert all(k in front for k in KEYS), front
    s3.fs.delete_file(f"{s3.BUCKET}/{prefix}/s3e2e/report.html")
    assert main(["report", uri, "--out", str(tmp_path / "copy.html")]) == 0
    assert "report.html" in s3.keys(f"{prefix}/s3e2e") and (tmp_path / "copy.html").stat().st_size > 0
    run = load_run(uri)  # a notebook cell
    assert sorted(run.stage("search")["trial_id"]) == KEYS and (run.table["status"] == "finished").all()
    assert list(cwd.iterdir()) == []


def _driver_env(ray_tmpdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmpdir, ARNAS_RAY_CELL_BACKEND="matplotlib", TUNE_GLOBAL_CHECKPOINT_S="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def test_storage_outage_is_ridden_out_or_resumed(s3, tmp_path: Path) -> None:
    """The S3 server is stopped for 10 s while the search stage runs, then started again with
    the same objects. The driver either finishes or stops with an error naming the storage;
    then ``sweep resume URI`` ends with every trial's row, none duplicated."""
    from .test_resume import _kill_session

    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    data = tiny_spec("outage", s3.uri(prefix), grid=TWO, skip_retrain=True, max_concurrent=1, max_failures=3,
                     search={"epochs": 2, "steps_per_epoch": 4})
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    ray_tmpdir = tempfile.mkdtemp(prefix="arnas-so-", dir="/tmp")
    env = _driver_env(ray_tmpdir)
    rd = RunDir.for_sweep(s3.uri(prefix), "outage")
    try:
        driver = subprocess.Popen([sys.executable, "-m", "arnas_ray", "sweep", "run", str(spec_path)], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        deadline = time.time() + 240
        while not any("/checkpoint_" in k for k in s3.keys(f"{prefix}/outage/tune/search")):
            assert driver.poll() is None and time.time() < deadline, driver.communicate()[1][-3000:]
            time.sleep(0.5)
        s3.stop()
        time.sleep(10)
        s3.start()
        out, err = driver.communicate(timeout=600)
        if driver.returncode != 0:  # it gave up: the error names the storage, in one line
            assert "s3://" in err and "storage" in err, err[-3000:]
        _kill_session(ray_tmpdir)
        resumed = subprocess.run([sys.executable, "-m", "arnas_ray", "sweep", "resume", _run_uri(s3, prefix, "outage"),
                                  "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        _kill_session(ray_tmpdir)
    table = rd.read_table()
    assert sorted(table["trial_id"]) == KEYS and table["trial_id"].is_unique
    assert (table["status"] == "finished").all() and (table["epochs"] == 2).all(), table[["trial_id", "status"]]
    summary = json.loads(rd.read_text("summary.json"))
    assert summary["ok"] is True and summary["trials"]["search"] == 2
