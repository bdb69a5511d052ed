"""A sweep run, loaded for notebooks, the CLI and the report: spec, table, summary, fronts.

:func:`load_run` reads a run directory (a local path or a storage URI such as
``s3://bucket/runs/NAME?endpoint_override=...``; see :mod:`arnas_ray.results.rundir`). The
other functions work on the loaded table: :func:`front_table`, :func:`stage_hypervolume`,
:func:`summarize_run`, :func:`ablation_table`, :func:`params_vs_robustness`.

Objectives per stage come from the run's ``summary.json`` (what the driver ranked on), else
from its spec (``selection.objectives``; ``evaluation.objectives`` or natural accuracy and the
strongest evaluated attack), else :data:`DEFAULT_OBJECTIVES`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from arnas_ray._metrics import ACCURACY_COLUMNS, EVAL_ATTACKS, SEARCH_OBJECTIVES, retrain_objectives
from arnas_ray.results.hypervolume import hypervolume
from arnas_ray.results.pareto import rank_rows, select_front
from arnas_ray.results.rundir import SPEC, SUMMARY, RunDir
from arnas_ray.results.table import STAGES

__all__ = [
    "DEFAULT_OBJECTIVES",
    "Run",
    "ablation_table",
    "front_table",
    "load_run",
    "params_vs_robustness",
    "run_objectives",
    "search_steps",
    "stage_hypervolume",
    "summarize_run",
]

logger = logging.getLogger(__name__)

DEFAULT_OBJECTIVES: dict[str, dict[str, str]] = {
    "search": dict(SEARCH_OBJECTIVES),
    "retrain": {"nat_acc": "max", "pgd20_acc": "max"},
}
"""Objectives per stage when a run does not say: supernet natural vs PGD accuracy; retrained
natural vs PGD-20 accuracy."""



@dataclass(frozen=True)
class Run:
    """One run directory, loaded.

    Attributes:
        run_dir: the run directory (:class:`~arnas_ray.results.rundir.RunDir`; ``str()`` of
            it is its path or URI).
        spec: the parsed sweep spec (``{}`` when the file is absent or unreadable).
        spec_text: ``spec.yaml`` verbatim (``""`` when absent).
        table: the results table (:mod:`arnas_ray.results.table` schema).
        summary: ``summary.json`` (``{}`` when absent).
    """

    run_dir: RunDir
    spec: dict[str, Any]
    spec_text: str
    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def stage(self, stage: str) -> pd.DataFrame:
        """Rows of one stage (``"search"`` or ``"retrain"``)."""
        return _stage_rows(self.table, stage)

    def objectives(self, stage: str) -> dict[str, str]:
        """The objectives the stage is ranked on (see the module docstring)."""
        return run_objectives(self.spec, self.summary)[stage]


def _parse_spec(text: str, shown: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        logger.warning("cannot parse %s (%s); it is shown verbatim only", shown, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _objective_map(value: Any) -> dict[str, str] | None:
    if isinstance(value, Mapping) and value and all(
            isinstance(k, str) and v in ("max", "min") for k, v in value.items()):
        return dict(value)
    return None


def run_objectives(spec: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Objectives per stage: ``summary.json``'s, else the spec's, else the defaults."""
    stored = summary.get("objectives") if isinstance(summary, Mapping) else None
    stored = stored if isinstance(stored, Mapping) else {}
    selection: Mapping[str, Any] = spec["selection"] if isinstance(spec.get("selection"), Mapping) else {}
    evaluation: Mapping[str, Any] = spec["evaluation"] if isinstance(spec.get("evaluation"), Mapping) else {}
    attacks = evaluation.get("attacks")
    from_attacks = (retrain_objectives(a for a in attacks if a in EVAL_ATTACKS)
                    if isinstance(attacks, list) else None)
    return {
        "search": (_objective_map(stored.get("search")) or _objective_map(selection.get("objectives"))
                   or dict(DEFAULT_OBJECTIVES["search"])),
        "retrain": (_objective_map(stored.get("retrain")) or _objective_map(evaluation.get("objectives"))
                    or from_attacks
                    or dict(DEFAULT_OBJECTIVES["retrain"])),
    }


def load_run(run_dir: str | os.PathLike[str] | RunDir) -> Run:
    """Load the spec, the results table and the summary of a run directory.

    Args:
        run_dir: a local path, a storage URI (``s3://...``, ``gs://...``) or a :class:`RunDir`.

    Raises:
        FileNotFoundError: the directory or its ``results.parquet`` is missing.
        CorruptTableError: ``results.parquet`` is unreadable (the message says how to recover).
        StorageError: the storage cannot be reached.
    """
    root = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"run directory {root.uri} does not exist")
    spec_text = root.read_text(SPEC) if root.exists(SPEC) else ""
    spec = _parse_spec(spec_text, root.show(SPEC)) if spec_text else {}
    summary: dict[str, Any] = {}
    if root.exists(SUMMARY):
        try:
            loaded = json.loads(root.read_text(SUMMARY))
            summary = loaded if isinstance(loaded, dict) else {}
        except ValueError as exc:
            logger.warning("ignoring unreadable %s (%s)", root.show(SUMMARY), exc)
    try:
        table = root.read_table()
    except FileNotFoundError:
        raise FileNotFoundError(f"run directory {root.uri} has no results table yet") from None
    return Run(run_dir=root, spec=spec, spec_text=spec_text, table=table, summary=summary)


STEPS_FILE = "steps.jsonl"  #: per-step search records in a trial's checkpoint (search/loop.py)


def search_steps(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Trial key -> its per-step search records (gamma, entropy, ...; :mod:`arnas_ray._diagnostics`),
    read from the latest checkpoint of each search trial in ``tune/search``."""
    latest: dict[str, tuple[int, str]] = {}
    for name in run.run_dir.list("tune/search"):
        parts = name.split("/")
        if len(parts) != 5 or parts[4] != STEPS_FILE or not parts[3].startswith("checkpoint_"):
            continue
        trial, index = parts[2].split("_", 2)[-1], int(parts[3].removeprefix("checkpoint_") or 0)
        if trial not in latest or index > latest[trial][0]:
            latest[trial] = (index, name)
    out = {}
    for trial, (_, name) in latest.items():
        try:
            out[trial] = [json.loads(line) for line in run.run_dir.read_text(name).splitlines() if line.strip()]
        except (ValueError, FileNotFoundError) as exc:
            logger.warning("ignoring unreadable %s (%s)", run.run_dir.show(name), exc)
    return out


def _stage_rows(df: pd.DataFrame, stage: str | None) -> pd.DataFrame:
    if stage is None:
        return df
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return df[df["stage"] == stage]


def _objectives(stage: str, objectives: Mapping[str, str] | None) -> Mapping[str, str]:
    if objectives is not None:
        return objectives
    if stage not in DEFAULT_OBJECTIVES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return DEFAULT_OBJECTIVES[stage]


def front_table(df: pd.DataFrame, stage: str, objectives: Mapping[str, str] | None = None,
                top_k: int | None = None) -> pd.DataFrame:
    """Non-dominated finished rows of one stage (see :func:`~.pareto.select_front`).

    Args:
        df: a results table.
        stage: ``"search"`` or ``"retrain"``.
        objectives: column -> direction; defaults to :data:`DEFAULT_OBJECTIVES` of the stage.
        top_k: at most this many rows.

    Returns:
        The front, best first objective first, with ``pareto_rank`` 0.
    """
    return select_front(_stage_rows(df, stage), _objectives(stage, objectives), top_k=top_k)


def stage_hypervolume(df: pd.DataFrame, stage: str,
                      objectives: Mapping[str, str] | None = None,
                      reference: Sequence[float] | None = None) -> float | None:
    """Hypervolume of the finished rows of one stage, or None when it has none.

    The default reference is the origin (all default objectives are accuracies, maximised).
    """
    obj = _objectives(stage, objectives)
    rows = _stage_rows(df, stage)
    rows = rows[rows["status"] == "finished"]
    if rows.empty or any(c not in rows.columns for c in obj):
        return None
    values = np.stack([pd.to_numeric(rows[c], errors="coerce").astype("float64").to_numpy()
                       for c in obj], axis=1)
    values = values[~np.isnan(values).any(axis=1)]
    if len(values) == 0:
        return None
    return hypervolume(values, list(obj.values()), reference)


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, _dt.datetime)):
        return value.isoformat()
    return value


def _row_dict(row: pd.Series, columns: Sequence[str]) -> dict[str, Any]:
    return {c: _jsonable(row[c]) for c in columns if c in row.index}


def summarize_run(run_dir: str | os.PathLike[str] | Run) -> dict[str, Any]:
    """A JSON-serializable summary of a run, for the CLI and notebooks.

    Returns:
        ``{"run_dir", "sweep_id", "trials", "wall_s", "devices", "stages": {stage: {"trials",
        "status", "objectives", "hypervolume", "front", "best", "wall_s"}}}``. The
        hypervolume comes from ``summary.json`` when it has one for the stage, else it is
        computed (reference: the origin). ``best`` is the front row with the best first
        objective. ``sweep_id`` is a string, or a list when the table mixes several (empty
        when it has no rows).
    """
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    df = run.table
    stored_hv = run.summary.get("hypervolume", {}) if isinstance(run.summary, dict) else {}
    stages: dict[str, Any] = {}
    for stage in STAGES:
        rows = _stage_rows(df, stage)
        obj = run.objectives(stage)
        front = select_front(rows, obj) if len(rows) else rows
        hv = stored_hv.get(stage) if isinstance(stored_hv, dict) else None
        hv = float(hv) if isinstance(hv, (int, float)) else stage_hypervolume(df, stage, obj)
        stages[stage] = {
            "trials": int(len(rows)),
            "status": {str(k): int(v) for k, v in rows["status"].value_counts().items()},
            "objectives": dict(obj),
            "hypervolume": _jsonable(hv),
            "front": [str(t) for t in front["trial_id"]],
            "best": (_row_dict(front.iloc[0], ("trial_id", "placement", "channel_ratios",
                                                "strategy", "seed", "params", "flops",
                                                *ACCURACY_COLUMNS))
                     if len(front) else None),
            "wall_s": float(np.nansum(pd.to_numeric(rows["wall_s"], errors="coerce"))),
        }
    devices = df["device"].astype(object).where(df["device"].notna(), "unknown")
    sweep_ids = sorted({str(s) for s in df["sweep_id"].dropna()})
    return {
        "run_dir": run.run_dir.uri,
        "sweep_id": sweep_ids[0] if len(sweep_ids) == 1 else sweep_ids,
        "trials": int(len(df)),
        "wall_s": float(np.nansum(pd.to_numeric(df["wall_s"], errors="coerce"))),
        "devices": {str(k): int(v) for k, v in devices.value_counts().items()},
        "stages": stages,
    }


def ablation_table(df: pd.DataFrame, by: Sequence[str] = ("placement", "channel_ratios"),
                   metrics: Sequence[str] = ("nat_acc", "pgd20_acc"),
                   stage: str | None = "retrain") -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metrics`` for each ``by`` group.

    Only finished rows of ``stage`` count (``stage=None``: all stages).

    Returns:
        A frame indexed by ``by`` with columns ``(metric, "mean" | "std" | "n")``; ``std`` is
        the sample standard deviation (NaN for a single seed), ``n`` the number of rows with
        a value.

    Example:
        >>> df = pd.DataFrame({"stage": "retrain", "status": "finished", "placement": ["a", "a"],
        ...                    "channel_ratios": "[1, 2, 2]", "seed": [0, 1],
        ...                    "nat_acc": [0.8, 0.9], "pgd20_acc": [0.4, 0.5]})
        >>> round(float(ablation_table(df).loc[("a", "[1, 2, 2]"), ("nat_acc", "mean")]), 2)
        0.85
    """
    missing = [c for c in (*by, *metrics) if c not in df.columns]
    if missing:
        raise ValueError(f"unknown column(s) {missing}; columns are {list(df.columns)}")
    rows = _stage_rows(df, stage)
    if "status" in rows.columns:
        rows = rows[rows["status"] == "finished"]
    data = rows[list(by)].astype(object).where(rows[list(by)].notna(), "n/a")
    for m in metrics:
        data[m] = pd.to_numeric(rows[m], errors="coerce").astype("float64")
    grouped = data.groupby(list(by), sort=True)
    out = grouped[list(metrics)].agg(["mean", "std", "count"])
    out = out.rename(columns={"count": "n"}, level=1)
    return out


def params_vs_robustness(df: pd.DataFrame, stage: str | None = "retrain",
                         robust: str = "pgd20_acc") -> pd.DataFrame:
    """Parameters, MACs and accuracies of finished trials, with the params-robustness front.

    Returns:
        Columns ``trial_id, placement, channel_ratios, seed, params, flops, nat_acc, <robust>,
        robust_per_mparam, front`` sorted by ``params``; ``front`` is True for rows on the
        Pareto front of (``params`` min, ``robust`` max).
    """
    if robust not in df.columns:
        raise ValueError(f"unknown robust column {robust!r}; columns are {list(df.columns)}")
    rows = _stage_rows(df, stage)
    if "status" in rows.columns:
        rows = rows[rows["status"] == "finished"]
    cols = [c for c in ("trial_id", "placement", "channel_ratios", "seed", "params", "flops",
                        "nat_acc") if c in rows.columns]
    out = rows[cols + ([robust] if robust not in cols else [])].copy()
    params = pd.to_numeric(out["params"], errors="coerce").astype("float64")
    rob = pd.to_numeric(out[robust], errors="coerce").astype("float64")
    out["robust_per_mparam"] = rob / (params / 1e6)
    ranked = rank_rows(out.assign(status="finished", params=params, **{robust: rob}),
                       {"params": "min", robust: "max"}, per_stage=False)
    out["front"] = (ranked["pareto_rank"] == 0).fillna(False).astype(bool).to_numpy()
    return out.sort_values("params", kind="stable", na_position="last")


