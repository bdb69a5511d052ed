"""Count the aten operator calls of one ARNAS search step (the per-operation overhead).

At the search's widths the step is dominated by per-operation overhead, not arithmetic
(``benchmarks/RESULTS.md``), so the number of operator calls is the figure to drive down.
Counted with ``torch.profiler`` (CPU activity), every event whose name starts with ``aten::``
(nested calls included: ``aten::conv2d`` and the ``aten::convolution`` it calls are two), over
one full search step after one warm-up step, with one thread. Convolution calls are the events
whose name contains ``conv`` (forward and backward). Seconds per step are timed without the
profiler (mean of ``--steps`` steps after the warm-up and the profiled step).

Shapes (issue 16):

* ``quickstart``: C=8, 5 cells, 8x8, batch 32, first order, PGD-3 (the quickstart's search);
* ``small``: C=8, 5 cells, 32x32, batch 16, second order, PGD-7 (the search-step benchmark).

Usage::

    python -m benchmarks.op_count [--shape quickstart small] [--steps 2] [--threads 1]
        [--batch N] [--size S] [--channels C] [--cells L] [--pgd-steps K] [--impl fused plain | --plain]

Prints one JSON line per shape: ``aten_calls``, ``conv_calls``, ``sec_per_step``, and the top
operators by count.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "quickstart": dict(C=8, cells=5, size=8, batch=32, order="first", pgd_steps=3),
    "small": dict(C=8, cells=5, size=32, batch=16, order="second", pgd_steps=7),
}


def _parts(shape: dict[str, Any], fused: bool):
    from arnas_ray.attacks import AttackSpec
    from arnas_ray.search import SearchConfig
    from arnas_ray.search.loop import build_search

    cfg = SearchConfig(channels=shape["C"], cells=shape["cells"], batch_size=shape["batch"], order=shape["order"],
                       strategy="mgda", attack=AttackSpec(kind="pgd", steps=shape["pgd_steps"]), fused=fused)
    parts = build_search(cfg, 10, 3, "cpu")
    parts.model.train()
    return cfg, parts


def count_step(shape: dict[str, Any], *, steps: int = 2, fused: bool = True) -> dict[str, Any]:
    """aten and convolution calls of one profiled search step, and seconds per (unprofiled) step."""
    from arnas_ray.search.loop import search_step

    cfg, parts = _parts(shape, fused)
    g = torch.Generator().manual_seed(0)
    n, s = shape["batch"], shape["size"]
    x_tr, x_val = (torch.rand(n, 3, s, s, generator=g) for _ in range(2))
    y_tr, y_val = (torch.randint(0, 10, (n,), generator=g) for _ in range(2))
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        out = search_step(parts, x_tr, y_tr, x_val, y_val, eta=cfg.lr, strategy="mgda", generator=gen)
        if not bool(out.finite):
            raise FloatingPointError("non-finite search step in the benchmark")

    step()  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    names = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t) / max(steps, 1)
    averages = prof.key_averages()  # parsing the profile costs seconds: once
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    by_time = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"aten_calls": sum(names.values()), "conv_calls": sum(c for k, c in names.items() if "conv" in k),
            "sec_per_step": round(dt, 4), "top_ops": dict(names.most_common(12)),
            # where the profiled step's time goes: the operators with the most self CPU time
            "top_self_cpu": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls": e.count}
                             for e in by_time[:10]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=["quickstart", "small"])
    p.add_argument("--steps", type=int, default=2, help="timed steps (after the warm-up and profiled step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=None, help="override the batch size (smoke runs)")
    p.add_argument("--size", type=int, default=None, help="override the image size (smoke runs)")
    p.add_argument("--channels", type=int, default=None, help="override the width C (smoke runs)")
    p.add_argument("--cells", type=int, default=None, help="override the number of cells (smoke runs)")
    p.add_argument("--pgd-steps", type=int, default=None, help="override the PGD steps (smoke runs)")
    p.add_argument("--impl", nargs="+", choices=("fused", "plain"), default=["fused"],
                   help="fused: cross-edge fused cells (default); plain: the per-edge MixedOp supernet")
    p.add_argument("--plain", action="store_true", help="the same as --impl plain")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for name in a.shape:
        shape = {**SHAPES[name]}
        for key, value in (("batch", a.batch), ("size", a.size), ("C", a.channels), ("cells", a.cells),
                           ("pgd_steps", a.pgd_steps)):
            if value is not None:
                shape[key] = value
        for impl in ["plain"] if a.plain else a.impl:
            r = count_step(shape, steps=a.steps, fused=impl == "fused")
            emit({"bench": "op_count", "shape": name, **shape, "threads": a.threads, "fused": impl == "fused", **r})
    return 0


if __name__ == "__main__":
    sys.exit(main())
