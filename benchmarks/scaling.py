"""How the cost of one search step grows with width C, cells L, image size and AMP.

    python -m benchmarks.scaling [--device cpu|cuda] [--order first] [--quick]

One JSON line per point: sec/step and images/s of one full MGDA search step (both PGD-7
attacks, architecture step, weight step) and achieved GFLOP/s (supernet MACs x 2 x forward-
equivalent passes / time) as a fraction of this machine's measured fp32 matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from arnas_ray.search import SearchConfig
from arnas_ray.search.loop import build_search, search_step
from arnas_ray.space import count_macs
from benchmarks._common import emit, matmul_gflops

# forward-equivalent passes of one step (a backward ~ 2 forwards): PGD 2x7 (fwd + input bwd),
# architecture (first: 2 passes; second: 1 unrolled + 2 val + 4 HVP), weight step 1.
PASSES = {"first": 14 + 2 + 1, "second": 14 + 7 + 1}


def time_step(C: int, cells: int, size: int, batch: int, order: str, device: torch.device, amp: str,
              steps: int) -> dict:
    cfg = SearchConfig(channels=C, cells=cells, batch_size=batch, order=order, amp=amp)
    parts = build_search(cfg, 10, 3, device)
    parts.model.train()
    g = torch.Generator().manual_seed(0)
    x_tr, x_val = (torch.rand(batch, 3, size, size, generator=g).to(device) for _ in range(2))
    y_tr, y_val = (torch.randint(0, 10, (batch,), generator=g).to(device) for _ in range(2))
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        search_step(parts, x_tr, y_tr, x_val, y_val, eta=cfg.lr, strategy="mgda", generator=gen)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t) / steps
    macs = count_macs(parts.model, size, 3, device=device)  # per image, one forward
    gflops = 2 * macs * batch * 3 * PASSES[order] / dt / 1e9  # x3: forward + backward ~ 3 forwards
    return {"sec_per_step": round(dt, 4), "images_per_s": round(batch / dt, 2), "macs_per_image": macs,
            "achieved_gflops": round(gflops, 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--order", default="second", choices=("first", "second"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--amp", nargs="+", default=None, choices=("off", "bf16"),
                   help="precisions to time (default: off, plus bf16 on CUDA)")
    a = p.parse_args()
    device = torch.device(a.device)
    peak = matmul_gflops(a.device, n=2048 if device.type == "cuda" else 1024)
    base = {"C": 8, "cells": 5, "size": 32, "batch": 16}
    points = [("C", [4, 8, 16]), ("cells", [5, 8, 11]), ("size", [8, 16, 32])]
    if a.quick:
        points = [("C", [4, 8])]
    amps = a.amp or (["off", "bf16"] if device.type == "cuda" else ["off"])
    for amp in amps:
        for name, values in points:
            for v in values:
                shape = {**base, name: v}
                r = time_step(shape["C"], shape["cells"], shape["size"], shape["batch"], a.order, device, amp,
                              a.steps)
                emit({"bench": "scaling", "vary": name, **shape, "order": a.order, "amp": amp,
                      "device": a.device, **r, "matmul_gflops": round(peak, 1),
                      "fraction_of_matmul": round(r["achieved_gflops"] / peak, 4)})


if __name__ == "__main__":
    main()
