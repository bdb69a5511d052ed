"""Results of a sweep: the Parquet table, Pareto fronts, hypervolume, plots and the report.

This package imports neither torch nor ray (numpy, pandas, pyarrow and matplotlib only), so
notebooks and the CLI can read and report results on any machine.
"""

from __future__ import annotations

from arnas_ray.results.ablation import factor_summary, paired_differences
from arnas_ray.results.cells import cell_dot_source, draw_cell, draw_genotype, render_cell
from arnas_ray.results.fidelity import CLAIMS, Claim, claim_table, combine_runs, gamma_table
from arnas_ray.results.hypervolume import hypervolume
from arnas_ray.results.pareto import (
    crowding_distance,
    nondominated_mask,
    pareto_ranks,
    rank_rows,
    select_front,
)
from arnas_ray.results.plots import plot_pareto, render_pareto
from arnas_ray.results.report import write_report
from arnas_ray.results.run import (
    DEFAULT_OBJECTIVES,
    Run,
    ablation_table,
    front_table,
    load_run,
    params_vs_robustness,
    stage_hypervolume,
    summarize_run,
)
from arnas_ray.results.rundir import RunDir, StorageError
from arnas_ray.results.table import (
    SCHEMA,
    CorruptTableError,
    TableError,
    empty_table,
    normalize_rows,
    read_run,
    read_table,
    upsert_rows,
    write_table,
)

__all__ = [
    "CLAIMS",
    "Claim",
    "CorruptTableError",
    "DEFAULT_OBJECTIVES",
    "Run",
    "RunDir",
    "SCHEMA",
    "StorageError",
    "TableError",
    "ablation_table",
    "cell_dot_source",
    "claim_table",
    "combine_runs",
    "crowding_distance",
    "draw_cell",
    "draw_genotype",
    "empty_table",
    "factor_summary",
    "front_table",
    "gamma_table",
    "hypervolume",
    "load_run",
    "nondominated_mask",
    "normalize_rows",
    "paired_differences",
    "params_vs_robustness",
    "pareto_ranks",
    "plot_pareto",
    "rank_rows",
    "read_run",
    "read_table",
    "render_cell",
    "render_pareto",
    "select_front",
    "stage_hypervolume",
    "summarize_run",
    "upsert_rows",
    "write_report",
    "write_table",
]
