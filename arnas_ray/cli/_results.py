"""``arnas-ray pareto`` and ``arnas-ray report``: read a run directory or a results table."""

from __future__ import annotations

import argparse
from pathlib import Path

from arnas_ray.errors import SpecError

__all__ = ["register"]


def _objectives(items: list[str] | None, stage: str) -> dict[str, str]:
    if not items:
        return {"nat_acc": "max", "pgd_acc" if stage == "search" else "pgd20_acc": "max"}
    out = {}
    for item in items:
        name, _, direction = item.partition(":")
        direction = direction or "max"
        if direction not in ("max", "min") or not name:
            raise SpecError("--objective", f"expected NAME:max or NAME:min, got {item!r}")
        out[name] = direction
    return out


def _pareto(args: argparse.Namespace) -> int:
    from arnas_ray.cli._sweep import print_front
    from arnas_ray.results import rank_rows, read_table

    path = Path(args.source)
    table_path = path / "results.parquet" if path.is_dir() else path
    table = read_table(table_path)
    stage = args.stage
    if stage not in ("search", "retrain"):
        raise SpecError("--stage", f"unknown stage {stage!r}; expected one of ('search', 'retrain')")
    objectives = _objectives(args.objective, stage)
    missing = [c for c in objectives if c not in table.columns]
    if missing:
        raise SpecError("--objective", f"unknown column {missing[0]!r}; columns: {sorted(table.columns)}")
    part = table[table["stage"] == stage]
    if part.empty:
        print(f"no {stage} rows in {table_path}")
        return 0
    ranked = rank_rows(part, objectives)
    print_front(ranked, stage, f"{stage} stage, ranked by {objectives}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from arnas_ray.results import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "results.parquet").exists():
        raise SpecError("run_dir", f"{str(run_dir)!r} has no results.parquet")
    path = write_report(run_dir)
    print(f"report.html: {path}")
    print(f"pareto.png: {run_dir / 'pareto.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pareto", help="rank a run's trials and print the Pareto front")
    p.add_argument("source", help="a run directory or a results .parquet file")
    p.add_argument("--objective", action="append", help="NAME:max|min (repeat); default nat_acc and PGD accuracy")
    p.add_argument("--stage", default="retrain", help="search or retrain (default retrain)")
    p.set_defaults(func=_pareto)
    r = sub.add_parser("report", help="write report.html and pareto.png into a run directory")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)
