"""``run_sweep``: search trials -> results table -> Pareto selection -> retrain trials -> report.

Everything lives in one run directory ``STORAGE/NAME`` (a local path or an object-store URI,
:mod:`arnas_ray.results.rundir`)::

    spec.yaml         the validated spec (a resume must agree on the fields defining the trials)
    results.parquet   one row per trial and stage (upserted by (stage, trial_id): never duplicated)
    tune/search/      Ray Tune experiment of the search stage (checkpoints: resume)
    tune/retrain/     Ray Tune experiment of the retrain stage
    summary.json      objectives, hypervolume, selection, failures, timings
    report.html, pareto.png, pareto_search.png
    lease.json        the live driver's lease (owner, host, heartbeat)

Re-running ``sweep run`` on an existing run directory, or ``sweep resume``, continues through
``Tuner.restore``: finished trials are not rerun, unfinished ones continue from their last
checkpoint, errored ones are retried. A row that is ``finished`` in the table is final.

A sweep is *ok* when no stage has more failed trials than ``max_failed_fraction`` allows and
every stage that ran has a finished trial; otherwise the table, summary and report are still
written and :attr:`RunResult.ok` is false with a one-line :attr:`RunResult.message` (the CLI
exits 3 with it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import ray
from ray import tune

from arnas_ray.errors import SpecError
from arnas_ray.results import rank_rows, stage_hypervolume, write_report
from arnas_ray.results.rundir import SPEC, SUMMARY, RunDir, redact_uri
from arnas_ray.results.table import ENDED
from arnas_ray.sweep.baselines import baseline_points, searched_vs_random_summary
from arnas_ray.sweep.faults import Faults
from arnas_ray.sweep.lease import Lease
from arnas_ray.sweep.search_space import (
    make_loggers,
    search_param_space,
    search_stop,
    search_tune_config,
)
from arnas_ray.sweep.selection import select_for_retrain
from arnas_ray.sweep.spec import SweepSpec, spec_from_yaml
from arnas_ray.sweep.stopping import StopRequests
from arnas_ray.sweep.trainables import retrain_trainable, search_trainable
from arnas_ray.sweep.tuning import (
    PROGRESS_LOGGER,
    TUNE_QUIET_ENV,
    Outcome,
    Progress,
    Stage,
    progress_to,
    say,
)

__all__ = ["PROGRESS_LOGGER", "RunResult", "TUNE_QUIET_ENV", "resume_sweep", "run_dir_for", "run_sweep"]

logger = logging.getLogger(__name__)
_RESUME_FREE = ("resources", "retrain_resources", "max_concurrent", "max_failures", "max_failed_fraction",
                "storage")


@dataclass
class RunResult:
    """What a sweep produced: its run directory, the table and the summary."""

    run_dir: RunDir
    table: pd.DataFrame
    summary: dict[str, Any]
    wall_s: float

    @property
    def ok(self) -> bool:
        """No stage failed more trials than the spec allows, and every stage finished one."""
        return bool(self.summary.get("ok", True))

    @property
    def message(self) -> str:
        """One line on what failed (``""`` when ok)."""
        return str(self.summary.get("message", ""))


def run_dir_for(spec: SweepSpec, storage: str | None = None, *,
                filesystem: pafs.FileSystem | None = None) -> RunDir:
    """The run directory ``STORAGE/NAME`` of ``spec`` (``storage`` overrides ``spec.storage``)."""
    return RunDir.for_sweep(storage or spec.storage, spec.name, filesystem=filesystem)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _prepare_run_dir(spec: SweepSpec, run_dir: RunDir) -> None:
    """Refuse a run directory of another sweep; (re)write ``spec.yaml`` (settings that do not
    define the trials, such as resources, may have changed)."""
    if run_dir.exists(SPEC):
        old = spec_from_yaml(run_dir.read_text(SPEC), run_dir.show(SPEC))
        diff = old.defining_diff(spec)
        if diff:
            name = diff[0]
            raise SpecError(name, (
                f"the run directory {run_dir.uri} holds a sweep with {name}={_lookup(old.to_dict(), name)!r}, "
                f"this spec has {_lookup(spec.to_dict(), name)!r}; a resume may change only "
                f"{', '.join(_RESUME_FREE)}. Change `name` or --storage to start another sweep"))
    run_dir.makedirs()
    run_dir.write_text(SPEC, dataclasses.replace(spec, storage=redact_uri(spec.storage)).to_yaml())


def _ensure_ray(address: str | None) -> bool:
    if ray.is_initialized():
        return False
    join = address is not None or bool(os.environ.get("RAY_ADDRESS"))
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": always a new instance; plain None would join whatever cluster `ray start`
        # last recorded in /tmp/ray/ray_current_cluster (RAY_ADDRESS, set by Ray Jobs, still wins)
        address = "local"
    # on a cluster (a Ray job, `--address auto`) the trials' output goes to the driver's log, so
    # `ray job logs` shows it; a local sweep keeps the console to its progress lines
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": join}
    if address in (None, "local"):
        kwargs["dashboard_host"] = "127.0.0.1"
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
    return True


def _check_address(address: str | None) -> None:
    if address is not None and address.startswith("ray://"):
        raise SpecError("address", (
            f"{address!r} is a Ray Client address, which sweeps do not support: the driver must run on "
            "the cluster, beside Tune's experiment state; submit the sweep as a Ray job instead: "
            "arnas-ray sweep submit SPEC --address http://HEAD:8265"))


def _search_stage(spec: SweepSpec, faults: Faults, callbacks: Sequence[Any]) -> Stage:
    space = search_param_space(spec)
    if faults:
        space["faults"] = faults.to_dict()
    return Stage("search", search_trainable, space, search_tune_config(spec), spec.num_trials(),
                 [*make_loggers(spec), *callbacks], search_stop(spec))


def _retrain_stage(spec: SweepSpec, points: list[dict[str, Any]], callbacks: Sequence[Any]) -> Stage:
    space = {"spec": spec.to_dict(), "point": tune.grid_search(points)}
    config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True)
    return Stage("retrain", retrain_trainable, space, config, len(points), [*make_loggers(spec), *callbacks])


def _run_stages(spec: SweepSpec, run_dir: RunDir, faults: Faults, callbacks: Sequence[Any],
                stop: StopRequests) -> dict[str, Any]:
    """Search, selection, retraining; returns what the summary says about them."""
    sha = _git_sha()
    search = stop.fit(spec, _search_stage(spec, faults, callbacks), run_dir, sha)
    notes: dict[str, Any] = {"selected": [], "stopped": stop.event.is_set(),
                             "budget": _budget_note(spec, search), "stage_wall_s": {"search": search.wall_s}}
    if notes["budget"]:
        say("[search] %s", notes["budget"])
    table = _read_table(run_dir)
    if spec.skip_retrain or stop.event.is_set():
        return notes
    points = select_for_retrain(spec, table)
    if not points:
        say("[select] no search trial finished: nothing to retrain")
        return notes
    notes["selected"] = [p["source"] for p in points]
    what = "distinct network(s)" if spec.selection.mode == "all" else "non-dominated genotype(s)"
    say("[select] %d %s to retrain: %s", len(points), what, notes["selected"])
    baselines = baseline_points(spec, table, points)
    if baselines:
        notes["baselines"] = [p["key"] for p in baselines]
        say("[baselines] %d baseline network(s) retrained alike: %s", len(baselines), notes["baselines"])
        points = points + baselines
    retrain = stop.fit(spec, _retrain_stage(spec, points, callbacks), run_dir, sha)
    notes["stopped"] = stop.event.is_set()
    notes["stage_wall_s"]["retrain"] = retrain.wall_s
    return notes


def _budget_note(spec: SweepSpec, outcome: Outcome) -> str:
    """What the time budget cut short, or ``""``."""
    if spec.budget.time_s is None or outcome.interrupted or outcome.wall_s < spec.budget.time_s:
        return ""
    counts = {s: list(outcome.statuses.values()).count(s) for s in ENDED}
    return (f"time budget of {spec.budget.time_s:g} s reached after {outcome.wall_s:.0f} s: {counts['finished']} "
            f"finished, {counts['stopped']} stopped, {counts['failed']} failed of {spec.num_trials()} trial(s); "
            "selection goes on with the finished ones")


def _read_table(run_dir: RunDir) -> pd.DataFrame:
    from arnas_ray.results import empty_table

    try:
        return run_dir.read_table()
    except FileNotFoundError:
        return empty_table()


def _verdict(spec: SweepSpec, table: pd.DataFrame, ran_retrain: bool, stopped: bool) -> tuple[bool, str]:
    """Whether the sweep is ok, and one line on what failed (or that it was stopped)."""
    if stopped:
        unfinished = int((table["status"] == "stopped").sum())
        return True, (f"stopped on request with {unfinished} trial(s) unfinished (checkpoints kept): "
                      "`arnas-ray sweep resume RUN_DIR` continues them")
    problems = []
    for stage in ("search", "retrain"):
        part = table[table["stage"] == stage]
        if part.empty:
            if stage == "search" or ran_retrain:
                problems.append(f"no {stage} trial ran")
            continue
        n, failed = len(part), int((part["status"] == "failed").sum())
        if not (part["status"] == "finished").any():
            problems.append(f"no {stage} trial finished ({failed} of {n} failed)")
        elif failed > spec.max_failed_fraction * n:
            problems.append(f"{failed} of {n} {stage} trials failed")
    return not problems, ("; ".join(problems) + ": see sweep status") if problems else ""


def _trial_epochs(spec: SweepSpec, table: pd.DataFrame) -> dict[str, int]:
    """Search epochs the trials ran, against what every trial's full run would take."""
    search = table[table["stage"] == "search"]
    used = int(pd.to_numeric(search["epochs"], errors="coerce").fillna(0).sum())
    return {"used": used, "planned": spec.num_trials() * (spec.stop.epochs or spec.search.epochs)}


def _finish(spec: SweepSpec, run_dir: RunDir, notes: dict[str, Any], t0: float) -> tuple[pd.DataFrame, dict]:
    table = _read_table(run_dir)
    objectives = {"search": dict(spec.selection.objectives), "retrain": spec.evaluation.retrain_objectives()}
    ranked = [rank_rows(table[table["stage"] == s], objectives[s]) for s in objectives
              if (table["stage"] == s).any()]
    if ranked:
        table = pd.concat(ranked, ignore_index=True)
        run_dir.write_table(table)
        table = run_dir.read_table()
    ok, message = _verdict(spec, table, ran_retrain=bool(notes["selected"]), stopped=notes["stopped"])
    summary = {
        "sweep_id": spec.name,
        "objectives": objectives,
        "hypervolume": {s: stage_hypervolume(table, s, objectives[s]) for s in objectives},
        "hypervolume_reference": "origin: every objective is an accuracy in [0, 1], maximised",
        "selected": notes["selected"],
        "stopped": notes["stopped"],
        "budget": notes["budget"],
        "trial_epochs": _trial_epochs(spec, table),
        "baselines": notes.get("baselines", []),
        "searched_vs_random": searched_vs_random_summary(table, objectives["retrain"]),
        "stage_wall_s": notes["stage_wall_s"],
        "trials": {s: int((table["stage"] == s).sum()) for s in objectives},
        "status": {s: {str(k): int(v) for k, v in table.loc[table["stage"] == s, "status"].value_counts().items()}
                   for s in objectives},
        "failed": int((table["status"] == "failed").sum()),
        "ok": ok,
        "message": message,
        "wall_s": time.time() - t0,
    }
    run_dir.write_text(SUMMARY, json.dumps(summary, indent=2))
    return table, summary


def _run(spec: SweepSpec, run_dir: RunDir, *, address: str | None, progress: Progress | None, report: bool,
         force: bool, lease_wait_s: float, callbacks: Sequence[Any]) -> RunResult:
    _check_address(address)
    t0 = time.time()
    faults = Faults.from_env()
    stop = StopRequests(run_dir)
    with Lease(run_dir, force=force, wait_s=lease_wait_s, on_beat=stop.poll), progress_to(progress), \
            stop.installed():
        _prepare_run_dir(spec, run_dir)
        own_ray = _ensure_ray(address)
        try:
            notes = _run_stages(spec, run_dir, faults, callbacks, stop)
            table, summary = _finish(spec, run_dir, notes, t0)
            if report and not table.empty:
                write_report(run_dir)
            return RunResult(run_dir, table, summary, time.time() - t0)
        finally:
            if own_ray:
                ray.shutdown()


def run_sweep(spec: SweepSpec, *, address: str | None = None, storage: str | None = None,
              filesystem: pafs.FileSystem | None = None, progress: Progress | None = None,
              report: bool = True, force: bool = False, lease_wait_s: float = 0.0,
              callbacks: Sequence[Any] = ()) -> RunResult:
    """Run (or continue) the whole pipeline of ``spec``; returns the run directory and table.

    Args:
        spec: the validated sweep.
        address: Ray address (``None``: the current Ray of this process, else ``$RAY_ADDRESS``,
            else a new local instance; ``"auto"``). Ray Client (``ray://``) is refused.
        storage: parent of the run directory, a path or URI (default ``spec.storage``).
        filesystem: a pyarrow file system ``storage`` is a path in (e.g. an fsspec one).
        progress: called with one-line progress messages (the records of
            :data:`PROGRESS_LOGGER`); ``None`` leaves them to the logging configuration.
        report: write ``report.html`` and ``pareto.png`` at the end.
        force: break a live-looking lease of another driver (after a warning).
        lease_wait_s: wait up to this long for another driver's lease to go stale.
        callbacks: extra Ray Tune callbacks for both stages (trackers, tests).

    Returns:
        The :class:`RunResult`; ``result.ok`` is false (with ``result.message``) when trials
        failed beyond ``spec.max_failed_fraction`` or a stage finished no trial.

    Raises:
        LockError: another live driver holds the run directory's lease.
        SpecError: the run directory belongs to a different spec (names the first differing
            field), or the address is a Ray Client one.
        StorageError: the storage cannot be reached.
    """
    run_dir = run_dir_for(spec, storage, filesystem=filesystem)
    return _run(spec, run_dir, address=address, progress=progress, report=report, force=force,
                lease_wait_s=lease_wait_s, callbacks=callbacks)


def resume_sweep(location: str | os.PathLike[str] | RunDir, *, spec: SweepSpec | None = None,
                 address: str | None = None, progress: Progress | None = None, force: bool = False,
                 lease_wait_s: float = 0.0, callbacks: Sequence[Any] = ()) -> RunResult:
    """Continue the sweep in a run directory (local path or URI) after its driver stopped.

    Args:
        location: the run directory.
        spec: a spec to continue with (default: the run directory's ``spec.yaml``); it must
            agree on every field that defines the trials, and may change resources,
            concurrency and failure handling.
        address, progress, force, lease_wait_s, callbacks: as for :func:`run_sweep`.
    """
    run_dir = location if isinstance(location, RunDir) else RunDir.open(location)
    if not run_dir.exists(SPEC):
        raise SpecError("run_dir", f"{run_dir.uri!r} is not a run directory (no {SPEC})")
    saved = spec_from_yaml(run_dir.read_text(SPEC), run_dir.show(SPEC))
    if saved.name != run_dir.name:
        raise SpecError("run_dir", f"{run_dir.uri!r} does not match the spec name {saved.name!r}")
    return _run(spec or saved, run_dir, address=address, progress=progress, report=True, force=force,
                lease_wait_s=lease_wait_s, callbacks=callbacks)
