"""Time non-dominated sorting and 2-D hypervolume on 10^5 and 10^6 random points.

Prints ONE JSON line, e.g. ``{"bench": "pareto", "n1e5": {"mask_s": ..., ...}, ...}``.
Target: non-dominated sorting of 10^5 points in under 1 s.

Usage: ``python -m benchmarks.pareto_bench [--sizes 100000 1000000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from arnas_ray.results.hypervolume import hypervolume
from arnas_ray.results.pareto import nondominated_mask, pareto_ranks


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(sizes: list[int], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"bench": "pareto", "seed": seed, "python": platform.python_version(),
                              "numpy": np.__version__}
    directions = ("max", "max")
    for n in sizes:
        # Accuracy-like trade-off in [0, 1]^2: points below the concave front y = 1 - x^2.
        t = rng.random(n)
        values = np.stack([t, 1.0 - t**2], axis=1) * (1.0 - 0.3 * rng.random((n, 2)))
        repeats = 3 if n <= 100_000 else 1
        mask_s, mask = _timed(lambda v=values: nondominated_mask(v, directions), repeats)
        rank_s, ranks = _timed(lambda v=values: pareto_ranks(v, directions), repeats)
        hv_s, hv = _timed(lambda v=values: hypervolume(v, directions), repeats)
        if not np.array_equal(ranks == 0, mask):
            raise AssertionError("rank-0 rows differ from the non-dominated mask")
        result[f"n{n:.0e}".replace("+0", "").replace("+", "")] = {
            "n": n,
            "mask_s": round(mask_s, 4),
            "ranks_s": round(rank_s, 4),
            "hypervolume_2d_s": round(hv_s, 4),
            "front_size": int(mask.sum()),
            "fronts": int(ranks.max()) + 1,
            "hypervolume": round(hv, 6),
        }
    first = result.get("n1e5")
    if first is not None:
        result["target_ranks_1e5_under_1s"] = bool(first["ranks_s"] < 1.0)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.sizes, args.seed)))


if __name__ == "__main__":
    main()
