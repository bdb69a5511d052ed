"""Run summaries and the self-contained HTML report of a sweep run directory.

A run directory holds ``spec.yaml`` (the sweep spec), ``results.parquet`` (the results table,
search and retrain rows) and optionally ``summary.json`` (e.g. ``{"hypervolume": {"search":
0.41, "retrain": 0.37}}``). :func:`write_report` writes ``RUN_DIR/report.html`` and
``RUN_DIR/pareto.png``; the HTML embeds every image as a base64 ``data:`` URI and refers to
nothing outside itself (no scripts, stylesheets, fonts or links), so it can be mailed or
archived as one file.

The other public functions serve notebooks and the CLI: :func:`load_run`,
:func:`summarize_run`, :func:`front_table`, :func:`ablation_table`,
:func:`params_vs_robustness`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arnas_ray._atomic import atomic_write_bytes, atomic_write_text
from arnas_ray.results.cells import render_cell
from arnas_ray.results.hypervolume import hypervolume
from arnas_ray.results.pareto import rank_rows, select_front
from arnas_ray.results.plots import render_pareto
from arnas_ray.results.table import RESULTS_FILE, STAGES, read_table

__all__ = [
    "DEFAULT_OBJECTIVES",
    "PLOT_AXES",
    "REPORT_FILE",
    "Run",
    "ablation_table",
    "front_table",
    "load_run",
    "params_vs_robustness",
    "stage_hypervolume",
    "summarize_run",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PARETO_FILE = "pareto.png"
SEARCH_PARETO_FILE = "pareto_search.png"
SPEC_FILE = "spec.yaml"
SUMMARY_FILE = "summary.json"

DEFAULT_OBJECTIVES: dict[str, dict[str, str]] = {
    "search": {"nat_acc": "max", "pgd_acc": "max"},
    "retrain": {"nat_acc": "max", "pgd20_acc": "max"},
}
"""Objectives per stage: supernet natural vs PGD accuracy; retrained natural vs PGD-20."""

PLOT_AXES: dict[str, tuple[str, str]] = {"search": ("nat_acc", "pgd_acc"),
                                         "retrain": ("nat_acc", "pgd20_acc")}

_METRICS = ("nat_acc", "pgd_acc", "fgsm_acc", "pgd20_acc", "pgd100_acc", "aa_acc")
_TRIAL_COLUMNS = ("trial_id", "status", "dataset", "placement", "channel_ratios", "strategy",
                  "order", "seed", "params", "flops", *_METRICS, "epochs", "wall_s",
                  "pareto_rank", "error")
_COST_COLUMNS = ("stage", "trial_id", "status", "device", "node", "wall_s", "started_at",
                 "finished_at")


@dataclass(frozen=True)
class Run:
    """One run directory, loaded.

    Attributes:
        run_dir: the directory.
        spec: the parsed sweep spec (``{}`` when PyYAML is missing or the file is absent).
        spec_text: ``spec.yaml`` verbatim (``""`` when absent).
        table: the results table (:mod:`arnas_ray.results.table` schema).
        summary: ``summary.json`` (``{}`` when absent).
    """

    run_dir: Path
    spec: dict[str, Any]
    spec_text: str
    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def stage(self, stage: str) -> pd.DataFrame:
        """Rows of one stage (``"search"`` or ``"retrain"``)."""
        return _stage_rows(self.table, stage)


def _parse_spec(text: str, path: Path) -> dict[str, Any]:
    try:
        import yaml  # optional here: PyYAML is a dependency of the sweep layer
    except ImportError:  # pragma: no cover - PyYAML is installed with arnas-ray
        logger.warning("PyYAML is not installed; %s is shown but not parsed", path)
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        logger.warning("cannot parse %s (%s); it is shown verbatim only", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Load the spec, the results table and the summary of a run directory.

    Raises:
        FileNotFoundError: the directory or its ``results.parquet`` is missing.
        CorruptTableError: ``results.parquet`` is unreadable (the message says how to recover).
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist")
    spec_path = root / SPEC_FILE
    spec_text = spec_path.read_text(encoding="utf-8") if spec_path.is_file() else ""
    spec = _parse_spec(spec_text, spec_path) if spec_text else {}
    summary: dict[str, Any] = {}
    summary_path = root / SUMMARY_FILE
    if summary_path.is_file():
        try:
            loaded = json.loads(summary_path.read_text(encoding="utf-8"))
            summary = loaded if isinstance(loaded, dict) else {}
        except ValueError as exc:
            logger.warning("ignoring unreadable %s (%s)", summary_path, exc)
    table = read_table(root / RESULTS_FILE)
    return Run(run_dir=root, spec=spec, spec_text=spec_text, table=table, summary=summary)


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
        obj = DEFAULT_OBJECTIVES[stage]
        front = select_front(rows, obj) if len(rows) else rows
        hv = stored_hv.get(stage) if isinstance(stored_hv, dict) else None
        hv = float(hv) if isinstance(hv, (int, float)) else stage_hypervolume(df, stage)
        stages[stage] = {
            "trials": int(len(rows)),
            "status": {str(k): int(v) for k, v in rows["status"].value_counts().items()},
            "objectives": dict(obj),
            "hypervolume": _jsonable(hv),
            "front": [str(t) for t in front["trial_id"]],
            "best": (_row_dict(front.iloc[0], ("trial_id", "placement", "channel_ratios",
                                                "strategy", "seed", "params", "flops",
                                                *_METRICS))
                     if len(front) else None),
            "wall_s": float(np.nansum(pd.to_numeric(rows["wall_s"], errors="coerce"))),
        }
    devices = df["device"].astype(object).where(df["device"].notna(), "unknown")
    sweep_ids = sorted({str(s) for s in df["sweep_id"].dropna()})
    return {
        "run_dir": str(run.run_dir),
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


# --------------------------------------------------------------------------------------------
# HTML rendering.

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222;
max-width:1400px}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.s{text-align:left}tr.front td{background:#fff6d5}
tr.failed td{color:#a00}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
img{max-width:100%}.cells{display:flex;flex-wrap:wrap;gap:1em}
.cells figure{margin:0}figcaption{font-size:.85em;color:#555}
"""


def _fmt(value: Any, column: str) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (float, np.floating)):
        if column.endswith("_acc"):
            return f"{value:.4f}"
        return f"{value:.1f}" if column == "wall_s" else f"{value:.6g}"
    if isinstance(value, (int, np.integer)) and column in ("params", "flops"):
        return f"{int(value):,}"
    if isinstance(value, (pd.Timestamp, _dt.datetime)):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _html_table(df: pd.DataFrame, columns: Sequence[str], *, mark_front: bool = False) -> str:
    cols = [c for c in columns if c in df.columns]
    if df.empty:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, row in df.iterrows():
        classes = []
        if mark_front and row.get("pareto_rank") is not pd.NA and row.get("pareto_rank") == 0:
            classes.append("front")
        if row.get("status") == "failed":
            classes.append("failed")
        cls = f' class="{" ".join(classes)}"' if classes else ""
        cells = []
        for c in cols:
            value = row[c]
            text = html.escape(_fmt(value, c))
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool)
            cells.append(f"<td>{text}</td>" if numeric else f'<td class="s">{text}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body)
            + "\n</tbody></table>")


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}">'


def _winning_genotypes(df: pd.DataFrame, max_genotypes: int) -> tuple[str, pd.DataFrame]:
    """Front rows with a genotype: retrain stage if it has any, else the search stage."""
    for stage in ("retrain", "search"):
        rows = _stage_rows(df, stage)
        rows = rows[rows["genotype"].notna()]
        front = select_front(rows, DEFAULT_OBJECTIVES[stage], top_k=max_genotypes)
        if len(front):
            return stage, front
    return "", df.iloc[:0]


def _cells_section(df: pd.DataFrame, max_genotypes: int, cell_backend: str) -> str:
    stage, winners = _winning_genotypes(df, max_genotypes)
    if winners.empty:
        return "<p><em>no finished trial with a genotype yet</em></p>"
    x, y = PLOT_AXES[stage]
    parts = [f"<p>Non-dominated {html.escape(stage)} genotypes ({html.escape(x)} vs "
             f"{html.escape(y)}), at most {max_genotypes}.</p>"]
    for _, row in winners.iterrows():
        trial = str(row["trial_id"])
        scores = ", ".join(f"{c}={_fmt(row[c], c)}" for c in (x, y, "params") if c in row.index)
        parts.append(f"<h3>{html.escape(trial)}</h3><p>{html.escape(scores)}</p>")
        try:
            genotype = json.loads(str(row["genotype"]))
            cells = genotype.get("cells", {}) if isinstance(genotype, dict) else {}
            figures = []
            for cell_type in cells:
                png = render_cell(genotype, cell_type, "png", backend=cell_backend)
                figures.append(f"<figure>{_img(png, f'{trial} {cell_type} cell')}"
                               f"<figcaption>{html.escape(str(cell_type))}</figcaption></figure>")
            parts.append(f'<div class="cells">{"".join(figures)}</div>')
        except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
            logger.warning("cannot draw the cells of trial %s: %s", trial, exc)
            parts.append(f"<p><em>cannot draw this genotype: {html.escape(str(exc))}</em></p>")
        parts.append(f"<details><summary>genotype JSON</summary><pre>"
                     f"{html.escape(str(row['genotype']))}</pre></details>")
    return "\n".join(parts)


def _cost_section(df: pd.DataFrame) -> str:
    wall = pd.to_numeric(df["wall_s"], errors="coerce").astype("float64")
    frame = df.assign(wall_s=wall, device=df["device"].astype(object).where(
        df["device"].notna(), "unknown"), node=df["node"].astype(object).where(
        df["node"].notna(), "unknown"))
    totals = (frame.groupby(["stage", "device", "node"], sort=True)
              .agg(trials=("trial_id", "size"), wall_s=("wall_s", "sum"))
              .reset_index())
    per_stage = frame.groupby("stage", sort=True)["wall_s"].sum()
    lines = ", ".join(f"{html.escape(str(s))}: {v:.1f} s" for s, v in per_stage.items())
    return (f"<p>Total wall time: <b>{np.nansum(wall):.1f} s</b> ({lines}).</p>"
            + _html_table(totals, ("stage", "device", "node", "trials", "wall_s"))
            + "<details><summary>per trial</summary>"
            + _html_table(df, _COST_COLUMNS) + "</details>")


def write_report(run_dir: str | os.PathLike[str], *, max_genotypes: int = 3,
                 cell_backend: str = "auto") -> Path:
    """Write ``RUN_DIR/report.html`` (self-contained) and ``RUN_DIR/pareto.png``.

    The report shows the spec verbatim, the search and retrain tables (every row; front rows
    highlighted), the Pareto plots (retrain: natural vs PGD-20 accuracy; search: natural vs
    supernet PGD accuracy), the hypervolume per stage, drawings of every cell type of the
    winning genotypes and the cost (wall seconds per trial, device and node, totals).
    ``pareto.png`` shows the retrain stage, or the search stage while no retrain row has
    finished; ``pareto_search.png`` always shows the search stage.

    Args:
        run_dir: the run directory.
        max_genotypes: at most this many winning genotypes are drawn.
        cell_backend: see :func:`~.cells.draw_cell`.

    Returns:
        The path of ``report.html``.

    Raises:
        FileNotFoundError: no run directory or no ``results.parquet``.
        CorruptTableError: ``results.parquet`` is unreadable.
    """
    run = load_run(run_dir)
    root = run.run_dir
    summary = summarize_run(run)
    df = run.table
    # Show ranks per stage even when the driver has not stored them yet.
    ranked = df.copy()
    for stage in STAGES:
        stage_mask = (df["stage"] == stage).to_numpy()
        if stage_mask.any():
            part = rank_rows(df[stage_mask], DEFAULT_OBJECTIVES[stage])
            stored = df.loc[stage_mask, "pareto_rank"]
            ranked.loc[stage_mask, "pareto_rank"] = stored.where(stored.notna(),
                                                                 part["pareto_rank"]).to_numpy()
    plots: dict[str, bytes] = {}
    for stage in STAGES:
        x, y = PLOT_AXES[stage]
        plots[stage] = render_pareto(_stage_rows(df, stage), x, y,
                                     title=f"{stage} stage: {x} vs {y}")
    has_retrain = summary["stages"]["retrain"]["status"].get("finished", 0) > 0
    atomic_write_bytes(root / PARETO_FILE, plots["retrain" if has_retrain else "search"])
    atomic_write_bytes(root / SEARCH_PARETO_FILE, plots["search"])

    title = f"arnas-ray report: {summary['sweep_id'] or root.name}"
    sections = [f"<h1>{html.escape(str(title))}</h1>",
                f"<p>Run directory <code>{html.escape(str(root))}</code>; "
                f"{summary['trials']} rows; generated "
                f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>"]
    hv_rows = []
    for stage in STAGES:
        info = summary["stages"][stage]
        hv = info["hypervolume"]
        obj = " vs ".join(f"{k} ({v})" for k, v in info["objectives"].items())
        status = ", ".join(f"{k}: {v}" for k, v in sorted(info["status"].items()))
        hv_rows.append(f"<tr><td class=\"s\">{stage}</td><td class=\"s\">{html.escape(obj)}</td>"
                       f"<td>{'' if hv is None else f'{hv:.6f}'}</td>"
                       f"<td class=\"s\">{html.escape(status)}</td>"
                       f"<td>{len(info['front'])}</td></tr>")
    sections.append("<h2>Summary</h2><table><thead><tr><th>stage</th><th>objectives</th>"
                    "<th>hypervolume (ref. origin)</th><th>trials</th><th>front size</th>"
                    "</tr></thead><tbody>" + "".join(hv_rows) + "</tbody></table>")
    sections.append("<h2>Pareto fronts</h2>")
    for stage in ("retrain", "search"):
        x, y = PLOT_AXES[stage]
        sections.append(f"<h3>{stage}: {html.escape(x)} vs {html.escape(y)}</h3>"
                        + _img(plots[stage], f"{stage} Pareto plot"))
    sections.append("<h2>Winning cells</h2>" + _cells_section(df, max_genotypes, cell_backend))
    for stage in STAGES:
        rows = _stage_rows(ranked, stage)
        metric_cols = [m for m in _METRICS if rows[m].notna().any()] or list(
            DEFAULT_OBJECTIVES[stage])
        cols = [c for c in _TRIAL_COLUMNS if c not in _METRICS or c in metric_cols]
        sections.append(f"<h2>{stage.capitalize()} trials ({len(rows)})</h2>"
                        + _html_table(rows, cols, mark_front=True))
    sections.append("<h2>Cost</h2>" + _cost_section(df))
    spec_body = html.escape(run.spec_text) if run.spec_text else "(no spec.yaml)"
    sections.append(f"<h2>Sweep spec</h2><pre>{spec_body}</pre>")
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(str(title))}</title><style>{_CSS}</style></head>"
                "<body>\n" + "\n".join(sections) + "\n</body></html>\n")
    return atomic_write_text(root / REPORT_FILE, document)
