"""Time each search cell on both training-mode paths: edges fused across a round, or one at a time.

A fused supernet evaluates a cell's edges together (:mod:`arnas_ray.space._fused_cell`) only
when its states are at most ``CROSS_EDGE_MAX`` elements (``REDUCTION_MAX`` for reduction
cells); larger cells go one edge at a time (``FusedMixedOp``). Which path is faster depends on
the CPU's caches, so this script measures both for every cell of a shape, on the inputs the
cell gets in a real pass (captured from one forward of the supernet), as a PGD pass runs it:
parameters frozen, forward plus the gradient with respect to the cell's inputs. ``--groups 2``
is the paired pass of the search's two attacks (both batches stacked along the channels).

Usage::

    python -m benchmarks.cells [--shape small] [--groups 1 2] [--repeats 5] [--threads 1]

Prints one JSON line per cell and group count: ``state_elements`` (what the thresholds
compare), ``chosen`` (the path the current thresholds pick), ``fused_ms`` and ``per_edge_ms``
(median over ``--repeats`` rounds, the two paths interleaved, each round the mean of
``--calls`` calls after a warm-up call) and ``faster``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arnas_ray.space import _fused_cell  # noqa: E402
from benchmarks._common import emit  # noqa: E402
from benchmarks.search_step import SHAPES  # noqa: E402

PATHS = ("fused", "per_edge")


@contextmanager
def forced(path: str) -> Iterator[None]:
    """Every cell on ``path``, whatever its size (the thresholds restored afterwards)."""
    saved = _fused_cell.CROSS_EDGE_MAX, _fused_cell.REDUCTION_MAX
    limit = sys.maxsize if path == "fused" else -1
    _fused_cell.CROSS_EDGE_MAX = _fused_cell.REDUCTION_MAX = limit
    try:
        yield
    finally:
        _fused_cell.CROSS_EDGE_MAX, _fused_cell.REDUCTION_MAX = saved


def cell_inputs(model: torch.nn.Module, x: torch.Tensor, g: int) -> list[tuple[Any, ...]]:
    """``(cell, s0, s1, weights)`` of every cell in one pass of ``g`` stacked copies of ``x``."""
    seen: list[tuple[Any, ...]] = []
    hooks = [cell.register_forward_hook(lambda m, args, out: seen.append((m, *(a.detach() for a in args[:3]))))
             for cell in model.cells]
    try:
        with torch.no_grad():
            model.forward_groups([x] * g) if g > 1 else model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def pgd_call(cell: torch.nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
             g: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Forward and input gradient of ``cell`` (one call, returning the gradients), as a PGD
    pass asks for them."""
    shared = s0 is s1 or s0.data_ptr() == s1.data_ptr()  # the first cell reads the stem twice

    def call() -> tuple[torch.Tensor, ...]:
        a = s0.clone().requires_grad_(True)
        b = a if shared else s1.clone().requires_grad_(True)
        out = cell(a, b, weights, g)
        return torch.autograd.grad(out, [a] if shared else [a, b], torch.ones_like(out))
    return call


def time_cell(call: Callable[[], Any], path: str, calls: int) -> float:
    """Mean milliseconds per call on ``path`` after one warm-up call."""
    with forced(path):
        call()
        t = time.perf_counter()
        for _ in range(calls):
            call()
    return (time.perf_counter() - t) / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--groups", type=int, nargs="+", default=[1, 2], help="batches stacked along the channels")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported")
    p.add_argument("--calls", type=int, default=3, help="timed calls per path and round")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if min(a.groups) < 1 or a.repeats < 1 or a.calls < 1 or a.threads < 1:
        p.error("--groups, --repeats, --calls and --threads must be at least 1")
    torch.set_num_threads(a.threads)
    from arnas_ray.attacks import frozen_parameters
    from arnas_ray.search import SearchConfig
    from arnas_ray.search.loop import build_search
    from arnas_ray.space import reused_reps

    shape = SHAPES[a.shape]
    cfg = SearchConfig(channels=shape["C"], cells=shape["layers"], batch_size=shape["batch"])
    model = build_search(cfg, 10, 3, "cpu").model.train()
    x = torch.rand(shape["batch"], 3, shape["size"], shape["size"], generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    with frozen_parameters(list(model.parameters())), reused_reps():
        for g in a.groups:
            for i, (cell, s0, s1, weights) in enumerate(cell_inputs(model, x, g)):
                call = pgd_call(cell, s0, s1, weights, g)
                ms: dict[str, list[float]] = {path: [] for path in PATHS}
                for _ in range(a.repeats):
                    for path in PATHS:
                        ms[path].append(time_cell(call, path, a.calls))
                med = {path: statistics.median(v) for path, v in ms.items()}
                emit({"bench": "cells", "shape": a.shape, "cell": i, "reduction": cell.reduction, "groups": g,
                      "threads": a.threads, "state_elements": s1.shape[0] * s1.shape[2] * s1.shape[3] * g * cell.fusion.C,
                      "chosen": "fused" if cell.fusion.pays(s1, g) else "per_edge",
                      "fused_ms": round(med["fused"], 2), "per_edge_ms": round(med["per_edge"], 2),
                      "faster": min(PATHS, key=med.__getitem__)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
