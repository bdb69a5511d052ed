"""Ray Tune overhead per trial: the same N small searches through `run_sweep` (sequential
trials, max_concurrent 1) and through a plain loop calling `run_search`, in one run.

    python -m benchmarks.ray_overhead [--trials 3] [--steps 6]

Prints one JSON line: seconds per trial both ways, overhead per trial in seconds and as a
percentage of a 60-second trial (the issue's target: <= 5%).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks._common import emit


def _spec(trials: int, steps: int, storage: str):
    from arnas_ray.sweep import SweepSpec

    return SweepSpec.from_dict({
        "name": "overhead", "storage": storage,
        "dataset": {"name": "digits", "image_size": 8, "limit": 600},
        "search": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": steps,
                   "eval_samples": 64, "order": "first"},
        "grid": {"placement": ["arnas"], "seed": list(range(trials))},
        "resources": {"cpu": 1}, "max_concurrent": 1, "skip_retrain": True,
    })


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    import ray
    import torch

    from arnas_ray.search import run_search
    from arnas_ray.sweep import run_sweep

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(a.trials, a.steps, tmp)
        t = time.perf_counter()
        for point in spec.points():
            run_search(spec.search_config(point), spec.dataset.load(seed=point.seed), "cpu")
        loop_s = time.perf_counter() - t
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            t = time.perf_counter()
            run_sweep(spec, report=False)
            sweep_s = time.perf_counter() - t
        finally:
            ray.shutdown()
    per_trial = (sweep_s - loop_s) / a.trials
    emit({"bench": "ray_overhead", "trials": a.trials, "loop_s_per_trial": round(loop_s / a.trials, 2),
          "sweep_s_per_trial": round(sweep_s / a.trials, 2), "overhead_s_per_trial": round(per_trial, 2),
          "overhead_pct_of_60s_trial": round(100 * per_trial / 60, 2)})


if __name__ == "__main__":
    main()
