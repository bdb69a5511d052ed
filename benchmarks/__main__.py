"""Run every benchmark, each printing JSON lines (and appending them to <folder>/<machine>.jsonl).

    python -m benchmarks [--quick] [--only NAME,...] [--record]

`--quick` is the CI smoke run: the smallest shapes and counts. The lines go to the untracked
`benchmarks/local/` (the checkout stays clean); `--record` writes them to the tracked
`benchmarks/results/` instead, for a run that is recorded in RESULTS.md and committed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smallest shapes (smoke run)")
    p.add_argument("--only", default=None, help="comma-separated subset of benchmark names")
    p.add_argument("--record", action="store_true",
                   help="log to the tracked benchmarks/results/ (a recorded run) instead of benchmarks/local/")
    a = p.parse_args()
    env = dict(os.environ)
    if a.record:
        env["ARNAS_BENCH_RESULTS"] = str(ROOT / "benchmarks" / "results")
    q = a.quick
    runs: list[tuple[str, list[str]]] = [
        # one thread per process: how the service runs a CPU search trial (`resources.cpu: 1`,
        # which the packing benchmark shows to be the efficient setting), and two threads, in one
        # run (issue 16's targets); the large shape runs with every core
        ("search_step", ["benchmarks/search_step.py", "--threads", "1", "2"]
         + (["--steps", "1", "--rounds", "1", "--ref-steps", "1"] if q else ["--steps", "2", "--rounds", "2"])),
        # aten operator calls per search step at the quickstart and the small shape (1 thread)
        ("op_count", ["benchmarks/op_count.py", "--threads", "1"]
         + (["--shape", "quickstart", "--steps", "1", "--batch", "8"] if q else [])),
        # each cell on both training-mode paths (edges fused across a round or one at a time),
        # one batch and the PGD pair, 1 thread: what the fusion thresholds should be on this CPU
        ("cells", ["benchmarks/cells.py"] + (["--shape", "tiny", "--repeats", "1", "--calls", "1"] if q else [])),
        # the compiled depthwise weight gradient against the PyTorch path it replaces (1 thread)
        ("dw_kernel", ["benchmarks/dw_kernel.py"] + (["--quick", "--repeats", "1"] if q else [])),
        # the compiled training-mode batch norm against PyTorch's (1 thread)
        ("bn_kernel", ["benchmarks/bn_kernel.py"] + (["--quick", "--repeats", "1"] if q else [])),
        # the compiled grouped 1x1 convolutions against PyTorch's (1 thread)
        ("pw_kernel", ["benchmarks/pw_kernel.py"] + (["--quick", "--repeats", "1"] if q else [])),
        ("search_step_large", ["benchmarks/search_step.py", "--shape", "large", "--steps", "1", "--rounds", "1",
                               "--ref-steps", "1"]),
        ("attacks", ["benchmarks/attacks.py", "--autoattack", "--aa-batch-size", "8"]
         + (["--repeats", "1", "--batch-size", "16"] if q else [])),
        ("pareto", ["-m", "benchmarks.pareto_bench"]),
        ("ray_overhead", ["-m", "benchmarks.ray_overhead"] + (["--trials", "2", "--steps", "2"] if q else [])),
        ("packing", ["-m", "benchmarks.packing"] + (["--trials", "2", "--steps", "1"] if q else [])),
    ]
    wanted = set(a.only.split(",")) if a.only else None
    failed = []
    for name, argv in runs:
        if wanted is not None and name not in wanted:
            continue
        t = time.time()
        print(f"# {name}", file=sys.stderr, flush=True)
        rc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env).returncode
        print(f"# {name}: rc={rc} in {time.time() - t:.0f}s", file=sys.stderr, flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"# failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
