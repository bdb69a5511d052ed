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
from their last checkpoint, errored ones are retried.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune

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

__all__ = ["RunResult", "resume_sweep", "run_dir_for", "run_sweep"]

logger = logging.getLogger(__name__)
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


class _TableCallback(tune.Callback):
    """Writes a trial's row when it finishes or fails (so a dead driver loses nothing) and
    prints progress: trials running / pending / done, epochs, and an ETA."""

    def __init__(self, spec: SweepSpec, stage: str, table: Path, git_sha: str | None, total: int,
                 progress: Progress | None):
        self.spec, self.stage, self.table, self.git_sha = spec, stage, table, git_sha
        self.total, self.progress = total, progress
        self.t0 = time.time()
        self.done = 0
        self.meta = _search_meta if stage == "search" else _retrain_meta

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

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
        epochs = self.spec.search.epochs if self.stage == "search" else self.spec.retrain.epochs
        parts = [f"epoch {result.get('epoch', '?')}/{epochs}"]
        for name in ("nat_acc", "pgd_acc", "val_nat_acc", "val_pgd_acc", "pgd20_acc", "gamma_mean"):
            if isinstance(result.get(name), (int, float)):
                parts.append(f"{name} {result[name]:.3f}")
        self._say(f"{self._counts(trials)} | {key}: " + ", ".join(parts))

    def _write(self, trial, error: str | None) -> None:
        key, meta = self.meta(self.spec, trial.config)
        metrics = dict(trial.last_result or {})
        upsert_rows(self.table, [_row(self.spec, self.stage, key, meta, metrics, error, self.git_sha)])

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
                               max_concurrent_trials=spec.max_concurrent, reuse_actors=True)
    return tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True)


def _fit(spec: SweepSpec, stage: str, run_dir: Path, trainable, param_space: dict[str, Any] | None,
         total: int, git_sha: str | None, progress: Progress | None) -> None:
    res = spec.resources if stage == "search" else (spec.retrain_resources or spec.resources)
    wrapped = tune.with_resources(trainable, {"cpu": res.cpu, "gpu": res.gpu})
    storage = run_dir / "tune"
    path = storage / stage
    callback = _TableCallback(spec, stage, run_dir / TABLE, git_sha, total, progress)
    run_config = tune.RunConfig(
        name=stage, storage_path=str(storage), verbose=0, callbacks=[callback],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    if tune.Tuner.can_restore(str(path)):
        if progress:
            progress(f"[{stage}] resuming the Tune experiment in {path}")
        tuner = tune.Tuner.restore(str(path), trainable=wrapped, resume_unfinished=True, resume_errored=True)
        # the callbacks are not part of the saved experiment state: attach them again
        tuner._local_tuner._run_config.callbacks = [callback]  # noqa: SLF001
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
    if rows:
        upsert_rows(run_dir / TABLE, rows)


def _select(spec: SweepSpec, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Retrain points from the non-dominated finished search rows (identical genotypes once)."""
    search = table[table["stage"] == "search"]
    front = select_front(search, spec.selection.objectives, top_k=spec.selection.top_k)
    points = []
    for _, row in front.iterrows():
        layout = Layout.from_spec(row["placement"], json.loads(row["channel_ratios"])) if \
            row["placement"] in _presets() else None
        cfg = json.loads(row["config"]) if isinstance(row["config"], str) else {}
        placement = list(layout.placement) if layout is not None else list(_as_tuple(cfg.get("placement")))
        points.append({
            "key": f"retrain_{row['trial_id']}", "source": row["trial_id"],
            "genotype": Genotype.from_json(row["genotype"]).to_json(), "placement": placement,
            "layout_name": row["placement"], "channel_ratios": json.loads(row["channel_ratios"]),
            "strategy": row["strategy"], "seed": int(row["seed"]),
        })
    return points


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
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False}
    if address is None:
        kwargs["dashboard_host"] = "127.0.0.1"
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
    return True


def run_sweep(spec: SweepSpec, *, address: str | None = None, storage: str | None = None,
              progress: Progress | None = None, report: bool = True) -> RunResult:
    """Run (or continue) the whole pipeline of ``spec``; returns the run directory and table.

    Args:
        spec: the validated sweep.
        address: Ray address (``None``: the current or a new local instance; ``"auto"``; or
            ``"ray://HOST:10001"``).
        storage: parent directory of the run directory (default ``spec.storage``).
        progress: called with one-line progress messages.
        report: write ``report.html`` and ``pareto.png`` at the end.

    Raises:
        LockError: another live driver holds the run directory.
        SpecError: the run directory belongs to a different spec.
    """
    t0 = time.time()
    run_dir = run_dir_for(spec, storage)
    with RunLock(run_dir):
        _prepare_run_dir(spec, run_dir)
        own_ray = _ensure_ray(address)
        try:
            sha = _git_sha()
            n_search = len(spec.points()) if spec.search_algorithm == "grid" else spec.optuna.num_samples
            _fit(spec, "search", run_dir, search_trainable, _search_param_space(spec), n_search, sha, progress)
            table = read_table(run_dir / TABLE)
            selected: list[str] = []
            if not spec.skip_retrain:
                points = _select(spec, table)
                selected = [p["source"] for p in points]
                if progress:
                    progress(f"[select] {len(points)} non-dominated genotype(s) to retrain: {selected}")
                if points:
                    space = {"spec": spec.to_dict(), "point": tune.grid_search(points)}
                    _fit(spec, "retrain", run_dir, retrain_trainable, space, len(points), sha, progress)
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
