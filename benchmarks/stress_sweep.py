"""Load test: a sweep of N tiny search trials through Ray Tune, bounded in time (issue 9, item 7).

Each trial is one ARNAS search of one step on synthetic 8x8 data (a 3-cell, 2-channel
supernet), so the trial's own work is small and the run measures what Ray Tune adds per trial:
actor scheduling, result and checkpoint handling, experiment-state syncing and the driver's
table callback (one atomic Parquet upsert per finished trial). The table must end with exactly
N rows, all ``finished`` (rows lost: 0).

Prints one JSON line::

    {"trials": 200, "rows": 200, "rows_lost": 0, "failed": 0, "wall_s": ..., "wall_per_trial_s": ...,
     "trial_wall_mean_s": ..., "overhead_per_trial_s": ..., "slots": 2, ...}

``overhead_per_trial_s`` is the slot-seconds each trial costs beyond its own reported
``wall_s``: ``wall_s * slots / trials - trial_wall_mean_s`` (``slots`` = trials that run at once).

Usage::

    python benchmarks/stress_sweep.py --trials 200 --timeout 1500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="number of search trials (default 200)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    parser.add_argument("--storage", default=None, help="parent of the run directory (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")

    import ray

    from arnas_ray.results import read_table
    from arnas_ray.sweep import SweepSpec, run_sweep

    storage = Path(args.storage or tempfile.mkdtemp(prefix="arnas-stress-"))
    spec = SweepSpec.from_dict({
        "name": f"stress-{args.trials}",
        "storage": str(storage),
        "dataset": {"name": "synthetic", "image_size": 8, "limit": 64},
        "search": {"channels": 2, "cells": 3, "epochs": 1, "batch_size": 8, "steps_per_epoch": 1,
                   "eval_samples": 16, "order": "first", "attack": {"steps": 1},
                   "eval_attack_steps": 1, "fused": False, "channels_last": False},
        "grid": {"placement": ["arnas"], "seed": list(range(args.trials))},
        "resources": {"cpu": 1, "gpu": 0},
        "skip_retrain": True,
        "max_failures": 0,
    })

    def _expired(signum, frame):
        raise TimeoutError(f"the stress sweep ran longer than --timeout {args.timeout:.0f} s")

    signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    t0 = time.time()
    timed_out = False
    try:
        result = run_sweep(spec, report=False)
        run_dir = result.run_dir
    except TimeoutError:
        timed_out = True
        run_dir = storage / spec.name
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        wall = time.time() - t0
        ray.shutdown()

    try:
        table = read_table(run_dir / "results.parquet")
    except FileNotFoundError:
        table = None
    rows = 0 if table is None else len(table)
    finished = 0 if table is None else int((table["status"] == "finished").sum())
    trial_wall = 0.0 if table is None or not rows else float(table["wall_s"].astype(float).mean())
    slots = min(args.cpus, args.trials)
    duplicated = 0 if table is None else int(table.duplicated(subset=["stage", "trial_id"]).sum())
    out = {
        "trials": args.trials,
        "rows": rows,
        "rows_lost": args.trials - rows if not timed_out else None,
        "duplicated_rows": duplicated,
        "finished": finished,
        "failed": rows - finished,
        "timed_out": timed_out,
        "wall_s": round(wall, 1),
        "wall_per_trial_s": round(wall / args.trials, 3),
        "trial_wall_mean_s": round(trial_wall, 3),
        "slots": slots,
        "overhead_per_trial_s": round(wall * slots / args.trials - trial_wall, 3),
        "cpu": _cpu_model(),
        "cpus": args.cpus,
        "run_dir": str(run_dir),
    }
    print(json.dumps(out), flush=True)
    ok = not timed_out and rows == args.trials and duplicated == 0 and finished == args.trials
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
