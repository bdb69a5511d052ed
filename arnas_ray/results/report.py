"""The self-contained HTML report of a sweep run directory.

:func:`write_report` writes ``RUN_DIR/report.html``, ``RUN_DIR/pareto.png`` and
``RUN_DIR/pareto_search.png`` into the run directory (a local path or a storage URI; see
:mod:`arnas_ray.results.rundir`), and optionally a local copy of the HTML. The HTML embeds
every image as a base64 ``data:`` URI and refers to nothing outside itself (no scripts,
stylesheets, fonts or links), so it can be mailed or archived as one file. Wide tables scroll
inside their section; long node ids are shortened (the full id on hover).
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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arnas_ray._atomic import atomic_write_text
from arnas_ray._metrics import ACCURACY_COLUMNS
from arnas_ray.results.cells import render_cell
from arnas_ray.results.pareto import rank_rows, select_front
from arnas_ray.results.plots import render_pareto, render_search_diagnostics
from arnas_ray.results.run import Run, _stage_rows, load_run, search_steps, summarize_run
from arnas_ray.results.rundir import DIAGNOSTICS_PLOT, PARETO, REPORT, SEARCH_PARETO, RunDir
from arnas_ray.results.table import STAGES

__all__ = [
    "REPORT_FILE",
    "plot_axes",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_FILE = REPORT

_TRIAL_COLUMNS = ("trial_id", "status", "source", "dataset", "placement", "channel_ratios", "strategy",
                  "normalization", "order", "seed", "params", "flops", *ACCURACY_COLUMNS, "epochs", "wall_s",
                  "pareto_rank", "gamma_mean", "gamma_frac_0", "gamma_frac_1", "cos_mean", "genotype_changes",
                  "entropy_mean", "error")
_COST_COLUMNS = ("stage", "trial_id", "status", "device", "node", "wall_s", "started_at",
                 "finished_at")
_SHORT_ID = 12  # characters of a node id shown in tables (the full id on hover)


def plot_axes(objectives: Mapping[str, str]) -> tuple[str, str]:
    """The two plotted columns of a stage: its first two objectives (or the first twice)."""
    names = list(objectives)
    return names[0], names[1] if len(names) > 1 else names[0]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222;
max-width:1400px}
.scroll{overflow-x:auto;max-width:100%}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.s{text-align:left}tr.front td{background:#fff6d5}
tr.failed td{color:#a00}tr.stopped td{color:#777}p.warn{color:#a05a00;font-weight:600}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
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
        if row.get("status") in ("failed", "stopped"):
            classes.append(str(row.get("status")))
        cls = f' class="{" ".join(classes)}"' if classes else ""
        cells = []
        for c in cols:
            value = row[c]
            text = html.escape(_fmt(value, c))
            if c == "node" and len(text) > _SHORT_ID:  # Ray node ids are 56 hex digits
                text = f'<span title="{text}">{text[:_SHORT_ID]}&hellip;</span>'

            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool)
            cells.append(f"<td>{text}</td>" if numeric else f'<td class="s">{text}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>")


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}">'


def _winning_genotypes(run: Run, max_genotypes: int) -> tuple[str, pd.DataFrame]:
    """Front rows with a genotype: retrain stage if it has any, else the search stage."""
    for stage in ("retrain", "search"):
        rows = run.stage(stage)
        rows = rows[rows["genotype"].notna()]
        front = select_front(rows, run.objectives(stage), top_k=max_genotypes)
        if len(front):
            return stage, front
    return "", run.table.iloc[:0]


def _cells_section(run: Run, max_genotypes: int, cell_backend: str) -> str:
    stage, winners = _winning_genotypes(run, max_genotypes)
    if winners.empty:
        return "<p><em>no finished trial with a genotype yet</em></p>"
    x, y = plot_axes(run.objectives(stage))
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


def _ranked(run: Run) -> pd.DataFrame:
    """The table with ranks per stage, also where the driver has not stored them yet."""
    df = run.table
    ranked = df.copy()
    for stage in STAGES:
        mask = (df["stage"] == stage).to_numpy()
        if mask.any():
            part = rank_rows(df[mask], run.objectives(stage))
            stored = df.loc[mask, "pareto_rank"]
            ranked.loc[mask, "pareto_rank"] = stored.where(stored.notna(), part["pareto_rank"]).to_numpy()
    return ranked


def _plots(run: Run) -> dict[str, bytes]:
    plots = {}
    for stage in STAGES:
        objectives = run.objectives(stage)
        x, y = plot_axes(objectives)
        rows = run.stage(stage)
        # baselines (random, named genotypes) get their own marker in the retrain plot
        marker = "source" if stage == "retrain" and rows["source"].isin(["random", "named"]).any() \
            else "channel_ratios"
        plots[stage] = render_pareto(rows, x, y, directions=(objectives[x], objectives[y]), marker=marker,
                                     title=f"{stage} stage: {x} vs {y}")
    return plots


def _diagnostics_section(run: Run, plot: bytes | None) -> str:
    """The degeneracy warnings of the search trials and the gamma / entropy plot."""
    search = run.stage("search")
    warned = search[search["degeneracy"].fillna("") != ""]
    items = "".join(f"<li><b>{html.escape(str(r['trial_id']))}</b>: the search {html.escape(str(r['degeneracy']))}"
                    "</li>" for _, r in warned.iterrows())
    text = (f'<p class="warn">Warning: {len(warned)} search trial(s) did not weigh both objectives:</p>'
            f"<ul>{items}</ul>") if items else "<p>No search trial was degenerate.</p>"
    return "<h2>Search diagnostics</h2>" + text + (_img(plot, "gamma and op-weight entropy per step") if plot else "")


def _ablation_section(run: Run) -> str:
    """Per factor with two or more levels among the finished retrained networks: the mean and its
    95% interval per level over seeds, and paired differences against the first level."""
    from arnas_ray.results.ablation import FACTORS, factor_summary, paired_differences

    rows = run.stage("retrain")
    rows = rows[rows["status"] == "finished"]
    metric = plot_axes(run.objectives("retrain"))[1]
    parts = []
    for factor in FACTORS:
        if rows[factor].nunique(dropna=True) < 2 or metric not in rows.columns:
            continue
        summary = factor_summary(rows, factor, metric)
        diffs = paired_differences(rows, factor, metric)
        parts.append(f"<h3>{html.escape(factor)} ({html.escape(metric)}, mean over seeds, 95% CI)</h3>"
                     + _html_table(summary, tuple(summary.columns))
                     + _html_table(diffs, tuple(diffs.columns)))
    return ("<h2>Ablations</h2>" + "".join(parts)) if parts else ""


def _comparison_section(run: Run) -> str:
    """The summary's searched-vs-random lines (baselines), if the run has them."""
    compared = run.summary.get("searched_vs_random") if isinstance(run.summary, dict) else None
    if not isinstance(compared, dict) or not compared:
        return ""
    items = "".join(f"<li><b>{html.escape(str(m))}</b>: {html.escape(str(c.get('text', '')))}</li>"
                    for m, c in compared.items() if isinstance(c, dict))
    return f"<h2>Searched vs random</h2><ul>{items}</ul>"


def _summary_section(summary: Mapping[str, Any]) -> str:
    rows = []
    for stage in STAGES:
        info = summary["stages"][stage]
        hv = info["hypervolume"]
        obj = " vs ".join(f"{k} ({v})" for k, v in info["objectives"].items())
        status = ", ".join(f"{k}: {v}" for k, v in sorted(info["status"].items()))
        rows.append(f"<tr><td class=\"s\">{stage}</td><td class=\"s\">{html.escape(obj)}</td>"
                    f"<td>{'' if hv is None else f'{hv:.6f}'}</td>"
                    f"<td class=\"s\">{html.escape(status)}</td><td>{len(info['front'])}</td></tr>")
    return ("<h2>Summary</h2><div class=\"scroll\"><table><thead><tr><th>stage</th><th>objectives</th>"
            "<th>hypervolume (ref. origin)</th><th>trials</th><th>front size</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def _trial_sections(run: Run) -> list[str]:
    ranked = _ranked(run)
    out = []
    for stage in STAGES:
        rows = _stage_rows(ranked, stage)
        metric_cols = [m for m in ACCURACY_COLUMNS if rows[m].notna().any()] or list(run.objectives(stage))
        cols = [c for c in _TRIAL_COLUMNS if c not in ACCURACY_COLUMNS or c in metric_cols]
        out.append(f"<h2>{stage.capitalize()} trials ({len(rows)})</h2>"
                   + _html_table(rows, cols, mark_front=True))
    return out


def render_report(run: Run, *, max_genotypes: int = 3, cell_backend: str = "auto",
                  plots: Mapping[str, bytes] | None = None, diagnostics: bytes | None = None) -> str:
    """The report of ``run`` as one HTML document."""
    summary = summarize_run(run)
    plots = dict(plots) if plots is not None else _plots(run)
    title = f"arnas-ray report: {summary['sweep_id'] or run.run_dir.name}"
    sections = [f"<h1>{html.escape(str(title))}</h1>",
                f"<p>Run directory <code>{html.escape(run.run_dir.uri)}</code>; "
                f"{summary['trials']} rows; generated "
                f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
                _summary_section(summary), _comparison_section(run), "<h2>Pareto fronts</h2>"]
    for stage in ("retrain", "search"):
        x, y = plot_axes(run.objectives(stage))
        sections.append(f"<h3>{stage}: {html.escape(x)} vs {html.escape(y)}</h3>"
                        + _img(plots[stage], f"{stage} Pareto plot"))
    sections.append(_diagnostics_section(run, diagnostics))
    sections.append("<h2>Winning cells</h2>" + _cells_section(run, max_genotypes, cell_backend))
    sections.append(_ablation_section(run))
    sections += _trial_sections(run)
    sections.append("<h2>Cost</h2>" + _cost_section(run.table))
    spec_body = html.escape(run.spec_text) if run.spec_text else "(no spec.yaml)"
    sections.append(f"<h2>Sweep spec</h2><pre>{spec_body}</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(str(title))}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(sections) + "\n</body></html>\n")


def write_report(run_dir: str | os.PathLike[str] | RunDir, *, max_genotypes: int = 3,
                 cell_backend: str = "auto", out: str | os.PathLike[str] | None = None) -> Path | str:
    """Write ``report.html`` (self-contained), ``pareto.png`` and ``pareto_search.png`` into
    the run directory.

    The report shows the spec verbatim, the search and retrain tables (every row; front rows
    highlighted), the Pareto plots of each stage on its objectives (the retrain stage: natural
    accuracy and the strongest evaluated attack, unless the spec says otherwise), the
    hypervolume per stage, drawings of every cell type of the winning genotypes and the cost.
    ``pareto.png`` shows the retrain stage, or the search stage while no retrain row has
    finished.

    Args:
        run_dir: the run directory (local path, storage URI or :class:`RunDir`).
        max_genotypes: at most this many winning genotypes are drawn.
        cell_backend: see :func:`~.cells.draw_cell`.
        out: also write the HTML to this local file.

    Returns:
        Where ``report.html`` was written: a local ``Path``, or the URI on an object store.

    Raises:
        FileNotFoundError: no run directory or no ``results.parquet``.
        CorruptTableError: ``results.parquet`` is unreadable.
        StorageError: the storage cannot be reached.
    """
    run = load_run(run_dir)
    root = run.run_dir
    plots = _plots(run)
    has_retrain = bool(((run.table["stage"] == "retrain") & (run.table["status"] == "finished")).any())
    root.write_bytes(PARETO, plots["retrain" if has_retrain else "search"])
    root.write_bytes(SEARCH_PARETO, plots["search"])
    steps = search_steps(run)
    diagnostics = render_search_diagnostics(steps) if steps else None
    if diagnostics is not None:
        root.write_bytes(DIAGNOSTICS_PLOT, diagnostics)
    document = render_report(run, max_genotypes=max_genotypes, cell_backend=cell_backend, plots=plots,
                             diagnostics=diagnostics)
    root.write_text(REPORT, document)
    if out is not None:
        atomic_write_text(out, document)
    local = root.local_path(REPORT)
    return local if local is not None else root.show(REPORT)
