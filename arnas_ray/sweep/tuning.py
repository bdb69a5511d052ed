"""The Tune plumbing of a sweep stage: the table callback, Tune's quiet console, progress lines,
and one ``Tuner`` per stage (new, or restored from the run directory's experiment).

Progress lines are log records of the ``arnas_ray.sweep.progress`` logger;
:func:`progress_to` routes them to a callable for the duration of a block. Tune's own console
output (its boxed experiment summary, result-path and TensorBoard hints, snapshot warnings,
INFO lines) is turned off while the Tuners run, see :data:`TUNE_QUIET_ENV`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from arnas_ray.results.rundir import RunDir
from arnas_ray.sweep.rows import (
    error_file_of,
    error_line,
    final_status,
    retrain_meta,
    row,
    search_meta,
)
from arnas_ray.sweep.spec import SweepSpec

__all__ = ["PROGRESS_LOGGER", "TUNE_QUIET_ENV", "Outcome", "Progress", "Stage", "TableCallback", "fit_stage",
           "progress_to", "quiet_tune", "say"]

logger = logging.getLogger(__name__)
#: the logger of the one-line progress messages (trials running / pending / done, epochs, front)
PROGRESS_LOGGER = "arnas_ray.sweep.progress"
_progress_log = logging.getLogger(PROGRESS_LOGGER)
#: environment Ray Tune 2.x reads while ``Tuner.fit`` runs; set (unless already set by the user)
#: for the duration of each fit so that only the pipeline's own progress lines reach the console
TUNE_QUIET_ENV: dict[str, str] = {
    # the legacy reporter, which verbose=0 silences completely (the new output engine still
    # prints its "Configuration for experiment" box, "View detailed results here" and a
    # TensorBoard hint at verbose=0)
    "RAY_AIR_NEW_OUTPUT": "0",
    # "Experiment state snapshotting has been triggered multiple times ..." (0 = never warn)
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # no automatic TensorBoard logger (its "Removed the following hyperparameter values" lines);
    # the JSON and CSV loggers that experiment analysis and resume rely on are passed explicitly
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
#: Tune loggers whose INFO lines ("Wrote the latest version of all result files ...") are muted
_TUNE_LOGGERS = ("ray.tune",)
_PROGRESS_METRICS = ("nat_acc", "pgd_acc", "val_nat_acc", "val_pgd_acc", "pgd20_acc", "gamma_mean")

Progress = Callable[[str], None]
MetaFn = Callable[[SweepSpec, Mapping[str, Any]], tuple[str, dict[str, Any]]]


def _meta_fn(stage: str) -> MetaFn:
    return search_meta if stage == "search" else retrain_meta


class TableCallback(tune.Callback):
    """Writes a trial's row when it finishes or fails (so a dead driver loses nothing) and
    logs progress: trials running / pending / done, epochs, and an ETA.

    It holds only picklable state (Tune pickles the run config, callbacks included, into the
    experiment's ``tuner.pkl``); on a restore the pipeline installs a fresh one anyway.
    """

    def __init__(self, spec: SweepSpec, stage: str, run_dir: RunDir, git_sha: str | None, total: int):
        self.spec, self.stage, self.run_dir, self.git_sha = spec, stage, run_dir, git_sha
        self.total = total
        self.t0 = time.time()
        #: trial key -> Tune's state of it when the experiment ended (TERMINATED, ERROR, RUNNING...)
        self.final: dict[str, str] = {}
        #: every trial's final row, from ``on_experiment_end``
        self.rows: list[dict[str, Any]] = []

    def setup(self, **info: Any) -> None:
        self.t0 = time.time()  # also after a restore: the ETA counts from this driver's start

    def _counts(self, trials: Sequence[Any]) -> str:
        states = [t.status for t in trials]
        running, pending = states.count("RUNNING"), states.count("PENDING")
        finished = states.count("TERMINATED") + states.count("ERROR")
        eta = ""
        if finished and finished < self.total:
            per = (time.time() - self.t0) / finished
            eta = f", ETA {per * (self.total - finished) / max(1, running or 1):.0f}s"
        return f"[{self.stage}] {running} running, {pending} pending, {finished}/{self.total} done{eta}"

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        key = result.get("trial_key", trial.trial_id)
        if result.get("status") == "failed":
            _progress_log.info("%s | %s failed: %s", self._counts(trials), key, result.get("error"))
            return
        epochs = self.spec.search.epochs if self.stage == "search" else self.spec.retrain.epochs
        parts = [f"epoch {result.get('epoch', '?')}/{epochs}"]
        parts += [f"{name} {result[name]:.3f}" for name in _PROGRESS_METRICS
                  if isinstance(result.get(name), (int, float))]
        warning = result.get("degeneracy")
        if isinstance(warning, str) and warning:
            parts.append(f"WARNING: {warning}")
        _progress_log.info("%s | %s: %s", self._counts(trials), key, ", ".join(parts))

    def _write(self, trial: Any, error: str | None, error_file: str | None, tune_status: str | None) -> str:
        key, meta = _meta_fn(self.stage)(self.spec, trial.config)
        metrics = dict(trial.last_result or {})
        status = final_status(metrics, error, tune_status)
        r = row(self.spec, self.stage, key, meta, metrics, error, self.git_sha, error_file, status)
        self.run_dir.upsert_rows([r], keep_finished=True)
        return status

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        status = self._write(trial, None, None, "TERMINATED")
        last = trial.last_result or {}
        detail = f" at epoch {last.get('epoch')}" if status == "stopped" else ""
        _progress_log.info("%s | %s %s%s", self._counts(trials), last.get("trial_key", trial.trial_id), status,
                           detail)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Every trial's final row (also those that never reported: a time budget ended them
        before they started), from Tune's own records of the trials."""
        self.rows = []
        for trial in trials:
            key, meta = _meta_fn(self.stage)(self.spec, trial.config)
            tune_status = str(trial.status)
            self.final[key] = tune_status
            line, error_file = self._error(trial) if tune_status == "ERROR" else (None, None)
            metrics = dict(trial.last_result or {})
            status = final_status(metrics, line, tune_status)
            self.rows.append(row(self.spec, self.stage, key, meta, metrics, line, self.git_sha, error_file, status))

    def _error(self, trial: Any) -> tuple[str, str | None]:
        try:
            text = trial.get_error()
        except Exception:  # noqa: BLE001 - the error file may be unreachable: the row says so
            text = None
        filename = getattr(trial.run_metadata, "error_filename", None)
        error_file = error_file_of(self.run_dir, trial.storage.trial_fs_path, filename)
        return error_line(text) or "trial raised an error (see its error file)", error_file

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        line, error_file = self._error(trial)
        self._write(trial, line, error_file, "ERROR")
        _progress_log.info("%s | %s failed: %s", self._counts(trials), trial.trial_id, line)


@contextlib.contextmanager
def quiet_tune() -> Iterator[None]:
    """Set :data:`TUNE_QUIET_ENV` (what the user has not set) and mute Tune's INFO lines."""
    added = {k: v for k, v in TUNE_QUIET_ENV.items() if k not in os.environ}
    levels = {name: logging.getLogger(name).level for name in _TUNE_LOGGERS}
    os.environ.update(added)
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, levels[name]))
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class _ProgressHandler(logging.Handler):
    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken console must not stop the sweep
            self.handleError(record)


@contextlib.contextmanager
def progress_to(progress: Progress | None) -> Iterator[None]:
    """Route the progress logger's records to ``progress`` (only there) while the block runs."""
    if progress is None:
        yield
        return
    handler = _ProgressHandler(progress)
    old_level, old_propagate = _progress_log.level, _progress_log.propagate
    _progress_log.addHandler(handler)
    _progress_log.setLevel(logging.INFO)
    _progress_log.propagate = False
    try:
        yield
    finally:
        _progress_log.removeHandler(handler)
        _progress_log.setLevel(old_level)
        _progress_log.propagate = old_propagate


def say(message: str, *args: Any) -> None:
    """One progress line."""
    _progress_log.info(message, *args)


@dataclasses.dataclass
class Stage:
    """One Tune experiment of a sweep: what to run and how."""

    name: str  # "search" or "retrain"
    trainable: Callable[[dict[str, Any]], None]
    param_space: dict[str, Any]
    tune_config: tune.TuneConfig
    total: int
    callbacks: Sequence[Any] = ()
    stop: dict[str, Any] | None = None  # Tune's per-trial stop criterion


@dataclasses.dataclass
class Outcome:
    """How a stage's experiment ended: trial key -> table status, and whether the driver
    stopped it with trials unfinished (``sweep stop``, Ctrl-C: a resume continues them)."""

    statuses: dict[str, str]
    interrupted: bool
    wall_s: float


def _trial_dirname(trial: Any) -> str:
    """``TRIALID_KEY`` instead of Tune's default, which flattens the whole config into the name."""
    point = trial.config.get("point")
    if isinstance(point, Mapping):
        key = point.get("key")
    else:  # sampled by Optuna: the key its point gets
        try:
            key = search_meta(SweepSpec.from_dict(trial.config["spec"]), trial.config)[0]
        except (KeyError, TypeError, ValueError):
            key = "trial"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key))
    return f"{trial.trial_id}_{safe}"[:120]


def _refresh_restored(tuner: Any, tune_config: tune.TuneConfig, run_config: tune.RunConfig,
                      resources: dict[str, float]) -> None:
    """Give a restored Tuner this driver's settings: Tune restores concurrency, callbacks and
    failure handling from its ``tuner.pkl`` and has no public way to change them, but they may
    change on resume (and the callbacks must write to this driver's run directory)."""
    inner = getattr(tuner, "_local_tuner", None)
    if inner is None:  # pragma: no cover - Ray Client, which run_sweep refuses
        return
    inner._tune_config = dataclasses.replace(inner._tune_config,
                                             max_concurrent_trials=tune_config.max_concurrent_trials)
    inner._run_config.callbacks = list(run_config.callbacks or [])
    inner._run_config.failure_config = run_config.failure_config
    # the resources of the restored trials that are not running yet (all of them after a restore)
    inner._tuner_kwargs["resources_per_trial"] = dict(resources)


def _grid_rows(spec: SweepSpec, stage: str, grid: Any, run_dir: RunDir, git_sha: str | None) -> list[dict[str, Any]]:
    rows = []
    for result in grid:
        if result.config is None:  # a trial that never reported (no result files)
            continue
        key, meta = _meta_fn(stage)(spec, result.config)
        err = error_line(result.error)
        error_file = error_file_of(run_dir, getattr(result, "path", None)) if err is not None else None
        rows.append(row(spec, stage, key, meta, dict(result.metrics or {}), err, git_sha, error_file))
    return rows


def fit_stage(spec: SweepSpec, stage: Stage, run_dir: RunDir, git_sha: str | None) -> Outcome:
    """Run (or continue) one stage's Tune experiment in ``RUN_DIR/tune/STAGE`` and write every
    trial's final row to the table (a ``finished`` row is final: never overwritten)."""
    t0 = time.time()
    res = spec.resources if stage.name == "search" else (spec.retrain_resources or spec.resources)
    resources = {"cpu": res.cpu, "gpu": res.gpu}
    wrapped = tune.with_resources(stage.trainable, resources)
    storage_path, fs = run_dir.tune_storage()
    experiment = f"{storage_path}/{stage.name}"
    table_cb = TableCallback(spec, stage.name, run_dir, git_sha, stage.total)
    callbacks = [table_cb, JsonLoggerCallback(), CSVLoggerCallback(), *stage.callbacks]
    run_config = tune.RunConfig(
        name=stage.name, storage_path=storage_path, storage_filesystem=fs, verbose=0, callbacks=callbacks,
        stop=stage.stop,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    tune_config = dataclasses.replace(stage.tune_config, trial_dirname_creator=_trial_dirname)
    with quiet_tune():
        if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
            say("[%s] resuming the Tune experiment in %s", stage.name, run_dir.show(f"tune/{stage.name}"))
            tuner = tune.Tuner.restore(experiment, trainable=wrapped, resume_unfinished=True,
                                       resume_errored=True, storage_filesystem=fs)
            _refresh_restored(tuner, tune_config, run_config, resources)
        else:
            tuner = tune.Tuner(wrapped, param_space=stage.param_space, tune_config=tune_config,
                               run_config=run_config)
        grid = tuner.fit()
    # final reconciliation: every trial's last state lands in the table exactly once (from
    # Tune's records of its trials; from the result grid where the callback saw no end)
    rows = table_cb.rows or _grid_rows(spec, stage.name, grid, run_dir, git_sha)
    if rows:
        run_dir.upsert_rows(rows, keep_finished=True)
    unfinished = {"RUNNING", "PENDING", "PAUSED"}
    return Outcome({r["trial_id"]: r["status"] for r in rows},
                   any(s in unfinished for s in table_cb.final.values()), time.time() - t0)
