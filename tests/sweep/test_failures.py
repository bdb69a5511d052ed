"""Failure is visible (issue 14, items 2 and 4), through the real CLI on a real local Ray:
``sweep run`` exits 3 with one line when trials failed (the table, summary and report are still
written), a stage without a finished trial ends cleanly, the retrain stage ranks on what the
evaluation measured, and checks that belong to the trial's node happen there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arnas_ray.cli import main
from arnas_ray.results.rundir import RunDir
from arnas_ray.sweep.faults import FAULTS_ENV

from ._specs import tiny_spec, write_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

TWO = {"placement": ["arnas", "robust-first"], "channel_ratios": [[1, 2, 2]]}
OK, BAD = "arnas_1-2-2_mgda_s2", "robust-first_1-2-2_mgda_s2"


def _run(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str], **over) -> tuple[int, str, str, RunDir]:
    spec = write_spec(tmp_path / f"{name}.yaml", tiny_spec(name, tmp_path / "runs", **over))
    rc = main(["sweep", "run", str(spec), "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err, RunDir.for_sweep(tmp_path / "runs", name)


def test_one_diverging_trial_exits_3_with_everything_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"diverge": [BAD]}))
    rc, out, err, rd = _run(tmp_path, "half", capsys, grid=TWO, skip_retrain=True)
    assert rc == 3
    assert err.strip().splitlines()[-1] == "arnas-ray: 1 of 2 search trials failed: see sweep status"
    assert "Traceback" not in err
    table = rd.read_table().set_index("trial_id")
    assert sorted(table.index) == sorted([OK, BAD])
    assert table.loc[OK, "status"] == "finished" and table.loc[BAD, "status"] == "failed"
    assert table.loc[BAD, "error"].startswith("DivergenceError: non-finite")
    assert rd.exists("report.html") and json.loads(rd.read_text("summary.json"))["ok"] is False
    assert main(["sweep", "status", rd.uri]) == 0
    status = capsys.readouterr().out
    assert f"failed {BAD}: DivergenceError" in status and "last run: 1 of 2 search trials failed" in status


def test_only_trial_fails_clean_end_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"raise": [OK]}))
    rc, out, err, rd = _run(tmp_path, "lonely", capsys, grid={"placement": ["arnas"],
                                                               "channel_ratios": [[1, 2, 2]]},
                            max_failures=0)
    assert rc == 3 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("arnas-ray: no search trial finished (1 of 1 failed): "
                                            "see sweep status")
    row = rd.read_table().iloc[0]
    assert row["status"] == "failed" and row["error"].startswith("InjectedFault: injected fault in trial")
    assert row["error_file"].endswith("error.txt") and "InjectedFault" in Path(row["error_file"]).read_text()
    assert not (rd.read_table()["stage"] == "retrain").any()  # nothing to retrain: no crash
    assert rd.exists("report.html")


def test_evaluation_without_pgd20_ranks_on_what_it_measured(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err, rd = _run(tmp_path, "nopgd", capsys, grid=TWO, evaluation={"attacks": ["natural", "fgsm"],
                                                                              "limit": 32},
                            selection={"top_k": 2})
    assert rc == 0, err
    summary = json.loads(rd.read_text("summary.json"))
    assert summary["objectives"]["retrain"] == {"nat_acc": "max", "fgsm_acc": "max"}
    retrain = rd.read_table().query("stage == 'retrain'")
    assert len(retrain) >= 1 and retrain["pareto_rank"].notna().all()
    assert retrain["pgd20_acc"].isna().all() and retrain["fgsm_acc"].notna().all()
    assert summary["hypervolume"]["retrain"] is not None
    assert "Retrained winners" in out


def test_missing_data_root_fails_the_trial_naming_node_and_path(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-cifar"
    rc, out, err, rd = _run(tmp_path, "nodata", capsys, dataset={"name": "cifar10", "root": str(missing)},
                            grid={"placement": ["arnas"], "channel_ratios": [[1, 2, 2]]}, max_failures=0)
    assert rc == 3
    assert f"warning: dataset.root: {str(missing)!r} does not exist on this machine" in err
    error = rd.read_table().iloc[0]["error"]
    assert error.startswith("TrialSetupError: data set root") and str(missing) in error and "on node" in error


def test_a_resume_that_changes_the_trials_is_refused_naming_the_field(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err, rd = _run(tmp_path, "fixed", capsys, grid={"placement": ["arnas"], "channel_ratios": [[1, 2, 2]]},
                          skip_retrain=True)
    assert rc == 0, err
    longer = write_spec(tmp_path / "longer.yaml", tiny_spec("fixed", tmp_path / "runs", skip_retrain=True,
                                                            grid={"placement": ["arnas"],
                                                                  "channel_ratios": [[1, 2, 2]]},
                                                            search={"epochs": 2}))
    assert main(["sweep", "resume", rd.uri, "--spec", str(longer)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("arnas-ray: error: search.epochs: the run directory") and "'search.epochs'" not in line
    assert "=1" in line and "has 2" in line


def test_gpu_trial_without_cuda_fails_instead_of_running_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from arnas_ray.sweep import _trial

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(_trial.TrialSetupError, match=r"resources.gpu=0.5 but no CUDA device is visible"):
        _trial.setup_device(1, 0.5)
    assert _trial.setup_device(1, 0.0).type == "cpu"


def test_ray_client_addresses_point_to_submit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path / "c.yaml", tiny_spec("client", tmp_path / "runs"))
    assert main(["sweep", "run", str(spec), "--address", "ray://head:10001"]) == 2
    err = capsys.readouterr().err
    assert "Ray Client address" in err and "arnas-ray sweep submit" in err


def test_fractional_gpu_caps_memory_and_oom_is_retried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU sharing safety without a GPU: the calls a trial makes on CUDA are recorded."""
    import torch

    from arnas_ray.sweep import _trial

    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append(("cap", f)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty",)))
    monkeypatch.setattr(_trial, "_assigned", lambda name, default: {"CPU": 1.0, "GPU": 0.25}.get(name, default))
    device = _trial.setup_device(1, 0.25)
    assert device.type == "cuda" and calls == [("cap", 0.25)]

    reports: list[dict] = []
    monkeypatch.setattr(_trial.tune, "report", lambda metrics, **kw: reports.append(metrics))
    attempts: list[int] = []

    def oom_once() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    _trial.run_guarded("t", oom_once, device, {"device": "gpu"}, 0.0)
    assert len(attempts) == 2 and ("empty",) in calls and reports == []  # retried, then it ran through

    def oom_always() -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    _trial.run_guarded("t", oom_always, device, {"device": "gpu"}, 0.0)
    assert reports[-1]["status"] == "failed" and "out of memory twice" in reports[-1]["error"]
