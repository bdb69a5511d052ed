"""``run_sweep``: search trials -> results table -> Pareto selection -> retrain trials -> report.

Everything lives in one run directory ``STORAGE/NAME``::

    spec.yaml         the validated spec (a second driver on other settings is refused)
    results.parquet   one row per trial and stage (upserted by (stage, trial_id): never duplicated)
    tune/search/      Ray Tune experiment of the search stage (checkpoints: resume)
    tune/retrain/     Ray Tune experiment of the retrain stage
    summary.json      hypervolume per stage, selected trials, timings
    report.html, pareto.png
    .lock             the live driver's host and PID

Re-running ``sweep run`` on an existing run directory with the same spec, or ``sweep resume``,
continues through ``Tuner.restore``: finished trials are not rerun, unfinished ones continue
from their last checkpoint, errored ones are retried. A row that is ``finished`` in the table is
final: a trial that Tune replays after a restore (its completion fell after the last experiment
snapshot) does not overwrite it.

Progress lines are log records of the ``arnas_ray.sweep.progress`` logger; ``run_sweep(progress=fn)``
routes them to ``fn`` for the duration of the call. Tune's own console output (its boxed
experiment summary, result-path and TensorBoard hints, snapshot warnings, INFO lines) is turned off
while the Tuners run, see :data:`TUNE_QUIET_ENV`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from arnas_ray._atomic import atomic_write_text
from arnas_ray.errors import SpecError
from arnas_ray.results import (
    rank_rows,
    read_table,
    select_front,
    stage_hypervolume,
    upsert_rows,
    write_report,
)
from arnas_ray.space import Genotype, Layout
from arnas_ray.sweep.lock import RunLock
from arnas_ray.sweep.spec import SweepSpec, load_spec
from arnas_ray.sweep.trainables import point_from_config, retrain_trainable, search_trainable

__all__ = ["PROGRESS_LOGGER", "RunResult", "TUNE_QUIET_ENV", "resume_sweep", "run_dir_for", "run_sweep"]

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
TABLE = "results.parquet"
RETRAIN_OBJECTIVES = {"nat_acc": "max", "pgd20_acc": "max"}

Progress = Callable[[str], None]


@dataclass
class RunResult:
    run_dir: Path
    table: pd.DataFrame
    summary: dict[str, Any]
    wall_s: float


def run_dir_for(spec: SweepSpec, storage: str | None = None) -> Path:
    return (Path(storage or spec.storage) / spec.name).absolute()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _prepare_run_dir(spec: SweepSpec, run_dir: Path) -> None:
    spec_path = run_dir / "spec.yaml"
    if spec_path.exists():
        old = load_spec(spec_path)
        if old.fingerprint() != spec.fingerprint():
            raise SpecError("name", f"run directory {str(run_dir)!r} holds a sweep with another spec; "
                                    "change `name` or --storage, or resume it with `arnas-ray sweep resume`")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec_path, spec.to_yaml())


def _ts(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (TypeError, ValueError):
        return None


def _row(spec: SweepSpec, stage: str, key: str, meta: Mapping[str, Any], metrics: Mapping[str, Any],
         error: str | None, git_sha: str | None) -> dict[str, Any]:
    """One table row from a trial's last reported metrics (or its error)."""
    status = metrics.get("status", "running")
    if error is not None:
        status = "failed"
    elif status not in ("finished", "failed"):
        status = "running"
    end = metrics.get("timestamp")
    total = metrics.get("time_total_s")
    row = {
        "sweep_id": spec.name,
        "stage": stage,
        "trial_id": key,
        "status": status,
        "error": error if error is not None else metrics.get("error"),
        "dataset": spec.dataset.name,
        "placement": meta["placement"],
        "channel_ratios": json.dumps([int(r) if float(r).is_integer() else r for r in meta["channel_ratios"]]),
        "strategy": meta.get("strategy"),
        "order": spec.search.order,
        "seed": int(meta["seed"]),
        "genotype": metrics.get("genotype"),
        "params": metrics.get("params"),
        "flops": metrics.get("flops"),
        "nat_acc": metrics.get("nat_acc"),
        "pgd_acc": metrics.get("pgd_acc") if stage == "search" else None,
        "fgsm_acc": metrics.get("fgsm_acc"),
        "pgd20_acc": metrics.get("pgd20_acc"),
        "pgd100_acc": metrics.get("pgd100_acc"),
        "aa_acc": metrics.get("aa_acc"),
        "epochs": metrics.get("epoch"),
        "wall_s": metrics.get("wall_s", total),
        "device": metrics.get("device"),
        "node": metrics.get("node"),
        "started_at": _ts(end - total) if end is not None and total is not None else None,
        "finished_at": _ts(end) if status in ("finished", "failed") else None,
        "git_sha": git_sha,
        "config": json.dumps(meta.get("config")) if meta.get("config") is not None else None,
    }
    if stage == "search" and status != "finished":
        row.update(params=None, flops=None)
    return row


def _search_meta(spec: SweepSpec, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    point = point_from_config(dict(config), spec)
    layout = point.layout()
    cfg = spec.search_config(point)
    return point.key, {"placement": layout.name, "channel_ratios": list(layout.ratios), "strategy": point.strategy,
                       "seed": point.seed, "config": cfg.to_dict()}


def _retrain_meta(spec: SweepSpec, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    p = config["point"]
    return p["key"], {"placement": p["layout_name"], "channel_ratios": list(p["channel_ratios"]),
                      "strategy": p["strategy"], "seed": p["seed"], "config": {"source": p["source"]}}


def _upsert_unless_finished(table_path: Path, rows: list[dict[str, Any]]) -> None:
    """Upsert rows, except over a row that is already ``finished`` (a finished row is final)."""
    if table_path.exists():
        old = read_table(table_path)
        done = set(zip(old.loc[old["status"] == "finished", "stage"],
                       old.loc[old["status"] == "finished", "trial_id"]))
        rows = [r for r in rows if (r["stage"], r["trial_id"]) not in done]
    if rows:
        upsert_rows(table_path, rows)


class _TableCallback(tune.Callback):
    """Writes a trial's row when it finishes or fails (so a dead driver loses nothing) and
    logs progress: trials running / pending / done, epochs, and an ETA.

    It holds only picklable state: Tune pickles the run config (callbacks included) into the
    experiment's ``tuner.pkl`` and ``Tuner.restore`` brings this very callback back, so nothing
    has to be re-attached after a restore (Tune 2.x has no public way to do that).
    """

    def __init__(self, spec: SweepSpec, stage: str, table: Path, git_sha: str | None, total: int):
        self.spec, self.stage, self.table, self.git_sha = spec, stage, table, git_sha
        self.total = total
        self.t0 = time.time()
        self.meta = _search_meta if stage == "search" else _retrain_meta

    def setup(self, **info: Any) -> None:
        self.t0 = time.time()  # also after a restore: the ETA counts from this driver's start

    def _say(self, text: str) -> None:
        _progress_log.info(text)

    def _table_path(self, trial) -> Path:
        # RUN_DIR/tune/STAGE is the experiment; after a restore from a moved run directory Tune
        # points the trials at the new place, the pickled self.table still names the old one
        try:
            return Path(trial.storage.experiment_fs_path).parent.parent / TABLE
        except (AttributeError, TypeError):
            return self.table

    def _counts(self, trials) -> str:
        states = [t.status for t in trials]
        running = states.count("RUNNING")
        pending = states.count("PENDING")
        finished = states.count("TERMINATED") + states.count("ERROR")
        eta = ""
        if finished and finished < self.total:
            per = (time.time() - self.t0) / finished
            eta = f", ETA {per * (self.total - finished) / max(1, running or 1):.0f}s"
        return f"[{self.stage}] {running} running, {pending} pending, {finished}/{self.total} done{eta}"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = result.get("trial_key", trial.trial_id)
        if result.get("status") == "failed":
            self._say(f"{self._counts(trials)} | {key} failed: {result.get('error')}")
            return
        epochs = self.spec.search.epochs if self.stage == "search" else self.spec.retrain.epochs
        parts = [f"epoch {result.get('epoch', '?')}/{epochs}"]
        for name in ("nat_acc", "pgd_acc", "val_nat_acc", "val_pgd_acc", "pgd20_acc", "gamma_mean"):
            if isinstance(result.get(name), (int, float)):
                parts.append(f"{name} {result[name]:.3f}")
        self._say(f"{self._counts(trials)} | {key}: " + ", ".join(parts))

    def _write(self, trial, error: str | None) -> None:
        key, meta = self.meta(self.spec, trial.config)
        metrics = dict(trial.last_result or {})
        row = _row(self.spec, self.stage, key, meta, metrics, error, self.git_sha)
        _upsert_unless_finished(self._table_path(trial), [row])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, None)
        self._say(f"{self._counts(trials)} | {trial.last_result.get('trial_key', trial.trial_id)} "
                  f"{trial.last_result.get('status', 'finished')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        err = str(getattr(trial, "error_msg", None) or "trial raised an error")
        self._write(trial, err.strip().splitlines()[-1] if err.strip() else err)
        self._say(f"{self._counts(trials)} | {trial.trial_id} errored")


def _search_param_space(spec: SweepSpec) -> dict[str, Any]:
    base = {"spec": spec.to_dict()}
    if spec.search_algorithm == "grid":
        return {**base, "point": tune.grid_search([p.to_dict() for p in spec.points()])}
    o = spec.optuna
    return {**base, "placement": tune.choice(list(o.placements)),
            "r1": tune.uniform(o.ratio_low, o.ratio_high), "r2": tune.uniform(o.ratio_low, o.ratio_high),
            "strategy": spec.grid.strategy[0]}


def _tune_config(spec: SweepSpec, stage: str) -> tune.TuneConfig:
    if stage == "search" and spec.search_algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.NSGAIISampler(population_size=spec.optuna.population_size, seed=spec.optuna.seed)
        names = list(spec.selection.objectives)
        algo = OptunaSearch(metric=names, mode=[spec.selection.objectives[n] for n in names], sampler=sampler)
        return tune.TuneConfig(search_alg=algo, num_samples=spec.optuna.num_samples,
                               max_concurrent_trials=spec.max_concurrent, reuse_actors=True,
                               trial_dirname_creator=_trial_dirname)
    return tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True,
                           trial_dirname_creator=_trial_dirname)


def _trial_dirname(trial) -> str:
    """``TRIALID_KEY`` instead of Tune's default, which flattens the whole config into the name."""
    point = trial.config.get("point")
    key = point.get("key") if isinstance(point, Mapping) else trial.config.get("placement", "trial")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key))
    return f"{trial.trial_id}_{safe}"[:120]


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
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
def _progress_to(progress: Progress | None) -> Iterator[None]:
    """Route the progress logger's records to ``progress`` (only there) while the sweep runs."""
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


def _fit(spec: SweepSpec, stage: str, run_dir: Path, trainable, param_space: dict[str, Any] | None,
         total: int, git_sha: str | None) -> None:
    res = spec.resources if stage == "search" else (spec.retrain_resources or spec.resources)
    wrapped = tune.with_resources(trainable, {"cpu": res.cpu, "gpu": res.gpu})
    storage = run_dir / "tune"
    path = storage / stage
    callback = _TableCallback(spec, stage, run_dir / TABLE, git_sha, total)
    run_config = tune.RunConfig(
        name=stage, storage_path=str(storage), verbose=0,
        callbacks=[callback, JsonLoggerCallback(), CSVLoggerCallback()],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    with _quiet_tune():
        if tune.Tuner.can_restore(str(path)):
            _progress_log.info("[%s] resuming the Tune experiment in %s", stage, path)
            # the run config, callbacks included, comes back from the experiment's tuner.pkl
            tuner = tune.Tuner.restore(str(path), trainable=wrapped, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(wrapped, param_space=param_space, tune_config=_tune_config(spec, stage),
                               run_config=run_config)
        grid = tuner.fit()
    # final reconciliation: every trial's last state lands in the table exactly once
    meta_fn = _search_meta if stage == "search" else _retrain_meta
    rows = []
    for result in grid:
        key, meta = meta_fn(spec, result.config)
        err = None
        if result.error is not None:
            text = str(result.error).strip()
            err = text.splitlines()[-1] if text else type(result.error).__name__
        rows.append(_row(spec, stage, key, meta, dict(result.metrics or {}), err, git_sha))
    _upsert_unless_finished(run_dir / TABLE, rows)


def _select(spec: SweepSpec, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Retrain points from the non-dominated finished search rows, one per distinct network.

    Rows that build the same discrete network are retrained once (the first by the front's
    order): the same cells at the same positions and widths, whatever the cell types are
    called (a search from scratch tells cell types apart only by which stages share them, so
    ``robust-first`` finds the ``arnas`` network with the names swapped). The same genotype at
    other stages or widths is another network. Rows whose network cannot be built from the
    table fall back to the genotype JSON."""
    search = table[table["stage"] == "search"]
    # the network's structure where it can be built, else the genotype JSON (canonicalised)
    arch = [_structure(spec, row) or _canonical_genotype(row["genotype"]) for _, row in search.iterrows()]
    front = select_front(search.assign(architecture=arch), spec.selection.objectives,
                         top_k=spec.selection.top_k, dedup_on=("architecture",))
    points = []
    for _, row in front.iterrows():
        placement = _placement(row)
        points.append({
            "key": f"retrain_{row['trial_id']}", "source": row["trial_id"],
            "genotype": Genotype.from_json(row["genotype"]).to_json(), "placement": placement,
            "layout_name": row["placement"], "channel_ratios": json.loads(row["channel_ratios"]),
            "strategy": row["strategy"], "seed": int(row["seed"]),
        })
    return points


def _placement(row: pd.Series) -> list[str]:
    """The cell type of every stage of a search row (preset name or the trial's config)."""
    if row["placement"] in _presets():
        return list(Layout.from_spec(row["placement"], json.loads(row["channel_ratios"])).placement)
    cfg = json.loads(row["config"]) if isinstance(row["config"], str) else {}
    return list(_as_tuple(cfg.get("placement")))


def _canonical_genotype(value: Any) -> str | None:
    try:
        return "genotype:" + json.dumps(Genotype.from_json(value).to_dict(), sort_keys=True)
    except (ValueError, TypeError):
        return None


def _structure(spec: SweepSpec, row: pd.Series) -> str | None:
    """The retrained network of a search row as JSON: per cell position, the cell's genotype,
    width and reduction flag (None where the row does not say enough)."""
    try:
        ratios = tuple(json.loads(row["channel_ratios"]))
        placement = tuple(_placement(row))
        cfg = spec.retrain_config(placement, ratios, 0)
        plan = Layout.from_lists(placement, ratios).plan(cfg.cells, cfg.channels)
        cells = json.loads(Genotype.from_json(row["genotype"]).to_json())["cells"]
        return json.dumps([[cells[p.cell_type], p.width, p.reduction] for p in plan], sort_keys=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _presets() -> set[str]:
    from arnas_ray.space.layout import LAYOUT_PRESETS

    return set(LAYOUT_PRESETS)


def _as_tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _finish(spec: SweepSpec, run_dir: Path, selected: list[str], t0: float) -> tuple[pd.DataFrame, dict]:
    table_path = run_dir / TABLE
    table = read_table(table_path)
    ranked = []
    for stage, objectives in (("search", spec.selection.objectives), ("retrain", RETRAIN_OBJECTIVES)):
        part = table[table["stage"] == stage]
        if not part.empty:
            ranked.append(rank_rows(part, objectives))
    if ranked:
        table = pd.concat(ranked, ignore_index=True)
        upsert_rows(table_path, table)
        table = read_table(table_path)
    summary = {
        "sweep_id": spec.name,
        "hypervolume": {
            "search": stage_hypervolume(table, "search", spec.selection.objectives),
            "retrain": stage_hypervolume(table, "retrain", RETRAIN_OBJECTIVES),
        },
        "hypervolume_reference": "origin (0, 0): both objectives are accuracies in [0, 1], maximised",
        "selected": selected,
        "trials": {s: int((table["stage"] == s).sum()) for s in ("search", "retrain")},
        "failed": int((table["status"] == "failed").sum()),
        "wall_s": time.time() - t0,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return table, summary


def _ensure_ray(address: str | None) -> bool:
    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": always a new instance; plain None would join whatever cluster `ray start`
        # last recorded in /tmp/ray/ray_current_cluster (RAY_ADDRESS, set by Ray Jobs, still wins)
        address = "local"
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False}
    if address in (None, "local"):
        kwargs["dashboard_host"] = "127.0.0.1"
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
    return True


def run_sweep(spec: SweepSpec, *, address: str | None = None, storage: str | None = None,
              progress: Progress | None = None, report: bool = True) -> RunResult:
    """Run (or continue) the whole pipeline of ``spec``; returns the run directory and table.

    Args:
        spec: the validated sweep.
        address: Ray address (``None``: the current Ray of this process, else ``$RAY_ADDRESS``,
            else a new local instance; ``"auto"``; or ``"ray://HOST:10001"``).
        storage: parent directory of the run directory (default ``spec.storage``).
        progress: called with one-line progress messages (the records of
            :data:`PROGRESS_LOGGER`); ``None`` leaves them to the logging configuration.
        report: write ``report.html`` and ``pareto.png`` at the end.

    Raises:
        LockError: another live driver holds the run directory.
        SpecError: the run directory belongs to a different spec.
    """
    t0 = time.time()
    run_dir = run_dir_for(spec, storage)
    with RunLock(run_dir), _progress_to(progress):
        _prepare_run_dir(spec, run_dir)
        own_ray = _ensure_ray(address)
        try:
            sha = _git_sha()
            n_search = len(spec.points()) if spec.search_algorithm == "grid" else spec.optuna.num_samples
            _fit(spec, "search", run_dir, search_trainable, _search_param_space(spec), n_search, sha)
            table = read_table(run_dir / TABLE)
            selected: list[str] = []
            if not spec.skip_retrain:
                points = _select(spec, table)
                selected = [p["source"] for p in points]
                _progress_log.info("[select] %d non-dominated genotype(s) to retrain: %s", len(points), selected)
                if points:
                    space = {"spec": spec.to_dict(), "point": tune.grid_search(points)}
                    _fit(spec, "retrain", run_dir, retrain_trainable, space, len(points), sha)
            table, summary = _finish(spec, run_dir, selected, t0)
            if report:
                write_report(run_dir)
            return RunResult(run_dir, table, summary, time.time() - t0)
        finally:
            if own_ray:
                ray.shutdown()


def resume_sweep(run_dir: str | Path, *, address: str | None = None, progress: Progress | None = None) -> RunResult:
    """Continue the sweep in ``run_dir`` (its ``spec.yaml``) after a driver died."""
    run_dir = Path(run_dir).absolute()
    spec_path = run_dir / "spec.yaml"
    if not spec_path.is_file():
        raise SpecError("run_dir", f"{str(run_dir)!r} is not a run directory (no spec.yaml)")
    spec = load_spec(spec_path)
    if run_dir_for(spec, str(run_dir.parent)) != run_dir:
        raise SpecError("run_dir", f"{str(run_dir)!r} does not match the spec name {spec.name!r}")
    return run_sweep(spec, address=address, storage=str(run_dir.parent), progress=progress)
