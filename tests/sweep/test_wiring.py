"""The pipeline's wiring to Ray Tune, without a cluster (STYLE rule 10a): ``ray.tune.Tuner`` is
replaced by a recorder and the keyword arguments are checked (resources per trial, concurrency,
retries, storage under the run directory, the quiet console settings, restore flags)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from arnas_ray.results import read_table
from arnas_ray.space import GENOTYPES
from arnas_ray.sweep import SweepSpec, run_sweep, tuning
from arnas_ray.sweep import pipeline as pipeline_mod
from arnas_ray.sweep.pipeline import PROGRESS_LOGGER, TUNE_QUIET_ENV

from ._specs import GRID_KEYS, tiny_spec

GENOTYPE = GENOTYPES["ARNAS"].to_json()


class _Result:
    def __init__(self, config: dict[str, Any], metrics: dict[str, Any]):
        self.config, self.metrics, self.error = config, metrics, None


def _grid_results(param_space: dict[str, Any], wall_s: float) -> list[_Result]:
    """What a finished experiment returns: one result per grid point, with made-up metrics."""
    out = []
    for i, point in enumerate(param_space["point"]["grid_search"]):
        metrics = {"trial_key": point["key"], "status": "finished", "epoch": 1, "genotype": GENOTYPE,
                   "nat_acc": 0.5 + 0.1 * i, "pgd_acc": 0.4 - 0.1 * i, "fgsm_acc": 0.3, "pgd20_acc": 0.3 - 0.05 * i,
                   "params": 1000 + i, "flops": 2000 + i, "wall_s": wall_s, "device": "cpu", "node": "n0",
                   "timestamp": 1_700_000_000 + i, "time_total_s": wall_s}
        out.append(_Result({"spec": param_space["spec"], "point": point}, metrics))
    return out


class _Recorder:
    """Stands in for ``ray.tune.Tuner``; records every construction, restore and fit."""

    made: list[_Recorder] = []
    restorable: set[str] = set()
    wall_s = 3.0

    def __init__(self, trainable, *, param_space=None, tune_config=None, run_config=None, restored_from=None,
                 restore_kwargs=None):
        self.trainable, self.param_space = trainable, param_space
        self.tune_config, self.run_config = tune_config, run_config
        self.restored_from, self.restore_kwargs = restored_from, restore_kwargs
        self.env_at_fit: dict[str, str | None] = {}
        if run_config is not None:  # what Tune does with it: pickle it into tuner.pkl
            ray.cloudpickle.dumps(run_config)
        _Recorder.made.append(self)

    @classmethod
    def can_restore(cls, path: str, storage_filesystem=None) -> bool:
        return path in cls.restorable

    @classmethod
    def restore(cls, path: str, trainable, **kwargs) -> _Recorder:
        stage = Path(path).name
        space = _Recorder.last(stage).param_space
        return cls(trainable, param_space=space, restored_from=path, restore_kwargs=kwargs)

    @classmethod
    def last(cls, stage: str) -> _Recorder:
        return [t for t in cls.made if t.run_config is not None and t.run_config.name == stage][-1]

    def fit(self) -> list[_Result]:
        self.env_at_fit = {k: os.environ.get(k) for k in TUNE_QUIET_ENV}
        return _grid_results(self.param_space, self.wall_s)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[_Recorder]:
    _Recorder.made = []
    _Recorder.restorable = set()
    _Recorder.wall_s = 3.0
    monkeypatch.setattr(tune, "Tuner", _Recorder)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # no ray.init: there is no cluster
    for key in TUNE_QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    return _Recorder


def _spec(tmp_path: Path, **overrides: Any) -> SweepSpec:
    data = tiny_spec("wired", tmp_path / "runs", resources={"cpu": 1.5, "gpu": 0.25},
                     retrain_resources={"cpu": 2, "gpu": 0.5}, max_concurrent=3, max_failures=4,
                     selection={"top_k": 2}, **overrides)
    return SweepSpec.from_dict(data)


def test_tuner_kwargs_follow_the_spec(tmp_path: Path, recorder: type[_Recorder]) -> None:
    from rich.console import Console

    console = Console(file=open(os.devnull, "w"))  # holds locks: must never be pickled into tuner.pkl
    lines: list[str] = []

    def progress(text: str) -> None:
        lines.append(text)
        console.print(text)

    spec = _spec(tmp_path)
    result = run_sweep(spec, progress=progress, report=False)
    run_dir = tmp_path / "runs" / "wired"
    assert result.run_dir.local_path() == run_dir and result.ok
    search, retrain = recorder.made
    for tuner, stage, res in ((search, "search", {"CPU": 1.5, "GPU": 0.25}),
                              (retrain, "retrain", {"CPU": 2.0, "GPU": 0.5})):
        assert tuner.restored_from is None
        assert tuner.trainable._resources.required_resources == res
        rc = tuner.run_config
        assert rc.name == stage and rc.storage_path == str(run_dir / "tune")
        assert rc.storage_filesystem is None  # a local disk: plain paths
        assert rc.failure_config.max_failures == 4
        assert rc.verbose == 0
        kinds = {type(c) for c in rc.callbacks}
        assert {JsonLoggerCallback, CSVLoggerCallback} <= kinds and len(rc.callbacks) == 3
        tc = tuner.tune_config
        assert tc.max_concurrent_trials == 3 and tc.reuse_actors is True
        assert tc.search_alg is None and tc.trial_dirname_creator is not None
        # Tune's console output is off while it runs, and the settings are gone afterwards
        assert tuner.env_at_fit == TUNE_QUIET_ENV
        assert tuner.param_space["spec"] == spec.to_dict()
    assert all(k not in os.environ for k in TUNE_QUIET_ENV)
    keys = [p["key"] for p in search.param_space["point"]["grid_search"]]
    assert keys == list(GRID_KEYS)
    # all four are non-dominated; they share one genotype JSON but place its cells at other
    # stages or widths, so they are four networks: top_k = 2 of them are retrained
    retrained = [p["source"] for p in retrain.param_space["point"]["grid_search"]]
    assert len(retrained) == 2 and set(retrained) <= set(GRID_KEYS)
    assert any(line.startswith("[select] 2 non-dominated") for line in lines)
    table = read_table(run_dir / "results.parquet")
    assert sorted(table.loc[table["stage"] == "search", "trial_id"]) == sorted(GRID_KEYS)
    assert (table["status"] == "finished").all()
    assert set(result.summary["hypervolume"]) == {"search", "retrain"}


def test_optuna_mode_wires_nsga2_with_both_objectives(tmp_path: Path, recorder: type[_Recorder],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.tune.search.optuna import OptunaSearch

    spec = _spec(tmp_path, search_algorithm="optuna", skip_retrain=True, sampler={"num_samples": 4},
                 optuna={"population_size": 4}, grid={"placement": ["arnas", "robust-first"],
                                                      "channel_ratios": [None]})

    def fit(self: _Recorder) -> list[_Result]:
        return []

    monkeypatch.setattr(recorder, "fit", fit)
    result = run_sweep(spec, report=False)  # no trial ran: a clean end, not ok
    assert not result.ok and result.message == "no search trial ran: see sweep status"
    (search,) = recorder.made
    tc = search.tune_config
    assert isinstance(tc.search_alg, OptunaSearch)
    assert tc.search_alg.metric == ["nat_acc", "pgd_acc"] and tc.search_alg.mode == ["max", "max"]
    assert type(tc.search_alg._sampler).__name__ == "NSGAIISampler"
    assert tc.num_samples == 4 and tc.max_concurrent_trials == 3
    space = search.param_space
    assert "point" not in space and {"placement", "r1", "r2", "strategy", "seed"} <= set(space)
    # every placement of the grid is evaluated once (at its own ratios) before NSGA-II proposes
    assert [p["placement"] for p in tc.search_alg._points_to_evaluate] == [0, 1]


def test_second_run_restores_and_keeps_finished_rows(tmp_path: Path, recorder: type[_Recorder]) -> None:
    spec = _spec(tmp_path, skip_retrain=True)
    run_sweep(spec, report=False)
    run_dir = tmp_path / "runs" / "wired"
    before = read_table(run_dir / "results.parquet").set_index("trial_id")
    recorder.restorable = {str(run_dir / "tune" / "search")}
    recorder.wall_s = 99.0  # a replayed completion must not overwrite a finished row
    lines: list[str] = []
    run_sweep(spec, report=False, progress=lines.append)
    restored = recorder.made[-1]
    assert restored.restored_from == str(run_dir / "tune" / "search")
    assert restored.restore_kwargs == {"resume_unfinished": True, "resume_errored": True,
                                       "storage_filesystem": None}
    assert restored.trainable._resources.required_resources == {"CPU": 1.5, "GPU": 0.25}
    assert restored.env_at_fit == TUNE_QUIET_ENV
    assert any("resuming the Tune experiment" in line for line in lines)
    after = read_table(run_dir / "results.parquet").set_index("trial_id")
    assert len(after) == len(before) == 4
    assert (after["wall_s"] == before["wall_s"]).all() and (after["wall_s"] == 3.0).all()


def test_table_callback_survives_pickling(tmp_path: Path) -> None:
    """Tune restores callbacks from tuner.pkl: the callback must pickle and work afterwards."""
    spec = _spec(tmp_path)
    cb = tuning.TableCallback(spec, "search", pipeline_mod.run_dir_for(spec), None, 4)
    again = ray.cloudpickle.loads(ray.cloudpickle.dumps(cb))
    assert again.spec == spec and again.run_dir == cb.run_dir and again.total == 4


def test_progress_goes_to_the_callable_only_during_the_run(tmp_path: Path, recorder: type[_Recorder],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import logging

    lines: list[str] = []
    run_sweep(_spec(tmp_path, skip_retrain=True), report=False, progress=lines.append)
    log = logging.getLogger(PROGRESS_LOGGER)
    assert not log.handlers and log.propagate  # nothing left behind
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        log.info("after the run")
    assert "after the run" not in lines and "after the run" in caplog.text


def test_new_local_ray_unless_an_address_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert pipeline_mod._ensure_ray(None) is True
    assert calls[-1]["address"] == "local" and calls[-1]["include_dashboard"] is False
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # a Ray Jobs entrypoint: join that cluster
    pipeline_mod._ensure_ray(None)
    assert calls[-1]["address"] is None
    assert calls[-1]["log_to_driver"] is True  # a Ray job: the trials' output reaches `ray job logs`
    pipeline_mod._ensure_ray("auto")
    assert calls[-1]["address"] == "auto" and "include_dashboard" not in calls[-1]
    monkeypatch.delenv("RAY_ADDRESS")
    pipeline_mod._ensure_ray(None)
    assert calls[-1]["log_to_driver"] is False  # a local sweep: only the progress lines


def test_second_driver_is_refused_before_ray_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import socket
    import time

    from arnas_ray.cli import main

    from ._specs import write_spec

    def no_ray(**kwargs: Any) -> None:
        raise AssertionError("ray.init must not be called")

    monkeypatch.setattr(ray, "init", no_ray)
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_spec("locked", tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "locked"
    run_dir.mkdir(parents=True)
    # a live holder: this very process, as another driver would be
    (run_dir / "lease.json").write_text(json.dumps({"owner": "other", "host": socket.gethostname(),
                                                    "pid": os.getpid(), "started": 0, "heartbeat": time.time()}))
    assert main(["sweep", "run", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert "in use by another driver" in err and f"pid {os.getpid()}" in err
    assert main(["sweep", "resume", str(run_dir)]) == 2  # no spec.yaml yet: not a run directory
    assert "not a run directory" in capsys.readouterr().err
