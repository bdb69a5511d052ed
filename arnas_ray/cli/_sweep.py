"""``arnas-ray sweep run|validate|resume|status``: sweeps on Ray Tune."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["register", "print_front"]


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_front(table, stage: str, title: str) -> None:
    """A rich table of one stage's rows, the Pareto front marked."""
    from rich.console import Console
    from rich.table import Table

    rows = table[table["stage"] == stage]
    if rows.empty:
        return
    cols = ["trial_id", "status", "placement", "channel_ratios", "strategy", "params", "nat_acc"]
    cols += ["pgd_acc"] if stage == "search" else ["fgsm_acc", "pgd20_acc", "pgd100_acc", "aa_acc"]
    cols += ["pareto_rank", "wall_s"]
    cols = [c for c in cols if c in rows.columns and not (c == "aa_acc" and rows[c].isna().all())]
    t = Table(title=title, show_lines=False)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    for c in cols:
        t.add_column(c, justify="right" if c not in ("trial_id", "status", "placement", "strategy") else "left")
    rows = rows.sort_values(["pareto_rank", "nat_acc"], ascending=[True, False], na_position="last")
    for _, r in rows.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if v is None or (isinstance(v, float) and v != v):
                cells.append("-")
            elif c.endswith("_acc"):
                cells.append(f"{v:.3f}")
            elif c == "wall_s":
                cells.append(f"{v:.0f}")
            elif c == "params":
                cells.append(f"{int(v):,}")
            elif c == "pareto_rank":
                cells.append("front" if int(v) == 0 else str(int(v)))
            else:
                cells.append(str(v))
        t.add_row(*cells)
    console.print(t)


def _run(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    console = _console()
    t0 = time.time()
    result = run_sweep(spec, address=args.address, storage=args.storage,
                       progress=None if args.quiet else (lambda s: console.print(s, markup=False)))
    _summary(result, time.time() - t0)
    return 0


def _summary(result, elapsed: float) -> None:
    print_front(result.table, "search", "Search stage (supernet accuracy on held-out data)")
    print_front(result.table, "retrain", "Retrained winners (test set)")
    hv = result.summary.get("hypervolume", {})
    print(f"hypervolume: search {hv.get('search')}, retrain {hv.get('retrain')}")
    print(f"run directory: {result.run_dir}")
    for name in ("report.html", "pareto.png"):
        if (result.run_dir / name).exists():
            print(f"{name}: {result.run_dir / name}")
    print(f"elapsed: {elapsed:.0f} s")


def _validate(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import load_spec

    spec = load_spec(args.spec)
    if spec.search_algorithm == "grid":
        points = spec.points()
        print(f"{spec.name}: {len(points)} search trial(s), grid search")
        for p in points:
            cfg = spec.search_config(p)
            fault = f"  [test fault: lr={cfg.lr:g}, diverges]" if p.key in spec.test_faults.diverge else ""
            print(f"  {p.key}: placement={list(cfg.layout().placement)} ratios={list(cfg.layout().ratios)} "
                  f"C={cfg.width()} strategy={p.strategy} seed={p.seed}{fault}")
    else:
        o = spec.optuna
        print(f"{spec.name}: {o.num_samples} search trial(s), Optuna NSGA-II over placements "
              f"{list(o.placements)} and ratios in [{o.ratio_low}, {o.ratio_high}]")
    print(f"  then retrain the top {spec.selection.top_k} non-dominated genotype(s) by "
          f"{spec.selection.objectives}" if not spec.skip_retrain else "  no retraining (skip_retrain)")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import resume_sweep

    console = _console()
    t0 = time.time()
    result = resume_sweep(args.run_dir, address=args.address,
                          progress=None if args.quiet else (lambda s: console.print(s, markup=False)))
    _summary(result, time.time() - t0)
    return 0


def _status(args: argparse.Namespace) -> int:
    from arnas_ray.errors import SpecError
    from arnas_ray.results import read_table

    run_dir = Path(args.run_dir)
    table_path = run_dir / "results.parquet"
    if not (run_dir / "spec.yaml").exists():
        raise SpecError("run_dir", f"{str(run_dir)!r} is not a run directory (no spec.yaml)")
    lock = run_dir / ".lock"
    holder = json.loads(lock.read_text()) if lock.exists() else None
    print(f"run directory: {run_dir.absolute()}")
    driver = f"running (host {holder['host']}, pid {holder['pid']})" if holder else "not running"
    print(f"driver: {driver}")
    if not table_path.exists():
        print("no finished trial yet")
        return 0
    table = read_table(table_path)
    for stage in ("search", "retrain"):
        part = table[table["stage"] == stage]
        if part.empty:
            continue
        counts = part["status"].value_counts().to_dict()
        best = part[part["status"] == "finished"].sort_values("nat_acc", ascending=False).head(1)
        line = f"{stage}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        if not best.empty:
            b = best.iloc[0]
            rob = b["pgd_acc"] if stage == "search" else b["pgd20_acc"]
            line += f"; best natural {b['nat_acc']:.3f} ({b['trial_id']}, robust {rob:.3f})"
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="run, validate, resume and inspect sweeps on Ray Tune")
    ssub = s.add_subparsers(dest="sweep_command", metavar="ACTION")
    ssub.required = True
    run = ssub.add_parser("run", help="run a sweep: searches, Pareto selection, retraining, report")
    run.add_argument("spec", help="sweep YAML")
    run.add_argument("--address", default=None, help="Ray address: auto, ray://HOST:10001 (default: local Ray)")
    run.add_argument("--storage", default=None, help="parent directory of the run directory (default: spec.storage)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(func=_run)
    val = ssub.add_parser("validate", help="validate a spec and print the expanded trial list")
    val.add_argument("spec")
    val.set_defaults(func=_validate)
    res = ssub.add_parser("resume", help="continue a sweep whose driver died")
    res.add_argument("run_dir")
    res.add_argument("--address", default=None)
    res.add_argument("--quiet", action="store_true")
    res.set_defaults(func=_resume)
    st = ssub.add_parser("status", help="trials by state and the best so far")
    st.add_argument("run_dir")
    st.set_defaults(func=_status)
    import importlib

    try:  # job submission (Ray Jobs API) lives in its own module
        jobs = importlib.import_module("arnas_ray.cli._jobs")
    except ModuleNotFoundError as exc:
        if exc.name != "arnas_ray.cli._jobs":
            raise
        return
    jobs.register(ssub)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
