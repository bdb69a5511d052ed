"""``arnas-ray pareto`` and ``arnas-ray report``: read a run directory (a path or a storage URI)
or a results table."""

from __future__ import annotations

import argparse

from arnas_ray.errors import SpecError

__all__ = ["register"]


def _objectives(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, _, direction = item.partition(":")
        direction = direction or "max"
        if direction not in ("max", "min") or not name:
            raise SpecError("--objective", f"expected NAME:max or NAME:min, got {item!r}")
        out[name] = direction
    return out


def _load(source: str):
    """``(table, objectives per stage)`` of a run directory or a ``.parquet`` table."""
    from arnas_ray.results import DEFAULT_OBJECTIVES, load_run, read_table
    from arnas_ray.results.rundir import SPEC, TABLE, RunDir

    location = source.split("?", 1)[0]
    if location.endswith(".parquet"):
        return read_table(source), DEFAULT_OBJECTIVES
    run_dir = RunDir.open(source)
    if not run_dir.exists(TABLE):
        what = "a run directory without a results table yet" if run_dir.exists(SPEC) else \
            "neither a run directory nor a .parquet table"
        raise SpecError("source", f"{run_dir.uri!r} is {what}")
    run = load_run(run_dir)
    return run.table, {s: run.objectives(s) for s in ("search", "retrain")}


def _pareto(args: argparse.Namespace) -> int:
    from arnas_ray.cli._sweep import print_front
    from arnas_ray.results import rank_rows

    stage = args.stage
    if stage not in ("search", "retrain"):
        raise SpecError("--stage", f"unknown stage {stage!r}; expected one of ('search', 'retrain')")
    table, defaults = _load(args.source)
    objectives = _objectives(args.objective) or defaults[stage]
    missing = [c for c in objectives if c not in table.columns]
    if missing:
        raise SpecError("--objective", f"unknown column {missing[0]!r}; columns: {sorted(table.columns)}")
    part = table[table["stage"] == stage]
    if part.empty:
        print(f"no {stage} rows in {args.source}")
        return 0
    print_front(rank_rows(part, objectives), stage, f"{stage} stage, ranked by {objectives}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from arnas_ray.results import write_report
    from arnas_ray.results.rundir import PARETO, TABLE, RunDir

    run_dir = RunDir.open(args.run_dir)
    if not run_dir.exists(TABLE):
        raise SpecError("run_dir", f"{run_dir.uri!r} has no {TABLE}")
    path = write_report(run_dir, out=args.out)
    print(f"report.html: {path}")
    print(f"pareto.png: {run_dir.show(PARETO)}")
    if args.out:
        print(f"local copy: {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pareto", help="rank a run's trials and print the Pareto front")
    p.add_argument("source", help="a run directory (path or URI) or a results .parquet file")
    p.add_argument("--objective", action="append",
                   help="NAME:max|min (repeat); default: the run's objectives of the stage")
    p.add_argument("--stage", default="retrain", help="search or retrain (default retrain)")
    p.set_defaults(func=_pareto)
    r = sub.add_parser("report", help="write report.html and pareto.png into a run directory (path or URI)")
    r.add_argument("run_dir")
    r.add_argument("--out", default=None, help="also write the report to this local file")
    r.set_defaults(func=_report)
