"""The run-directory abstraction on a local disk and on a real S3-compatible server (moto on
127.0.0.1, pyarrow's own S3 client): names, atomic writes, the table, retries, outages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest

from arnas_ray.results import load_run, read_run, write_report
from arnas_ray.results.rundir import (
    RETRY_ENV,
    SPEC,
    SUMMARY,
    TABLE,
    RunDir,
    StorageError,
    redact_uri,
)
from arnas_ray.results.table import normalize_rows

from ._fakes import SPEC_TEXT, fake_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A run directory's location: a local path, or an S3 URI with the test server's options."""
    if request.param == "local":
        return str(tmp_path / "runs" / "demo")
    s3 = request.getfixturevalue("s3")
    return s3.uri(f"rundir-{uuid.uuid4().hex[:8]}/demo")


@pytest.fixture
def run_dir(location: str) -> RunDir:
    return RunDir.open(location)


def test_names_and_uris(tmp_path: Path, s3) -> None:
    local = RunDir.for_sweep(tmp_path / "runs", "demo")
    assert local.is_local and local.uri == str(tmp_path / "runs" / "demo") and local.name == "demo"
    assert local.local_path(TABLE) == tmp_path / "runs" / "demo" / TABLE
    assert local.tune_storage() == (str(tmp_path / "runs" / "demo" / "tune"), None)
    assert RunDir.open(f"file://{tmp_path}/runs/demo").local_path() == local.local_path()
    relative = RunDir.for_sweep("runs", "demo")
    assert relative.path == str(Path("runs").absolute() / "demo")
    remote = RunDir.for_sweep(s3.uri("p"), "demo")
    assert not remote.is_local and remote.local_path() is None
    assert remote.uri == "s3://arnas-test/p/demo" and remote.path == "arnas-test/p/demo"
    storage_path, fs = remote.tune_storage()
    assert storage_path == "arnas-test/p/demo/tune" and fs is remote.fs
    assert redact_uri("s3://b/p?access_key=AK&secret_key=SK&scheme=http") == \
        "s3://b/p?access_key=%2A%2A%2A&secret_key=%2A%2A%2A&scheme=http"


def test_write_read_list_delete(run_dir: RunDir) -> None:
    assert not run_dir.exists() and not run_dir.exists(SUMMARY)
    with pytest.raises(FileNotFoundError, match=SUMMARY):
        run_dir.read_text(SUMMARY)
    run_dir.write_text(SUMMARY, '{"a": 1}')
    run_dir.write_bytes("tune/search/x.bin", b"\x00\x01")
    assert run_dir.exists() and run_dir.exists(SUMMARY) and run_dir.read_text(SUMMARY) == '{"a": 1}'
    assert run_dir.list() == [SUMMARY, "tune/search/x.bin"] and run_dir.list("tune") == ["tune/search/x.bin"]
    run_dir.write_text(SUMMARY, '{"a": 2}')  # overwrite
    assert run_dir.read_text(SUMMARY) == '{"a": 2}'
    run_dir.delete(SUMMARY)
    run_dir.delete(SUMMARY)  # absent: fine
    assert not run_dir.exists(SUMMARY)


def test_table_and_notebook_loader(run_dir: RunDir, location: str) -> None:
    rows = fake_rows()
    run_dir.upsert_rows(rows[:3])
    table = run_dir.upsert_rows(rows[2:])  # overlaps by one key: replaced, not duplicated
    assert len(table) == len(rows) and not table.duplicated(["stage", "trial_id"]).any()
    run_dir.write_text(SPEC, SPEC_TEXT)
    pd.testing.assert_frame_equal(read_run(location), table)
    run = load_run(location)
    assert run.spec["name"] == "sw-test" and len(run.table) == len(rows)
    finished_first = normalize_rows([{**rows[0], "status": "failed"}])
    kept = run_dir.upsert_rows(finished_first, keep_finished=True)  # a finished row is final
    assert kept.loc[kept["trial_id"] == rows[0]["trial_id"], "status"].item() == "finished"


def test_report_writes_back_to_the_run_directory(run_dir: RunDir, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARNAS_RAY_CELL_BACKEND", "matplotlib")
    run_dir.upsert_rows(fake_rows())
    run_dir.write_text(SPEC, SPEC_TEXT)
    out = tmp_path / "copy.html"
    where = write_report(run_dir, out=out)
    assert str(where) == run_dir.show("report.html")
    assert {"report.html", "pareto.png", "pareto_search.png"} <= set(run_dir.list())
    assert out.read_bytes() == run_dir.read_bytes("report.html")


def test_s3_uri_loads_from_a_notebook_cell(s3) -> None:
    """What a notebook does: ``load_run("s3://...")`` with the query options."""
    prefix = f"nb-{uuid.uuid4().hex[:8]}"
    rd = RunDir.for_sweep(s3.uri(prefix), "demo")
    rd.upsert_rows(fake_rows())
    uri = s3.uri(prefix).replace(f"/{prefix}?", f"/{prefix}/demo?")
    assert len(load_run(uri).table) == len(fake_rows())
    assert s3.keys(prefix) == ["demo/results.parquet"]


def test_outage_is_retried_then_names_the_storage(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = RunDir.for_sweep(s3.uri(f"down-{uuid.uuid4().hex[:8]}"), "demo")
    rd.write_text(SUMMARY, "{}")
    monkeypatch.setenv(RETRY_ENV, "1")
    s3.stop()
    try:
        with pytest.raises(StorageError, match=r"s3://arnas-test/down-\w+/demo failed to read summary.json"):
            rd.read_text(SUMMARY)
    finally:
        s3.start()
    assert rd.read_text(SUMMARY) == "{}"  # the same objects after the outage


_KILL_BEFORE_PUBLISH = """
import sys, time
_sleep = time.sleep
def _announce(seconds):
    sys.stdout.write("BEFORE-PUBLISH\\n"); sys.stdout.flush(); _sleep(seconds)
time.sleep = _announce
from arnas_ray.results.rundir import RunDir
from tests.results._fakes import fake_rows
rd = RunDir.open(sys.argv[1])
rd.upsert_rows(fake_rows())
"""


def test_crash_between_writing_and_publishing_keeps_the_previous_table(run_dir: RunDir, location: str) -> None:
    """The writer is SIGKILLed after it built the new table, before the rename / the upload:
    the previous version stays readable, and no partial object is left on the object store."""
    rows = fake_rows()
    run_dir.upsert_rows(rows[:2])
    before = run_dir.read_bytes(TABLE)
    env = {**os.environ, "ARNAS_RAY_ATOMIC_SLEEP": "60", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILL_BEFORE_PUBLISH), location], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "BEFORE-PUBLISH", (line, proc.stderr.read())  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert run_dir.read_bytes(TABLE) == before
    assert len(run_dir.read_table()) == 2
    if not run_dir.is_local:
        assert run_dir.list() == [TABLE]


def test_display_location_needs_no_storage_and_hides_the_query(tmp_path):
    from arnas_ray.results.rundir import display_location

    uri = "s3://bucket/runs/?endpoint_override=127.0.0.1:9000&secret_key=SECRET"
    assert display_location(uri, "sweep") == "s3://bucket/runs/sweep"  # no network: the bucket does not exist
    assert display_location("file:///data/runs/", "s") == "/data/runs/s"
    assert display_location(str(tmp_path), "s") == f"{tmp_path}/s" == RunDir.for_sweep(tmp_path, "s").show()
