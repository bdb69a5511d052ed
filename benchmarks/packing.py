"""Packing: throughput of 1, 2 and 4 concurrent search trials on one machine (CPU shares) or
one GPU (fractional GPU shares), same total work, in one run.

    python -m benchmarks.packing [--trials 4] [--steps 4] [--device cpu|cuda]

Prints one JSON line per packing level with trials/hour.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks._common import emit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    import ray

    from arnas_ray.sweep import SweepSpec, run_sweep

    cores = os.cpu_count() or 2
    gpu = a.device == "cuda"
    ray.init(num_cpus=cores, num_gpus=1 if gpu else 0, include_dashboard=False, log_to_driver=False)
    try:
        for concurrent in (1, 2, 4):
            res = ({"cpu": max(1, cores // concurrent), "gpu": 1 / concurrent} if gpu
                   else {"cpu": cores / concurrent, "gpu": 0})
            with tempfile.TemporaryDirectory() as tmp:
                spec = SweepSpec.from_dict({
                    "name": f"pack{concurrent}", "storage": tmp,
                    "dataset": {"name": "digits", "image_size": 16, "limit": 600},
                    "search": {"channels": 8, "cells": 5, "epochs": 1, "batch_size": 32,
                               "steps_per_epoch": a.steps, "eval_samples": 64, "order": "second"},
                    "grid": {"placement": ["arnas"], "seed": list(range(a.trials))},
                    "resources": res, "skip_retrain": True,
                })
                t = time.perf_counter()
                run_sweep(spec, report=False)
                wall = time.perf_counter() - t
            emit({"bench": "packing", "device": a.device, "concurrent": concurrent, "resources": res,
                  "trials": a.trials, "wall_s": round(wall, 1), "trials_per_hour": round(3600 * a.trials / wall, 1)})
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
