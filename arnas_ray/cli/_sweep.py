"""``arnas-ray sweep run|validate|resume|status``: sweeps on Ray Tune."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["register", "print_front"]


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _cell(value, column: str) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return "-"
    if column.endswith("_acc"):
        return f"{value:.3f}"
    if column == "wall_s":
        return f"{value:.0f}"
    if column == "params":
        return f"{int(value):,}"
    if column == "pareto_rank":
        return "front" if int(value) == 0 else str(int(value))
    return str(value)


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
    cols = [c for c in cols if c in rows.columns and not (c.endswith("_acc") and rows[c].isna().all())]
    t = Table(title=title, show_lines=False)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    for c in cols:
        t.add_column(c, justify="right" if c not in ("trial_id", "status", "placement", "strategy") else "left")
    rows = rows.sort_values(["pareto_rank", "nat_acc"], ascending=[True, False], na_position="last")
    for _, r in rows.iterrows():
        t.add_row(*(_cell(r[c], c) for c in cols))
    console.print(t)


def _progress(args: argparse.Namespace):
    if args.quiet:
        return None
    console = _console()
    return lambda s: console.print(s, markup=False)


def _finish(result, elapsed: float) -> int:
    """Print the tables and paths; exit 3 (one line on stderr) when trials failed."""
    _summary(result, elapsed)
    if not result.ok:
        print(f"arnas-ray: {result.message}", file=sys.stderr)
        return 3
    if result.message:  # stopped on request: ok, and how to continue
        print(f"arnas-ray: {result.message}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    for warning in spec.local_warnings():
        print(f"arnas-ray: warning: {warning}", file=sys.stderr)
    t0 = time.time()
    result = run_sweep(spec, address=args.address, storage=args.storage, progress=_progress(args),
                       force=args.force, lease_wait_s=args.lease_wait)
    return _finish(result, time.time() - t0)


def _summary(result, elapsed: float) -> None:
    print_front(result.table, "search", "Search stage (supernet accuracy on held-out data)")
    print_front(result.table, "retrain", "Retrained winners (test set)")
    hv = result.summary.get("hypervolume", {})
    print(f"hypervolume: search {hv.get('search')}, retrain {hv.get('retrain')}")
    epochs = result.summary.get("trial_epochs") or {}
    if epochs:
        stopped = int((result.table["status"] == "stopped").sum())
        print(f"search trial-epochs: {epochs['used']} of {epochs['planned']}"
              + (f" ({stopped} trial(s) stopped early)" if stopped else ""))
    if result.summary.get("budget"):
        print(result.summary["budget"])
    for metric, comparison in (result.summary.get("searched_vs_random") or {}).items():
        print(f"{metric}: {comparison['text']}")
    print(f"run directory: {result.run_dir.uri}")
    from arnas_ray.results.rundir import PARETO, REPORT

    for name in (REPORT, PARETO):
        if result.run_dir.exists(name):
            print(f"{name}: {result.run_dir.show(name)}")
    print(f"elapsed: {elapsed:.0f} s")


def _validate(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import load_spec

    spec = load_spec(args.spec)
    if spec.search_algorithm == "grid":
        points = spec.points()
        print(f"{spec.name}: {len(points)} search trial(s), grid search")
        for p in points:
            cfg = spec.search_config(p)
            print(f"  {p.key}: placement={list(cfg.layout().placement)} ratios={list(cfg.layout().ratios)} "
                  f"C={cfg.width()} strategy={p.strategy} seed={p.seed}")
    elif spec.search_algorithm == "random":
        points = spec.points()
        print(f"{spec.name}: {len(points)} search trial(s), random search (seed {spec.sampler.seed})")
        for p in points:
            print(f"  {p.key}: ratios={list(spec.search_config(p).layout().ratios)} strategy={p.strategy} "
                  f"seed={p.seed}")
    else:
        s = spec.sampler
        print(f"{spec.name}: {spec.num_trials()} search trial(s), Optuna NSGA-II over placements "
              f"{[str(p) for p in spec.grid.placement]}, strategies {list(spec.grid.strategy)}, seeds "
              f"{list(spec.grid.seed)} and ratios in [{s.ratio_low}, {s.ratio_high}]")
    if spec.scheduler.kind != "none":
        print(f"  scheduler: {spec.scheduler.kind} on {spec.scheduler.metric} ({spec.scheduler.mode}), "
              f"grace period {spec.scheduler.grace_period} epoch(s)")
    print(f"  then {_retrain_plan(spec)}, ranked after evaluation on {spec.evaluation.retrain_objectives()}"
          if not spec.skip_retrain else "  no retraining (skip_retrain)")
    for warning in spec.local_warnings():
        print(f"arnas-ray: warning: {warning}", file=sys.stderr)
    return 0


def _retrain_plan(spec: Any) -> str:
    sel, b = spec.selection, spec.baselines
    plan = ("retrain every distinct searched network" if sel.mode == "all" else
            f"retrain the top {sel.top_k} non-dominated genotype(s) by {sel.objectives}")
    if sel.include_stopped:
        plan += " (stopped trials included)"
    extra = ([f"{b.random} random genotype(s) per layout"] if b.random else []) + list(b.genotypes)
    return plan + (f", plus {', '.join(extra)}" if extra else "")


def _resume(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import load_spec, resume_sweep

    spec = load_spec(args.spec) if args.spec else None
    t0 = time.time()
    result = resume_sweep(args.run_dir, spec=spec, address=args.address, progress=_progress(args),
                          force=args.force, lease_wait_s=args.lease_wait)
    return _finish(result, time.time() - t0)


def _driver_line(run_dir) -> str:
    from arnas_ray.sweep.lease import DEFAULT_TTL_S, read_lease

    lease = read_lease(run_dir)
    if lease is None:
        return "not running"
    if lease.on_this_host_and_dead():
        return f"not running (its driver, pid {lease.pid} on this host, is gone; `sweep resume` takes over)"
    if lease.age_s > DEFAULT_TTL_S:
        return (f"not running (last heartbeat {lease.age_s:.0f} s ago from host {lease.host}, pid {lease.pid}; "
                "`sweep resume` takes over)")
    return f"running (host {lease.host}, pid {lease.pid}, heartbeat {lease.age_s:.0f} s ago)"


def _stage_line(stage: str, part, objectives: dict[str, str]) -> str:
    counts = part["status"].value_counts().to_dict()
    line = f"{stage}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    best = part[part["status"] == "finished"].sort_values("nat_acc", ascending=False).head(1)
    robust = [c for c in objectives if c != "nat_acc"]
    if not best.empty:
        b = best.iloc[0]
        rob = f", {robust[0]} {b[robust[0]]:.3f}" if robust and robust[0] in b.index else ""
        line += f"; best natural {b['nat_acc']:.3f} ({b['trial_id']}{rob})"
    return line


def _status(args: argparse.Namespace) -> int:
    import pandas as pd

    from arnas_ray.errors import SpecError
    from arnas_ray.results import load_run
    from arnas_ray.results.rundir import SPEC, RunDir

    run_dir = RunDir.open(args.run_dir)
    if not run_dir.exists(SPEC):
        if _driver_line(run_dir).startswith("running"):  # it holds the lease, spec.yaml comes next
            print(f"run directory: {run_dir.uri}\ndriver: starting ({_driver_line(run_dir)})")
            return 0
        raise SpecError("run_dir", f"{run_dir.uri!r} is not a run directory (no {SPEC})")
    print(f"run directory: {run_dir.uri}")
    print(f"driver: {_driver_line(run_dir)}")
    try:
        run = load_run(run_dir)
    except FileNotFoundError:
        print("no finished trial yet")
        return 0
    for stage in ("search", "retrain"):
        part = run.stage(stage)
        if part.empty:
            continue
        print(_stage_line(stage, part, run.objectives(stage)))
        for _, r in part[part["status"] == "failed"].iterrows():
            where = f" ({r['error_file']})" if isinstance(r["error_file"], str) else ""
            print(f"  failed {r['trial_id']}: {r['error']}{where}")
        for _, r in part[part["status"] == "stopped"].iterrows():
            print(f"  stopped {r['trial_id']} at epoch {r['epochs'] if pd.notna(r['epochs']) else '-'}")
        for _, r in part[part["degeneracy"].fillna("") != ""].iterrows():
            print(f"  warning {r['trial_id']}: the search {r['degeneracy']}")
    message = run.summary.get("message") if isinstance(run.summary, dict) else None
    if message:
        print(f"last run: {message}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from arnas_ray.errors import SpecError
    from arnas_ray.results.rundir import SPEC, RunDir
    from arnas_ray.sweep.stopping import request_stop

    run_dir = RunDir.open(args.run_dir)
    if not run_dir.exists(SPEC):
        raise SpecError("run_dir", f"{run_dir.uri!r} is not a run directory (no {SPEC})")
    state = _driver_line(run_dir)
    if not state.startswith("running"):
        print(f"no driver is running on {run_dir.uri} ({state}); nothing to stop")
        return 0
    request_stop(run_dir)
    print(f"asked the driver to stop ({state}); it ends the running trials at their checkpoints, writes "
          f"the table and report, and exits; continue with `arnas-ray sweep resume {run_dir.uri}`")
    return 0


def _driver_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray address: auto, or omit for a local Ray "
                   "(Ray Client ray:// is refused: use `sweep submit`)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--force", action="store_true",
                   help="break a live-looking lease of another driver (after a warning)")
    p.add_argument("--lease-wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for another driver's lease to go stale (default 0)")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="run, validate, resume and inspect sweeps on Ray Tune")
    ssub = s.add_subparsers(dest="sweep_command", metavar="ACTION")
    ssub.required = True
    run = ssub.add_parser("run", help="run a sweep: searches, Pareto selection, retraining, report "
                          "(exit 3 when trials failed)")
    run.add_argument("spec", help="sweep YAML")
    run.add_argument("--storage", default=None,
                     help="parent of the run directory: a path, s3://BUCKET/PREFIX, gs://... (default: spec.storage)")
    _driver_options(run)
    run.set_defaults(func=_run)
    val = ssub.add_parser("validate", help="validate a spec and print the expanded trial list")
    val.add_argument("spec")
    val.set_defaults(func=_validate)
    res = ssub.add_parser("resume", help="continue a sweep whose driver stopped (exit 3 when trials failed)")
    res.add_argument("run_dir", help="the run directory: a path or URI")
    res.add_argument("--spec", default=None,
                     help="continue with this spec (it may change resources, max_concurrent, max_failures)")
    _driver_options(res)
    res.set_defaults(func=_resume)
    st = ssub.add_parser("status", help="the driver's state, trials by state, failures and the best so far")
    st.add_argument("run_dir", help="the run directory: a path or URI")
    st.set_defaults(func=_status)
    sp = ssub.add_parser("stop", help="stop a running sweep gracefully (trials stay resumable)")
    sp.add_argument("run_dir", help="the run directory: a path or URI")
    sp.set_defaults(func=_stop)
    from arnas_ray.cli import _jobs  # job submission (Ray Jobs API)

    _jobs.register(ssub)
